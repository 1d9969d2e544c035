// Package control is the control process: it serves smtpctl on the
// control socket and keeps the counters every process sends it.
package control

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"smtpd/internal/privsep"
	"smtpd/internal/stats"
	"smtpd/proto"
)

// Server answers control clients. Its counters come from the other
// processes through HandlePeer.
type Server struct {
	// Stats holds every counter of the daemon.
	Stats *stats.Store
	// Started is when the daemon started, for uptime.
	Started time.Time
	logf    func(format string, args ...any)
	// mta answers questions about relays, hosts and routes.
	mta    *proto.Channel
	queue  *proto.Channel
	lookup *proto.Channel
	smtp   *proto.Channel
	mfa    *proto.Channel
	reqs   *proto.Requests
	// child is the process's runtime: its log settings and its peers,
	// to which `smtpctl log` and `trace` go
	child *privsep.Child
	// smtpPaused is what `show status` says of smtp, overload what
	// the queue last said of overload mode
	smtpPaused atomic.Bool
	overload   atomic.Pointer[proto.QueueOverload]
}

// Run runs the control process on c.
func Run(c *privsep.Child) {
	if c.ControlSocket == nil {
		c.Log.Fatalf("no control socket from the parent")
	}
	ln, err := net.FileListener(c.ControlSocket)
	c.ControlSocket.Close()
	if err != nil {
		c.Log.Fatalf("control socket: %v", err)
	}
	ul, ok := ln.(*net.UnixListener)
	if !ok {
		c.Log.Fatalf("control socket is not a unix socket")
	}
	s := &Server{Stats: stats.NewStore(), Started: time.Now(), logf: c.Log.Debugf, mta: c.Peers[proto.ProcMTA], queue: c.Peers[proto.ProcQueue], lookup: c.Peers[proto.ProcLookup], smtp: c.Peers[proto.ProcSMTP], mfa: c.Peers[proto.ProcMFA], reqs: c.Requests, child: c}
	if err := c.Ready(); err != nil {
		c.Log.Fatalf("%v", err)
	}
	go func() {
		if err := s.Serve(ul); err != nil {
			c.Log.Fatalf("control socket: %v", err)
		}
	}()
	for _, l := range c.Listeners {
		ln, err := net.FileListener(l.File)
		l.File.Close()
		if err != nil {
			c.Log.Fatalf("metrics: %v", err)
		}
		go func() {
			if err := s.ServeMetrics(ln); err != nil {
				c.Log.Fatalf("metrics: %v", err)
			}
		}()
	}
	c.Serve(s.HandlePeer)
}

// HandlePeer handles a message from another process of the daemon.
func (s *Server) HandlePeer(ch *proto.Channel, env *proto.Frame) error {
	switch m := env.Msg.(type) {
	case *proto.StatUpdate:
		s.Stats.Apply(m.Changes)
		return nil
	case *proto.QueueOverload:
		s.overload.Store(m)
		return nil
	case *proto.MTAObjects, *proto.QueueLines, *proto.LookupTableLines, *proto.SMTPSessionFile, *proto.ControlError, *proto.QueueMessageFile, *proto.MFAFilterLines:
		if !s.reqs.Deliver(env) {
			return fmt.Errorf("answer to request %d that nobody asked", env.PeerID)
		}
		return nil
	}
	return fmt.Errorf("unexpected %s", env.Type)
}

// Serve accepts control clients on l until l is closed.
func (s *Server) Serve(l *net.UnixListener) error {
	var backoff time.Duration
	for {
		conn, err := l.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		go s.session(conn)
	}
}

// isTemporary reports accept errors worth retrying, such as running out
// of descriptors for a moment.
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// session serves one client. A client that breaks the protocol loses its
// connection; unlike a broken internal channel it does not stop the
// daemon, since any local user may connect.
func (s *Server) session(conn *net.UnixConn) {
	defer conn.Close()
	s.Stats.Apply([]proto.StatChange{{Key: "control.session", Op: proto.StatIncrement, Value: 1}})
	peer := peerOf(conn)
	ch := proto.NewChannelConn(conn, proto.ProcControl, proto.ProcClient)
	for {
		env, err := ch.Recv()
		if err != nil {
			if err != io.EOF {
				s.logf("client dropped: %v", err)
			}
			return
		}
		if err := s.request(ch, env, peer); err != nil {
			s.logf("client dropped: %v", err)
			return
		}
	}
}

func (s *Server) request(ch *proto.Channel, env *proto.Frame, peer peer) error {
	switch env.Msg.(type) {
	case *proto.ControlQueue, *proto.ControlUpdateTable, *proto.ControlPauseSMTP, *proto.ControlLog, *proto.ControlShowTable:
		// the queue shows who writes to whom, and these change state:
		// root only; any user may read the stats and submit mail
		if !peer.known || peer.uid != 0 {
			return ch.Send(&proto.ControlError{Text: "permission denied"}, env.PeerID)
		}
	case *proto.ControlEnqueue:
		if !peer.known {
			return ch.Send(&proto.ControlError{Text: "permission denied: unknown user"}, env.PeerID)
		}
	case *proto.ControlShowMTA:
		// sending the TLS reports changes state: root only
		if strings.HasPrefix(env.Msg.(*proto.ControlShowMTA).What, "send-") && (!peer.known || peer.uid != 0) {
			return ch.Send(&proto.ControlError{Text: "permission denied"}, env.PeerID)
		}
	}
	switch m := env.Msg.(type) {
	case *proto.ControlEnqueue:
		return s.enqueue(ch, m, peer.uid, env.PeerID)
	case *proto.ControlShowStats:
		values := s.values()
		for len(values) > 0 {
			n := min(len(values), statsPerFrame)
			if err := ch.Send(&proto.ControlStats{Values: values[:n], Last: n == len(values)}, env.PeerID); err != nil {
				return err
			}
			values = values[n:]
		}
		return nil
	case *proto.ControlShowMTA:
		return s.forward(ch, s.mta, &proto.ControlMTAQuery{What: env.Msg.(*proto.ControlShowMTA).What}, env.PeerID)
	case *proto.ControlShowFilters:
		if s.mfa == nil {
			// a configuration without filters runs no mfa
			return ch.Send(&proto.ControlText{TextLines: proto.TextLines{Last: true}}, env.PeerID)
		}
		return s.forward(ch, s.mfa, &proto.ControlFiltersQuery{}, env.PeerID)
	case *proto.ControlPauseSMTP:
		paused := env.Msg.(*proto.ControlPauseSMTP).Paused
		if err := s.smtp.Send(&proto.ControlSMTPPause{Paused: paused}, 0); err != nil {
			return err
		}
		s.smtpPaused.Store(paused)
		word := "resumed"
		if paused {
			word = "paused"
		}
		return ch.Send(&proto.ControlText{TextLines: proto.TextLines{Lines: []string{"smtp " + word}, Last: true}}, env.PeerID)
	case *proto.ControlUpdateTable:
		return s.forward(ch, s.lookup, &proto.ControlTableReload{Name: env.Msg.(*proto.ControlUpdateTable).Name}, env.PeerID)
	case *proto.ControlShowTable:
		// a table's contents (passwords among them) for root only
		return s.forward(ch, s.lookup, &proto.ControlTableLookup{ControlShowTable: *m}, env.PeerID)
	case *proto.ControlQueue:
		op := env.Msg.(*proto.ControlQueue).QueueOp
		if op.Op == "status" {
			state := "running"
			if s.smtpPaused.Load() {
				state = "paused"
			}
			lines := []string{"SMTP " + state}
			if o := s.overload.Load(); o != nil && o.On {
				lines = append(lines, "Overload on: "+o.Reason)
			} else if s.child.Config.Overload.Enabled() {
				lines = append(lines, "Overload off")
			}
			if err := ch.Send(&proto.ControlText{TextLines: proto.TextLines{Lines: lines}}, env.PeerID); err != nil {
				return err
			}
		}
		return s.forward(ch, s.queue, &proto.ControlQueueForward{QueueOp: op}, env.PeerID)
	case *proto.ControlLog:
		return s.setLog(ch, env.Msg.(*proto.ControlLog).LogSetting, env.PeerID)
	}
	return ch.Send(&proto.ControlError{Text: "unsupported request " + env.Type.String()}, env.PeerID)
}

// answerTimeout bounds the wait for another process's answer to a
// client's request.
const answerTimeout = 10 * time.Second

// forward passes a request on to another process and its lines of
// text back to the client.
func (s *Server) forward(ch *proto.Channel, to *proto.Channel, req proto.Message, id uint32) error {
	if to == nil {
		return ch.Send(&proto.ControlError{Text: "no such process"}, id)
	}
	err := s.reqs.Stream(to, req, answerTimeout, func(env *proto.Frame) error {
		var t proto.TextLines
		switch m := env.Msg.(type) {
		case *proto.MTAObjects:
			t = m.TextLines
		case *proto.QueueLines:
			t = m.TextLines
		case *proto.LookupTableLines:
			t = m.TextLines
		case *proto.MFAFilterLines:
			t = m.TextLines
		case *proto.QueueMessageFile:
			defer m.File().Close()
			return ch.Send(proto.NewControlFile(m.File()), id)
		}
		return ch.Send(&proto.ControlText{TextLines: t}, id)
	})
	if errors.Is(err, proto.ErrNoAnswer) {
		return ch.Send(&proto.ControlError{Text: to.Remote.String() + " did not answer"}, id)
	}
	return err
}

// setLog applies a log setting here and in every other child.
func (s *Server) setLog(ch *proto.Channel, l proto.LogSetting, id uint32) error {
	if !s.child.SetLog(l) {
		return ch.Send(&proto.ControlError{Text: "unknown subsystem " + l.What}, id)
	}
	for _, peer := range s.child.Peers {
		if err := peer.Send(&proto.ControlLogLevel{LogSetting: l}, 0); err != nil {
			return err
		}
	}
	word := map[bool]string{true: "on", false: "off"}[l.On]
	return ch.Send(&proto.ControlText{TextLines: proto.TextLines{Lines: []string{l.What + " " + word}, Last: true}}, id)
}

// peer is who a control client is, from the socket's peer credentials
// (SO_PEERCRED); known is false if the kernel would not tell.
type peer struct {
	uid   uint32
	known bool
}

func peerOf(conn *net.UnixConn) peer {
	raw, err := conn.SyscallConn()
	if err != nil {
		return peer{}
	}
	var cred *unix.Ucred
	raw.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err != nil || cred == nil {
		return peer{}
	}
	return peer{uid: cred.Uid, known: true}
}

// enqueue gets the client an SMTP session from smtp: any local user may
// submit mail, as the user the socket says it is.
func (s *Server) enqueue(ch *proto.Channel, m *proto.ControlEnqueue, uid uint32, id uint32) error {
	frames, err := s.reqs.Ask(s.smtp, &proto.ControlSMTPSession{UID: uid, User: m.User}, answerTimeout)
	if errors.Is(err, proto.ErrNoAnswer) {
		return ch.Send(&proto.ControlError{Text: "smtp did not answer"}, id)
	}
	if err != nil {
		return err
	}
	switch a := frames[0].Msg.(type) {
	case *proto.SMTPSessionFile:
		defer a.File().Close()
		s.Stats.Apply([]proto.StatChange{{Key: "control.enqueue", Op: proto.StatIncrement, Value: 1}})
		return ch.Send(proto.NewControlFile(a.File()), id)
	case *proto.ControlError:
		return ch.Send(a, id)
	}
	return ch.Send(&proto.ControlError{Text: "smtp answered " + frames[0].Type.String()}, id)
}

// statsPerFrame keeps a ControlStats frame well inside proto.MaxPayload
// with keys of up to 100 bytes.
const statsPerFrame = 100
