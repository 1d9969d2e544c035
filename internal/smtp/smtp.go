// Package smtp is the smtp process: it serves SMTP sessions on the
// listeners the parent bound, asks mfa whether each step may proceed,
// lookup what each recipient expands to, and queue to keep each message,
// and answers 250 only once queue says the message is durable.
package smtp

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"smtpd/internal/config"
	"smtpd/internal/logging"
	"smtpd/internal/privsep"
	"smtpd/internal/smtp/proxyproto"
	"smtpd/internal/smtp/server"
	"smtpd/internal/stats"
	"smtpd/internal/throttle"
	"smtpd/proto"
)

// throttleKeys bounds the client addresses and users whose rates are
// remembered, the least recently seen forgotten first.
const throttleKeys = 100000

// Server is the smtp process.
type Server struct {
	cfg   *config.Config
	child *privsep.Child
	log   *logging.Logger
	stats *stats.Sender
	tls   map[string]*tls.Config // by listener name
	// certs are the certificates of the TLS listeners, by name: a
	// reload swaps them for the handshakes that follow
	certs map[string]*atomic.Pointer[tls.Certificate]
	// servers are the engines of the listeners and of local sessions,
	// which a stop drains
	serversMu sync.Mutex
	servers   []*server.Server
	// draining is set once the daemon stops: the engines' 421s then
	// end sessions rather than refuse their last command
	draining atomic.Bool

	mfa, lookup, queue *proto.Channel

	active *connLimiter
	// listenerFilters are the listeners' filter chains as smtp sees
	// them, by listener number; filtered maps the engine's connections
	// of sessions whose chain needs their events to their sessions
	listenerFilters []listenerFilters
	filtered        sync.Map
	// paused refuses new sessions (smtpctl pause smtp); overload
	// refuses new mail from unauthenticated clients (the queue's word)
	paused   atomic.Bool
	overload atomic.Bool
	// connectRate, messageRate and userRate bound the rates of one
	// client address and of one authenticated user (config throttle)
	connectRate, messageRate, userRate *throttle.Keyed
	nextID                             func() uint64
	// authFailures slows down password guessing
	authFailures *authFailures
	// local takes the sessions of local programs
	local *localListener
	// events is what the event lines of each session remember, by
	// connection (eventlog.go), the client's last line among it
	events sync.Map
}

// New prepares the smtp process: it loads the listeners' certificates,
// which must happen before the process drops its privileges.
func New(c *privsep.Child) (*Server, error) {
	s := &Server{cfg: c.Config, child: c, log: c.Log, tls: map[string]*tls.Config{}, certs: map[string]*atomic.Pointer[tls.Certificate]{}, authFailures: newAuthFailures(c.Config.Limits.AuthFailuresPerIP), local: newLocalListener()}
	for _, l := range c.Config.Listeners {
		s.listenerFilters = append(s.listenerFilters, newListenerFilters(l))
	}
	t := c.Config.Throttle
	s.connectRate = throttle.NewKeyed(t.ConnectRate, throttleKeys)
	s.messageRate = throttle.NewKeyed(t.MessageRate, throttleKeys)
	s.userRate = throttle.NewKeyed(t.UserMessageRate, throttleKeys)
	for _, l := range c.Config.Listeners {
		if l.TLS == config.TLSNone {
			continue
		}
		cert, err := tls.LoadX509KeyPair(l.Cert, l.Key)
		if err != nil {
			return nil, fmt.Errorf("listener %s: %w", l.Name, err)
		}
		current := &atomic.Pointer[tls.Certificate]{}
		current.Store(&cert)
		s.certs[l.Name] = current
		s.tls[l.Name] = &tls.Config{
			// read at each handshake, so that a reload (SIGHUP) serves
			// the new certificate to new sessions only
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return current.Load(), nil },
			MinVersion:     tls.VersionTLS12,
			// some large providers fail to resume sessions with Go's
			// tickets; full handshakes always work
			SessionTicketsDisabled: true,
		}
	}
	var counter uint64
	var mu sync.Mutex
	seed := uint64(time.Now().UnixNano()) << 16
	s.nextID = func() uint64 {
		mu.Lock()
		defer mu.Unlock()
		counter++
		return seed | counter
	}
	return s, nil
}

// Run serves until the process is told to stop.
func (s *Server) Run() {
	c := s.child
	s.stats = c.Stats
	s.mfa, s.lookup, s.queue = c.Peers[proto.ProcMFA], c.Peers[proto.ProcLookup], c.Peers[proto.ProcQueue]
	// without filters, checks or signing there is no mfa (see
	// config.NeedsMFA), and nothing asks for it
	if (s.mfa == nil && s.cfg.NeedsMFA()) || s.lookup == nil || s.queue == nil {
		c.Log.Fatalf("missing peer channels")
	}
	s.active = newConnLimiter(sessionCap(s.cfg.Limits.Sessions), s.cfg.Limits.SessionsPerIP)
	byName := map[string]*config.Listener{}
	for _, l := range s.cfg.Listeners {
		byName[l.Name] = l
	}
	for _, l := range c.Listeners {
		lc := byName[l.Name]
		if lc == nil {
			c.Log.Fatalf("listener %q is not in the configuration", l.Name)
		}
		ln, err := net.FileListener(l.File)
		l.File.Close()
		if err != nil {
			c.Log.Fatalf("listener %s: %v", l.Name, err)
		}
		// the engines exist before smtp says it is ready, so that a
		// drain finds them all
		go s.serve(lc, s.track(s.newServer(lc)), ln)
	}
	go s.serveLocal(s.track(s.newServer(localListenerConfig(s.cfg))))
	if err := c.Ready(); err != nil {
		c.Log.Fatalf("%v", err)
	}
	c.Serve(func(ch *proto.Channel, env *proto.Frame) error {
		switch m := env.Msg.(type) {
		case *proto.QueueOverload:
			s.overload.Store(m.On)
			return nil
		case *proto.ControlSMTPPause:
			s.paused.Store(m.Paused)
			s.log.Infof("sessions %s", map[bool]string{true: "paused", false: "resumed"}[m.Paused])
			return nil
		case *proto.ControlSMTPSession:
			f, err := s.newLocalSession(m)
			if err != nil {
				// control tells the client; the daemon goes on
				s.log.Warnf("%v", err)
				return c.Send(ch, &proto.ControlError{Text: err.Error()}, env.PeerID)
			}
			defer f.Close()
			return c.Send(ch, proto.NewSMTPSessionFile(f), env.PeerID)
		case *proto.ParentListenerCertificate:
			s.reloadCertificate(m)
			return nil
		case *proto.ParentDrain:
			// sessions finishing their messages need this loop for
			// queue's answers: the drain runs beside it
			go s.drain(m.Timeout)
			return nil
		}
		if ch.Remote == proto.ProcControl || ch.Remote == proto.ProcParent {
			return fmt.Errorf("unexpected %s", env.Type)
		}
		if !c.Requests.Deliver(env) {
			return fmt.Errorf("answer %s to request %d that nobody asked", env.Type, env.PeerID)
		}
		return nil
	})
}

// sessionCap is the number of concurrent sessions: the configured one,
// or one derived from the descriptor limit as OpenSMTPD does, leaving
// room for the body file of each session and some spare.
func sessionCap(configured int) int {
	if configured > 0 {
		return configured
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<20 {
		return 1000
	}
	return max(int(rl.Cur)/2-20, 10)
}

// serveLocal serves the sessions of local programs; they bypass the
// session limits, which protect the daemon from the network, but not
// the command timeouts.
func (s *Server) serveLocal(srv *server.Server) {
	if err := srv.Serve(s.local); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, server.ErrServerClosed) {
		s.log.Fatalf("local sessions: %v", err)
	}
}

// newServer is the SMTP engine of a listener, with this process's
// sessions as its policy.
func (s *Server) newServer(lc *config.Listener) *server.Server {
	srv := &server.Server{
		Hostname:        lc.Hostname,
		LMTP:            lc.Protocol == "lmtp",
		MaxMessageBytes: s.cfg.Limits.MessageSize,
		MaxRecipients:   s.cfg.Limits.Recipients,
		MaxLineLength:   s.cfg.Limits.LineLength,
		CommandTimeout:  s.cfg.Limits.CommandTimeout,
		SessionTimeout:  s.cfg.Limits.SessionTimeout,
		NewSession:      func(c *server.Conn) server.Session { return s.newSession(lc, c) },
		Report:          s.report,
		// RFC 1985: offered where a table says who may use it
		EnableETRN: lc.ETRN != nil,
	}
	if lc.TLS != config.TLSNone {
		srv.TLSConfig = s.tls[lc.Name]
		srv.ImplicitTLS = lc.TLS == config.TLSImplicit
		// offered under TLS only; the mta keeps the promise (RFC 8689)
		srv.EnableRequireTLS = true
	}
	if lc.Auth != config.AuthNone {
		srv.AuthMechanisms = []string{"PLAIN", "LOGIN"}
	}
	return srv
}

func (s *Server) serve(lc *config.Listener, srv *server.Server, ln net.Listener) {
	if len(lc.ProxyTrusted) > 0 {
		// the client's address is the balancer's word: before the
		// limits, which count per client address
		ln = &proxyproto.Listener{Listener: ln, Trusted: lc.ProxyTrusted, Rejected: func(peer net.Addr, err error) {
			s.stats.Increment("smtp.proxy.refused", 1)
			s.log.Infof("listener %s: connection from %s refused: %v", lc.Name, peer, err)
		}}
	}
	ln = &limitListener{Listener: ln, s: s}
	// a drain closes the listener: then Serve returns ErrServerClosed
	if err := srv.Serve(ln); err != nil && !errors.Is(err, server.ErrServerClosed) {
		s.log.Fatalf("listener %s: %v", lc.Name, err)
	}
}

// report writes the event lines of the session (eventlog.go), logs
// every refusal once, with the session and the command it answers
// (credentials masked by the engine), and every line of every session
// while the smtp subsystem is traced (smtpctl trace smtp).
func (s *Server) report(e server.Event) {
	st := s.logEvent(e)
	if sess, ok := s.filtered.Load(e.Conn); ok {
		s.filterEvent(sess.(*session), e)
	}
	switch e.Kind {
	case server.EventProtocolClient:
		// noted by logEvent; traced below
	case server.EventProtocolServer:
		if isFailure(e.Line) {
			if s.stopReply(e.Line) {
				s.log.Infof("%016x: session ended by the stop: %s", e.Conn.ID(), e.Line)
				break
			}
			var line string
			if st != nil {
				line = st.line
			}
			s.log.Infof("%016x: %q refused: %s", e.Conn.ID(), line, e.Line)
		}
	default:
		return
	}
	if s.log.Tracing("smtp") {
		s.log.Tracef("smtp", "%q", e.Line+"\r\n")
	}
}

// peerTimeout bounds the wait for an answer from another process: a
// client waits for its reply at most as long as RFC 5321 4.5.3.2 lets
// it wait for any.
const peerTimeout = 5 * time.Minute

// ask sends a request to a peer and waits for its answer.
func (s *Server) ask(ch *proto.Channel, m proto.Message) (*proto.Frame, error) {
	frames, err := s.child.Requests.Ask(ch, m, peerTimeout)
	if err != nil {
		return nil, err
	}
	return frames[0], nil
}

// connLimiter counts sessions, in all and per client address.
type connLimiter struct {
	mu           sync.Mutex
	total, limit int
	perIP        map[string]int
	ipLimit      int
}

func newConnLimiter(limit, ipLimit int) *connLimiter {
	return &connLimiter{limit: limit, ipLimit: ipLimit, perIP: map[string]int{}}
}

func (l *connLimiter) acquire(ip string) (ok bool, why string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= l.limit {
		return false, "Too many sessions, try again later"
	}
	if l.perIP[ip] >= l.ipLimit {
		return false, "Too many sessions from your address, try again later"
	}
	l.total++
	l.perIP[ip]++
	return true, ""
}

func (l *connLimiter) release(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.perIP[ip]--; l.perIP[ip] <= 0 {
		delete(l.perIP, ip)
	}
}

// pausedReply greets sessions while smtp is paused (smtpctl pause smtp).
const pausedReply = "421 4.3.2 Service paused, try again later\r\n"

// limitListener refuses sessions over the limits, and all while smtp
// is paused, with a 421 before the engine sees them.
type limitListener struct {
	net.Listener
	s *Server
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return nil, err
		}
		ip := remoteIP(c)
		if l.s.paused.Load() {
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, pausedReply)
			c.Close()
			continue
		}
		if ok, why := l.s.active.acquire(ip); !ok {
			l.s.stats.Increment("smtp.session.refused", 1)
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, "421 4.7.0 "+why+"\r\n")
			c.Close()
			continue
		}
		return &limitedConn{Conn: c, ip: ip, release: l.s.active.release}, nil
	}
}

// limitedConn gives its place back to the session limits when it
// closes; the engine bounds the session's life.
type limitedConn struct {
	net.Conn
	ip      string
	once    sync.Once
	release func(string)
}

func (c *limitedConn) Close() error {
	c.once.Do(func() { c.release(c.ip) })
	return c.Conn.Close()
}

func remoteIP(c net.Conn) string {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	return ""
}
