package privsep

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"syscall"
	"time"

	"smtpd/internal/config"
	"smtpd/internal/logging"
	"smtpd/internal/stats"
	"smtpd/proto"
)

// TuneRuntime sets the Go runtime for the role of process p; GOGC and
// GOMAXPROCS in the environment win.
//
// Threads: the daemon is a team of processes that share the machine,
// most of whose work is a system call or a wait, so each runs its Go
// code on one thread, except smtp, mta and mfa, whose TLS handshakes
// and DKIM signatures can use half the CPUs. With a thread per CPU each
// process kept threads spinning for work that another process's thread
// could have done: measured with make bench on 2 CPUs (catch-all
// maildir, reused connections), 0.95 ms of CPU per message against
// 0.84 ms.
//
// Heap: the processes hold little (a live heap of 0.5-1.5 MiB, pprof
// says: buffers of their channels, the configuration, the system's
// certificate authorities in mta), so what they cost is the heap that
// Go lets grow before it collects: at least 4 MiB times GOGC/100. The
// processes that carry mail (smtp, queue, mta, mda) collect at GOGC
// 50, the others, which mostly wait, at 25: 52 MiB of peak PSS for the
// daemon instead of 59, for no CPU per message that the bench can tell
// from its noise.
func TuneRuntime(p proto.Proc) {
	if os.Getenv("GOMAXPROCS") == "" {
		procs := 1
		if p == proto.ProcSMTP || p == proto.ProcMTA || p == proto.ProcMFA {
			procs = max(1, runtime.NumCPU()/2)
		}
		runtime.GOMAXPROCS(procs)
	}
	if os.Getenv("GOGC") != "" {
		return
	}
	switch p {
	case proto.ProcParent, proto.ProcControl, proto.ProcLookup, proto.ProcMFA:
		debug.SetGCPercent(25)
	default:
		debug.SetGCPercent(50)
	}
	if p == proto.ProcSMTP {
		debug.SetMemoryLimit(smtpMemoryLimit)
	}
}

// ParentFD is the descriptor of a child's channel to the parent.
const ParentFD = 3

// Listener is a listening socket the parent bound for smtp.
type Listener struct {
	Name string
	File *os.File
}

// Child is the common runtime of a child process: its configuration,
// its channels to the parent and to its peers, and the loop that reads
// them. A process package builds on it: Attach, its own privileged
// setup, Drop, ReceiveSetup, its own setup, Ready, Serve.
type Child struct {
	Proc   proto.Proc
	Config *config.Config
	Log    *logging.Logger
	Parent *proto.Channel
	// Peers are the channels to other children, by process.
	Peers map[proto.Proc]*proto.Channel
	// Listeners (smtp only) and ControlSocket (control only) come from
	// the parent during setup.
	Listeners     []Listener
	ControlSocket *os.File
	// Requests carries the requests this process makes to others and
	// matches their answers.
	Requests *proto.Requests
	// Stats sends counters to control; nil in control itself.
	Stats *stats.Sender
	// Chrooted is set once Drop locked the process into its directory.
	Chrooted bool

	// received and sent count frames until Stats exists; Serve hands
	// the totals over to it.
	received, sent atomic.Int64
}

// count counts one frame received or sent, in Stats once it exists.
func (c *Child) count(what string, before *atomic.Int64) {
	if c.Stats != nil {
		c.Stats.Increment(c.Proc.String()+".ipc."+what, 1)
		return
	}
	before.Add(1)
}

// Attach starts the runtime of child p: it loads the configuration at
// cfgPath and opens the channel to the parent on ParentFD.
func Attach(p proto.Proc, cfgPath string, foreground, verbose bool) (*Child, error) {
	// The terminal's ^C is for the parent, which stops the children
	// itself; a hangup is the parent's business too.
	signal.Ignore(syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE)
	TuneRuntime(p)
	c := &Child{Proc: p, Log: logging.New(p.String(), foreground, verbose), Peers: map[proto.Proc]*proto.Channel{}}
	// lookup alone reads the tables; the others ask it
	load := config.LoadWithoutTables
	if p == proto.ProcLookup {
		load = config.LoadTables
	}
	cfg, err := load(cfgPath)
	if err != nil {
		return nil, err
	}
	c.Config = cfg
	c.Requests = proto.NewRequests(c.Send)
	f := os.NewFile(ParentFD, "parent")
	if f == nil {
		return nil, errors.New("privsep: no channel to the parent on fd 3 (-x is for the parent's use)")
	}
	c.Parent, err = proto.NewChannel(f, p, proto.ProcParent)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("privsep: fd 3 is not the parent's channel: %w", err)
	}
	return c, nil
}

// Drop chroots and changes user as SpecFor says for this process.
func (c *Child) Drop() error {
	spec := SpecFor(c.Proc, c.Config)
	if !Privileged() {
		c.Log.Infof("not started as root: running as uid %d without chroot", os.Getuid())
		return nil
	}
	if err := Drop(spec); err != nil {
		return err
	}
	c.Chrooted = spec.Chroot != ""
	c.Log.Debugf("dropped privileges to %s, chroot %q", spec.User, spec.Chroot)
	return nil
}

// ReceiveSetup reads the parent's setup messages until SetupDone.
func (c *Child) ReceiveSetup() error {
	for {
		env, err := c.Parent.Recv()
		if err != nil {
			return fmt.Errorf("setup: %w", err)
		}
		c.count("received", &c.received)
		switch m := env.Msg.(type) {
		case *proto.SetupPeer:
			if _, dup := c.Peers[m.Peer]; dup || m.Peer == c.Proc {
				m.File().Close()
				return fmt.Errorf("setup: unexpected channel to %s", m.Peer)
			}
			ch, err := proto.NewChannel(m.File(), c.Proc, m.Peer)
			m.File().Close()
			if err != nil {
				return fmt.Errorf("setup: %w", err)
			}
			c.Peers[m.Peer] = ch
		case *proto.SetupListener:
			c.Listeners = append(c.Listeners, Listener{Name: m.Name, File: m.File()})
		case *proto.SetupControl:
			c.ControlSocket = m.File()
		case *proto.SetupDone:
			if ctl := c.Peers[proto.ProcControl]; ctl != nil {
				c.Stats = stats.NewSender(func(u *proto.StatUpdate) error { return ctl.Send(u, 0) })
			}
			return nil
		}
	}
}

// Ready tells the parent that setup is complete.
//
// What the setup left behind (the configuration's syntax tree, the
// certificate authorities' PEM) is garbage from then on: it goes back to
// the system now rather than holding a process's pages until the
// runtime's scavenger gets to them, a few MiB per process.
func (c *Child) Ready() error {
	debug.FreeOSMemory()
	return c.Send(c.Parent, &proto.SetupReady{}, 0)
}

// Send sends m on ch with request id id, counting it. Stat batches go
// through Stats and are not counted, or counting would never settle.
func (c *Child) Send(ch *proto.Channel, m proto.Message, id uint32) error {
	if err := ch.Send(m, id); err != nil {
		return err
	}
	c.count("sent", &c.sent)
	return nil
}

// peerGrace is how long a child whose peer went away waits for its own
// SIGTERM before it reports the loss and exits.
const peerGrace = 250 * time.Millisecond

// Handler handles one message received on ch. An error is fatal.
type Handler func(ch *proto.Channel, env *proto.Frame) error

type received struct {
	ch  *proto.Channel
	env *proto.Frame
	err error
}

// SetLog applies `smtpctl log` or `smtpctl trace` to the process's log.
func (c *Child) SetLog(l proto.LogSetting) bool {
	if l.What == "verbose" {
		c.Log.SetVerbose(l.On)
		return true
	}
	return c.Log.SetTrace(l.What, l.On)
}

// Serve reads the parent's and the peers' channels and hands every
// message to handle, one at a time, until SIGTERM (exit 0). A channel
// that closes or breaks the protocol, or a handler error, is fatal: the
// process exits non-zero and the parent stops the daemon.
func (c *Child) Serve(handle Handler) {
	if c.Stats != nil {
		stop := make(chan struct{})
		c.Stats.Increment(c.Proc.String()+".ipc.received", c.received.Load())
		c.Stats.Increment(c.Proc.String()+".ipc.sent", c.sent.Load())
		go func() {
			if err := c.Stats.Run(stop); err != nil {
				c.Log.Fatalf("%v", err)
			}
		}()
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	events := make(chan received)
	channels := []*proto.Channel{c.Parent}
	for _, ch := range c.Peers {
		channels = append(channels, ch)
	}
	for _, ch := range channels {
		go func() {
			for {
				env, err := ch.Recv()
				events <- received{ch, env, err}
				if err != nil {
					return
				}
			}
		}()
	}
	for {
		select {
		case <-term:
			c.Log.Debugf("exiting on SIGTERM")
			os.Exit(0)
		case ev := <-events:
			switch {
			case ev.err == io.EOF && ev.ch.Remote == proto.ProcParent:
				c.Log.Fatalf("parent went away")
			case ev.err == io.EOF:
				// when the daemon stops, siblings exit at about the same
				// time: a peer's end is fatal only if no SIGTERM follows
				select {
				case <-term:
					os.Exit(0)
				case <-time.After(peerGrace):
					c.Log.Fatalf("lost peer: %s", ev.ch.Remote)
				}
			case ev.err != nil:
				c.Log.Fatalf("%v", ev.err)
			}
			if ev.env.Type != proto.TypeStatUpdate {
				c.count("received", &c.received)
			}
			c.Log.Tracef("imsg", "%s from %s (request %d)", ev.env.Type, ev.ch.Remote, ev.env.PeerID)
			if m, ok := ev.env.Msg.(*proto.ControlLogLevel); ok {
				c.SetLog(m.LogSetting)
				continue
			}
			if err := handle(ev.ch, ev.env); err != nil {
				c.Log.Fatalf("%s from %s: %v", ev.env.Type, ev.ch.Remote, err)
			}
		}
	}
}

// smtpMemoryLimit is the soft memory limit of the smtp process: with
// thousands of sessions open, what their TLS handshakes left behind is
// collected before the process grows past it, instead of when the heap
// has doubled. Far below it, as in ordinary loads, it changes nothing.
const smtpMemoryLimit = 384 << 20
