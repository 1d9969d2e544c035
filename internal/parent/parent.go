// Package parent is the privileged process of the daemon: it owns the
// configuration and the listening sockets, starts the children by fork
// and exec of its own binary (`smtpd -x NAME`), wires their channels, and
// shares their fate: when one child goes, all go.
package parent

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"sync/atomic"
	"syscall"
	"time"

	"smtpd/internal/config"
	"smtpd/internal/logging"
	"smtpd/internal/monkey"
	"smtpd/internal/privsep"
	"smtpd/internal/queue"
	"smtpd/internal/stats"
	"smtpd/proto"
)

// Options are the parent's settings from the command line.
type Options struct {
	// Executable is the binary to run as the children; argv0 is what they
	// show in ps.
	Executable, Argv0 string
	Foreground        bool
	Verbose           bool
	// SetupTimeout bounds the start of all children.
	SetupTimeout time.Duration
	// StopTimeout is how long children get to exit before SIGKILL.
	StopTimeout time.Duration
	// Started, if set, is told once whether the daemon started: nil
	// when it serves, else why not (the detaching start reports it on
	// the terminal).
	Started func(error)
}

type child struct {
	proc   proto.Proc
	cmd    *exec.Cmd
	ch     *proto.Channel
	exited chan struct{}
}

// Parent is the running parent process.
type Parent struct {
	// requests are the parent's questions to lookup
	requests *proto.Requests
	stats    *stats.Sender
	mdas     *mdaPool
	accounts accountCache
	filters  *filterProcs
	fatal    chan error
	cfg      *config.Config
	opts     Options
	log      *logging.Logger
	children map[proto.Proc]*child
	events   chan event
	socket   string
	// source is the configuration file the daemon started with, to
	// name what a reload does not apply
	source []byte
	// mdaStarts counts the delivery agents started, so that each draws
	// its own fault injections (monkey runs)
	mdaStarts atomic.Uint64
}

type event struct {
	proc proto.Proc
	env  *proto.Frame
	err  error
	exit bool
}

// Run starts the daemon under cfg and returns its exit status: 0 after
// SIGTERM or SIGINT, 1 when a child was lost or setup failed.
func Run(cfg *config.Config, opts Options, log *logging.Logger) int {
	p := &Parent{
		cfg: cfg, opts: opts, log: log,
		requests: proto.NewRequests(nil),
		mdas:     newMDAPool(),
		children: map[proto.Proc]*child{},
		events:   make(chan event, 16),
		fatal:    make(chan error, 1),
	}
	// read as soon as possible after the load: a reload compares with it
	p.source, _ = os.ReadFile(cfg.Path)
	// room for a few: a signal that finds the channel full is dropped,
	// and a SIGTERM must not be lost behind SIGHUPs during a reload
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	signal.Ignore(syscall.SIGPIPE)
	p.filters = newFilterProcs(p)
	started := func(err error) {
		if opts.Started != nil {
			opts.Started(err)
		}
	}
	if err := p.start(); err != nil {
		log.Warnf("%v", err)
		p.stop()
		started(err)
		return 1
	}
	p.filters.start()
	stopStats := make(chan struct{})
	defer close(stopStats)
	go p.stats.Run(stopStats)
	log.Infof("ready: %d children, %d listeners, control socket %s", len(p.children), len(cfg.Listeners), cfg.ControlSocket)
	debug.FreeOSMemory() // as each child does once ready (privsep.Child.Ready)
	started(nil)
	go p.injectOffline()
	// draining is set from the first SIGTERM or SIGINT while smtp
	// finishes its sessions, until its SMTPDrained or drainOver
	var draining bool
	var drainOver <-chan time.Time
	for {
		select {
		case sig := <-signals:
			switch {
			case sig == syscall.SIGHUP && draining:
				log.Infof("SIGHUP: ignored, the daemon is stopping")
				continue
			case sig == syscall.SIGHUP:
				if err := p.reload(); err != nil {
					log.Warnf("lost child: %v", err)
					p.stop()
					return 1
				}
				continue
			case draining:
				log.Infof("received %v again, stopping at once", sig)
				p.stop()
				return 0
			}
			log.Infof("received %v, stopping", sig)
			over, err := p.startDrain()
			if err != nil {
				log.Warnf("%v", err)
				p.stop()
				return 1
			}
			if over == nil {
				p.stop()
				return 0
			}
			draining, drainOver = true, over
		case <-drainOver:
			log.Warnf("smtp did not drain within %v, stopping", cfg.Limits.DrainTimeout+drainMargin)
			p.stop()
			return 0
		case err := <-p.fatal:
			log.Warnf("%v", err)
			p.stop()
			return 1
		case ev := <-p.events:
			if ev.env != nil {
				switch m := ev.env.Msg.(type) {
				case *proto.QueueDeliverLocal:
					go p.deliverLocal(m)
					continue
				case *proto.LookupForwardOpen:
					go p.openForward(m, ev.env.PeerID)
					continue
				case *proto.LookupAccountResult:
					if p.requests.Deliver(ev.env) {
						continue
					}
				case *proto.MFAFilterBroken:
					p.filters.broken(m)
					continue
				case *proto.LookupTablesReloaded:
					p.accounts.clear()
					continue
				case *proto.MFAMilterConnect:
					go p.connectMilter(m, ev.env.PeerID)
					continue
				case *proto.SMTPDrained:
					if draining {
						log.Infof("sessions drained (%d cut), stopping", m.Cut)
						p.stop()
						return 0
					}
				}
			}
			monkey.LostChild()
			switch {
			case ev.exit:
				log.Warnf("lost child: %s (%v)", ev.proc, p.children[ev.proc].cmd.ProcessState)
			case ev.err == io.EOF:
				log.Warnf("lost child: %s (channel closed)", ev.proc)
			case ev.err != nil:
				log.Warnf("lost child: %s: %v", ev.proc, ev.err)
			default:
				log.Warnf("lost child: %s: unexpected %s", ev.proc, ev.env.Type)
			}
			p.stop()
			return 1
		}
	}
}

func (p *Parent) start() error {
	if err := p.prepareDirs(); err != nil {
		return err
	}
	control, err := p.listenControl()
	if err != nil {
		return err
	}
	defer control.Close()
	listeners, err := p.listen()
	if err != nil {
		return err
	}
	defer func() {
		for _, l := range listeners {
			l.File.Close()
		}
	}()
	metrics, err := p.listenMetrics()
	if err != nil {
		return err
	}
	for _, proc := range proto.Children {
		if proc == proto.ProcMFA && !p.cfg.NeedsMFA() {
			continue
		}
		if err := p.startChild(proc); err != nil {
			return err
		}
	}
	p.stats = stats.NewSender(func(u *proto.StatUpdate) error {
		return p.children[proto.ProcControl].ch.Send(u, 0)
	})
	for _, pair := range proto.Peers {
		if p.children[pair[0]] == nil || p.children[pair[1]] == nil {
			continue
		}
		if err := p.connect(pair[0], pair[1]); err != nil {
			return err
		}
	}
	for _, l := range listeners {
		if err := p.children[proto.ProcSMTP].ch.Send(proto.NewSetupListener(l.Name, l.File), 0); err != nil {
			return fmt.Errorf("setup smtp: %w", err)
		}
	}
	if err := p.children[proto.ProcControl].ch.Send(proto.NewSetupControl(control), 0); err != nil {
		return fmt.Errorf("setup control: %w", err)
	}
	if metrics != nil {
		defer metrics.Close()
		if err := p.children[proto.ProcControl].ch.Send(proto.NewSetupListener("metrics", metrics), 0); err != nil {
			return fmt.Errorf("setup control: %w", err)
		}
	}
	for _, c := range p.children {
		if err := c.ch.Send(&proto.SetupDone{}, 0); err != nil {
			return fmt.Errorf("setup %s: %w", c.proc, err)
		}
	}
	return p.awaitReady()
}

// awaitReady waits for SetupReady from every child. Deliveries that
// queue asks for meanwhile (of mail recovered from the spool) start once
// all are ready.
func (p *Parent) awaitReady() error {
	ready := map[proto.Proc]bool{}
	var deferred []*proto.QueueDeliverLocal
	defer func() {
		for _, m := range deferred {
			go p.deliverLocal(m)
		}
	}()
	timeout := time.After(p.opts.SetupTimeout)
	for len(ready) < len(p.children) {
		select {
		case ev := <-p.events:
			if ev.exit || ev.err != nil {
				return fmt.Errorf("lost child: %s during setup", ev.proc)
			}
			if m, ok := ev.env.Msg.(*proto.QueueDeliverLocal); ok && ev.proc == proto.ProcQueue {
				deferred = append(deferred, m)
				continue
			}
			if m, ok := ev.env.Msg.(*proto.MFAMilterConnect); ok && ev.proc == proto.ProcMFA {
				// a session may begin before every child is ready
				go p.connectMilter(m, ev.env.PeerID)
				continue
			}
			if ready[ev.proc] {
				return fmt.Errorf("lost child: %s: unexpected %s", ev.proc, ev.env.Type)
			}
			ready[ev.proc] = true
		case <-timeout:
			for _, c := range p.children {
				if !ready[c.proc] {
					return fmt.Errorf("setup: %s did not get ready within %v", c.proc, p.opts.SetupTimeout)
				}
			}
		}
	}
	return nil
}

func (p *Parent) prepareDirs() error {
	cfg := p.cfg
	if !privsep.Privileged() {
		p.log.Infof("not started as root: children run as uid %d without chroot", os.Getuid())
		return queue.PrepareSpool(cfg.SpoolDir, -1, -1)
	}
	for _, name := range []string{cfg.User, cfg.QueueUser} {
		if _, err := privsep.DaemonUser(name); err != nil {
			return err
		}
	}
	q, _ := privsep.DaemonUser(cfg.QueueUser)
	if err := os.MkdirAll(cfg.EmptyDir, 0o755); err != nil {
		return fmt.Errorf("empty dir: %w", err)
	}
	if entries, err := os.ReadDir(cfg.EmptyDir); err != nil || len(entries) > 0 {
		return fmt.Errorf("empty dir %s must exist and be empty, as children chroot into it", cfg.EmptyDir)
	}
	return queue.PrepareSpool(cfg.SpoolDir, int(q.UID), int(q.GID))
}

// listenControl creates the control socket. A socket that answers means
// another daemon runs; one that does not is left over and replaced.
func (p *Parent) listenControl() (*os.File, error) {
	path := p.cfg.ControlSocket
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if c, err := net.Dial("unixpacket", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s answers: is smtpd already running?", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	l.SetUnlinkOnClose(false)
	p.socket = path
	defer l.Close()
	// every local user may connect; control checks peer credentials
	if err := os.Chmod(path, 0o666); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	f, err := l.File()
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return f, nil
}

// listen binds the configured listeners, all before any child starts, so
// that an address in use stops the start with a clear message.
func (p *Parent) listen() ([]privsep.Listener, error) {
	var out []privsep.Listener
	for _, l := range p.cfg.Listeners {
		ln, err := net.Listen("tcp", l.Address)
		if err != nil {
			for _, o := range out {
				o.File.Close()
			}
			return nil, fmt.Errorf("listen %q: %w", l.Name, err)
		}
		f, err := ln.(*net.TCPListener).File()
		ln.Close()
		if err != nil {
			return nil, fmt.Errorf("listen %q: %w", l.Name, err)
		}
		out = append(out, privsep.Listener{Name: l.Name, File: f})
	}
	return out, nil
}

// listenMetrics binds listen_metrics, if set, for control.
func (p *Parent) listenMetrics() (*os.File, error) {
	if p.cfg.ListenMetrics == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", p.cfg.ListenMetrics)
	if err != nil {
		return nil, fmt.Errorf("listen_metrics: %w", err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		return nil, fmt.Errorf("listen_metrics: %w", err)
	}
	return f, nil
}

func (p *Parent) startChild(proc proto.Proc) error {
	mine, theirs, err := proto.Socketpair()
	if err != nil {
		return err
	}
	defer theirs.Close()
	cmd := p.selfCommand(proc.String(), theirs)
	if err := cmd.Start(); err != nil {
		mine.Close()
		return fmt.Errorf("start %s: %w", proc, err)
	}
	ch, err := proto.NewChannel(mine, proto.ProcParent, proc)
	mine.Close()
	if err != nil {
		return err
	}
	c := &child{proc: proc, cmd: cmd, ch: ch, exited: make(chan struct{})}
	p.children[proc] = c
	go func() {
		cmd.Wait()
		close(c.exited)
		p.events <- event{proc: proc, exit: true}
	}()
	go func() {
		for {
			env, err := ch.Recv()
			p.events <- event{proc: proc, env: env, err: err}
			if err != nil {
				return
			}
		}
	}()
	p.log.Debugf("started %s as pid %d", proc, cmd.Process.Pid)
	return nil
}

// selfCommand is `smtpd -x name` with the daemon's flags, its channel to
// the parent on fd 3, in a process group of its own so that the
// terminal's ^C reaches the parent only, which stops the rest in order.
func (p *Parent) selfCommand(name string, channel *os.File) *exec.Cmd {
	args := []string{p.opts.Argv0, "-x", name, "-f", p.cfg.Path}
	if p.opts.Foreground {
		args = append(args, "-d")
	}
	if p.opts.Verbose {
		args = append(args, "-v")
	}
	return &exec.Cmd{
		Path:        p.opts.Executable,
		Args:        args,
		Stdout:      os.Stderr,
		Stderr:      os.Stderr,
		ExtraFiles:  []*os.File{channel}, // fd 3: privsep.ParentFD
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
}

// connect gives a and b a channel to each other.
func (p *Parent) connect(a, b proto.Proc) error {
	fa, fb, err := proto.Socketpair()
	if err != nil {
		return err
	}
	defer fa.Close()
	defer fb.Close()
	if err := p.children[a].ch.Send(proto.NewSetupPeer(b, fa), 0); err != nil {
		return fmt.Errorf("setup %s: %w", a, err)
	}
	if err := p.children[b].ch.Send(proto.NewSetupPeer(a, fb), 0); err != nil {
		return fmt.Errorf("setup %s: %w", b, err)
	}
	return nil
}

// stop sends SIGTERM to every child, waits for them, and kills those that
// do not exit in time.
func (p *Parent) stop() {
	p.filters.close()
	p.mdas.close()
	for _, c := range p.children {
		c.cmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.Now().Add(p.opts.StopTimeout)
	for _, c := range p.children {
		select {
		case <-c.exited:
		case <-time.After(time.Until(deadline)):
			p.log.Warnf("%s did not exit, killing it", c.proc)
			c.cmd.Process.Kill()
			<-c.exited
		}
	}
	if p.socket != "" {
		os.Remove(p.socket)
	}
}
