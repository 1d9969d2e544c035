package proxyproto

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Defaults of the Listener's zero fields.
const (
	// DefaultTimeout bounds the wait for a trusted peer's header: spec
	// 2 asks for at least 3 seconds, to cover a TCP retransmit; 5 is
	// Postfix's smtpd_upstream_proxy_timeout.
	DefaultTimeout = 5 * time.Second
	// DefaultMaxPending bounds the trusted connections whose header is
	// awaited, or which wait to be accepted, at once.
	DefaultMaxPending = 1024
)

// ErrUntrusted is the read error of a connection from an untrusted
// peer that starts with a PROXY header (spec 5: accepting one from
// anybody would let anybody spoof its address).
var ErrUntrusted = errors.New("proxyproto: PROXY header from an untrusted peer")

// readBufferSize is the buffer a trusted connection's header is read
// through; Parse needs at least 16 bytes of it (bufio's minimum), and
// the bytes it reads past the header are kept for the Conn.
const readBufferSize = 256

// Listener accepts connections through a load balancer that speaks the
// PROXY protocol.
//
// A peer whose address is in Trusted must send a header first; its Conn
// reports the addresses the header gives (the real ones for a LOCAL or
// UNKNOWN header, and for transports other than TCP, spec 2.2). A
// trusted peer without a valid header within Timeout is closed, never
// accepted: the receiver must not start processing the connection
// before it has a complete and valid header (spec 2).
//
// Any other peer is accepted at once with its real addresses; since
// SMTP servers speak first, nothing is read from it before the engine
// reads, after its greeting. The Conn then checks the first bytes: a
// PROXY header (v1 "PROXY " or the v2 signature) fails that read and
// every later one with ErrUntrusted, and closes the connection. This
// looks at the bytes only to refuse a header, never to honour one, so
// it is not the guessing spec 2 forbids. An SMTP client never sends
// those bytes; one that sends a proper prefix of them and waits (a lone
// "\r\n" starts the v2 signature) waits as for the rest of a line,
// until the engine's read deadline. A read error after such a prefix
// hands the prefix on unchecked: its end would no longer be checked,
// but a header is then only refused less neatly, never honoured.
//
// Headers are read in a goroutine per trusted connection, never in
// Accept: a silent or slow balancer connection delays no other. Accept
// returns connections as their headers complete, so RemoteAddr is
// right as soon as Accept returns, for the limits applied there. At
// most MaxPending trusted connections are held at once; past that the
// listener stops accepting until one completes, is refused or times
// out, as the kernel's backlog would.
//
// The exported fields must be set before the first Accept. Close must
// be called when the Listener is done with, as for any net.Listener; it
// also closes the connections whose header is still awaited.
type Listener struct {
	// Listener is the wrapped listener, of TCP connections.
	net.Listener
	// Trusted are the balancers' addresses. Peers' IPv4-mapped
	// addresses are unmapped before matching.
	Trusted []netip.Prefix
	// Timeout bounds the wait for a trusted peer's whole header;
	// zero means DefaultTimeout.
	Timeout time.Duration
	// MaxPending bounds the trusted connections held before Accept
	// returns them; zero means DefaultMaxPending.
	MaxPending int
	// Rejected, if set, is told of every connection the listener or
	// its Conn closes: a trusted peer without a valid header, an
	// untrusted one with a header. It may be called from any goroutine,
	// at once from several.
	Rejected func(peer net.Addr, err error)

	setupOnce, startOnce, closeOnce sync.Once
	accepted                        chan accepted
	done                            chan struct{}
	slots                           chan struct{}
	mu                              sync.Mutex
	pending                         map[net.Conn]struct{} // by mu
}

// accepted is an outcome of the wrapped listener's Accept, ready for
// the Listener's.
type accepted struct {
	c   net.Conn
	err error
}

func (l *Listener) setup() {
	l.setupOnce.Do(func() {
		l.accepted = make(chan accepted)
		l.done = make(chan struct{})
		l.slots = make(chan struct{}, orDefault(l.MaxPending, DefaultMaxPending))
		l.pending = map[net.Conn]struct{}{}
	})
}

func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// Accept returns the next connection, a *Conn, or the wrapped
// listener's next error, unchanged (errors.Is and net.Error work on it
// as on the wrapped listener's).
func (l *Listener) Accept() (net.Conn, error) {
	l.setup()
	l.startOnce.Do(func() { go l.run() })
	select {
	case a := <-l.accepted:
		select {
		case <-l.done:
			// both were ready: Close wins
			if a.c != nil {
				a.c.Close()
			}
		default:
			return a.c, a.err
		}
	case <-l.done:
	}
	return nil, fmt.Errorf("proxyproto: %w", net.ErrClosed)
}

// Close closes the wrapped listener and the connections whose header
// is awaited; connections Accept returned stay open.
func (l *Listener) Close() error {
	l.setup()
	l.closeOnce.Do(func() {
		close(l.done)
		l.mu.Lock()
		for c := range l.pending {
			c.Close()
		}
		clear(l.pending)
		l.mu.Unlock()
	})
	return l.Listener.Close()
}

func (l *Listener) closed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// run accepts from the wrapped listener until Close: untrusted peers
// go straight to Accept, trusted ones to a handshake goroutine each.
func (l *Listener) run() {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			// the consumer decides whether it is temporary; a
			// closed listener keeps failing until Close
			if !l.deliver(accepted{err: err}) {
				return
			}
			continue
		}
		if !l.trusted(c.RemoteAddr()) {
			uc := &Conn{Conn: c, remote: c.RemoteAddr(), local: c.LocalAddr(), rejected: l.Rejected}
			if !l.deliver(accepted{c: uc}) {
				return
			}
			continue
		}
		select {
		case l.slots <- struct{}{}:
		case <-l.done:
			c.Close()
			return
		}
		if !l.track(c) {
			c.Close()
			<-l.slots
			return
		}
		go l.handshake(c)
	}
}

// deliver hands a to Accept; it fails, closing the connection, once
// the listener is closed.
func (l *Listener) deliver(a accepted) bool {
	select {
	case l.accepted <- a:
		return true
	case <-l.done:
		if a.c != nil {
			a.c.Close()
		}
		return false
	}
}

// track registers a connection whose header is awaited, for Close to
// end; it fails once the listener is closed.
func (l *Listener) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed() {
		return false
	}
	l.pending[c] = struct{}{}
	return true
}

func (l *Listener) untrack(c net.Conn) {
	l.mu.Lock()
	delete(l.pending, c)
	l.mu.Unlock()
}

// trusted reports whether a peer may send a header.
func (l *Listener) trusted(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return false
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return false
	}
	ip = ip.Unmap()
	for _, p := range l.Trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// handshake reads a trusted peer's header, then hands its Conn to
// Accept, or closes it.
func (l *Listener) handshake(c net.Conn) {
	defer func() { <-l.slots }()
	conn, err := l.readHeader(c)
	l.untrack(c)
	if err != nil {
		c.Close()
		if !l.closed() && l.Rejected != nil {
			l.Rejected(c.RemoteAddr(), err)
		}
		return
	}
	l.deliver(accepted{c: conn})
}

// readHeader parses the header a trusted peer must start with, within
// Timeout, from its first byte to its last (spec 2: a slow or
// fragmented header has no more time than a whole one).
func (l *Listener) readHeader(c net.Conn) (*Conn, error) {
	if err := c.SetReadDeadline(time.Now().Add(orDefault(l.Timeout, DefaultTimeout))); err != nil {
		return nil, fmt.Errorf("proxyproto: %w", err)
	}
	br := bufio.NewReaderSize(c, readBufferSize)
	h, err := Parse(br)
	if err != nil {
		return nil, err
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("proxyproto: %w", err)
	}
	conn := &Conn{Conn: c, header: &h, remote: c.RemoteAddr(), local: c.LocalAddr(), checked: true}
	if n := br.Buffered(); n > 0 {
		// the client's first bytes, which came with the header
		b, _ := br.Peek(n)
		conn.rest = bytes.Clone(b)
	}
	// spec 2.1 and 2.2: LOCAL, UNKNOWN and UNSPEC headers, and those
	// of transports we do not serve, leave the real endpoints
	if h.Command == Proxy && h.Transport == Stream && h.Source.IsValid() {
		conn.remote = tcpAddr(h.Source)
		conn.local = tcpAddr(h.Destination)
	}
	return conn, nil
}

// tcpAddr is ap as the net package gives a TCP peer, IPv4 as IPv4.
func tcpAddr(ap netip.AddrPort) *net.TCPAddr {
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
}

// Conn is a connection a Listener accepted. Its RemoteAddr and
// LocalAddr are the header's addresses, if its peer is trusted and the
// header gave them, otherwise the real ones, both as *net.TCPAddr.
type Conn struct {
	net.Conn
	header        *Header // nil for an untrusted peer
	remote, local net.Addr
	rejected      func(net.Addr, error)

	mu sync.Mutex
	// rest is what was read but not yet returned: the bytes after a
	// trusted peer's header, an untrusted peer's first bytes
	rest []byte
	// checked: rest holds no header, and reads may go on
	checked bool
	// err fails every read once an untrusted peer sent a header
	err error
	// first holds an untrusted peer's first bytes, enough to tell a
	// header
	first [len(v2Signature)]byte
}

// Header returns the header a trusted peer sent; ok is false for an
// untrusted one.
func (c *Conn) Header() (h Header, ok bool) {
	if c.header == nil {
		return Header{}, false
	}
	return *c.header, true
}

// RemoteAddr is the client's address.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// LocalAddr is the address the client connected to.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// NetConn returns the connection with the balancer, or the untrusted
// client, as accepted.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// Read reads the client's stream: after a trusted peer's header, the
// bytes that came with it first; from an untrusted peer, once its
// first bytes are known not to be a header.
func (c *Conn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if c.checked && c.rest == nil {
		c.mu.Unlock()
		return c.Conn.Read(p)
	}
	defer c.mu.Unlock()
	if len(p) == 0 {
		return 0, nil
	}
	if !c.checked {
		if err := c.check(); err != nil {
			return 0, err
		}
	}
	n := copy(p, c.rest)
	if c.rest = c.rest[n:]; len(c.rest) == 0 {
		c.rest = nil
	}
	return n, nil
}

// check reads an untrusted peer's first bytes until they are a header
// or cannot be one. A read error before that ends the check if bytes
// came, which are handed on (the next read gives the error again), and
// is returned otherwise, the check to be done on the next read (a
// deadline may be extended).
func (c *Conn) check() error {
	if c.err != nil {
		return c.err
	}
	for {
		switch classify(c.rest) {
		case notHeader:
			c.checked = true
			return nil
		case isHeader:
			c.err = fmt.Errorf("%w: %s", ErrUntrusted, c.remote)
			c.Conn.Close()
			if c.rejected != nil {
				c.rejected(c.remote, c.err)
			}
			return c.err
		}
		n, err := c.Conn.Read(c.first[len(c.rest):])
		c.rest = c.first[:len(c.rest)+n]
		if err != nil {
			if len(c.rest) == 0 {
				c.rest = nil
				return err
			}
			c.checked = true
			return nil
		}
	}
}

// verdict is what an untrusted peer's first bytes say.
type verdict int

const (
	undecided verdict = iota // a proper prefix of a header's start
	isHeader                 // a header's start
	notHeader                // anything else
)

// classify tells whether b starts a header: v1 "PROXY " (spec 2.1) or
// the v2 signature (spec 2.2). The two differ in their first byte.
func classify(b []byte) verdict {
	for _, sig := range [...]string{v1Prefix, v2Signature} {
		k := min(len(b), len(sig))
		if string(b[:k]) == sig[:k] {
			if k == len(sig) {
				return isHeader
			}
			return undecided
		}
	}
	return notHeader
}
