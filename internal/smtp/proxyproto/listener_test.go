package proxyproto

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"
)

var (
	loopback  = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	elsewhere = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
)

// rejections records what a Listener's Rejected is told.
type rejections struct {
	mu   sync.Mutex
	errs []error
	ch   chan error
}

func newRejections() *rejections { return &rejections{ch: make(chan error, 16)} }

func (r *rejections) hook(_ net.Addr, err error) {
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
	r.ch <- err
}

func (r *rejections) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.ch:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("no rejection reported")
		return nil
	}
}

// serve makes l listen on a loopback port, and closes it at the end.
func serve(t *testing.T, l *Listener) *Listener {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.Listener = inner
	t.Cleanup(func() { l.Close() })
	return l
}

type acceptResult struct {
	c   net.Conn
	err error
}

// accepting runs Accept in the background, for tests that want it to
// return, or not, within some time.
func accepting(l *Listener) <-chan acceptResult {
	ch := make(chan acceptResult, 1)
	go func() {
		c, err := l.Accept()
		ch <- acceptResult{c, err}
	}()
	return ch
}

func acceptWithin(t *testing.T, ch <-chan acceptResult, d time.Duration) *Conn {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("Accept: %v", r.err)
		}
		t.Cleanup(func() { r.c.Close() })
		return r.c.(*Conn)
	case <-time.After(d):
		t.Fatalf("Accept did not return within %v", d)
		return nil
	}
}

func notAccepted(t *testing.T, ch <-chan acceptResult, d time.Duration) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("Accept returned %v, %v; want nothing", r.c, r.err)
	case <-time.After(d):
	}
}

func dial(t *testing.T, l net.Listener) net.Conn {
	t.Helper()
	return dialFrom(t, l, nil)
}

func dialFrom(t *testing.T, l net.Listener, local net.Addr) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: local, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func write(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatal(err)
	}
}

func readN(t *testing.T, c net.Conn, n int) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("read %d bytes: %q, %v", n, b, err)
	}
	c.SetReadDeadline(time.Time{})
	return string(b)
}

// closedByPeer checks that the server closed c, within d.
func closedByPeer(t *testing.T, c net.Conn, d time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	n, err := c.Read(make([]byte, 1))
	if n != 0 || err == nil || isTimeout(err) {
		t.Fatalf("read from a connection the server should have closed: %d, %v", n, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestListenerTrusted(t *testing.T) {
	mapped := netip.MustParseAddrPort("[::ffff:192.0.2.1]:56324")
	cases := []struct {
		name   string
		header string
		// remote and local are the addresses Conn reports; "" means
		// the real ones
		remote, local string
	}{
		{"v1 tcp4", "PROXY TCP4 192.0.2.1 198.51.100.11 56324 25\r\n", "192.0.2.1:56324", "198.51.100.11:25"},
		{"v1 tcp6", "PROXY TCP6 2001:db8::1 2001:db8::11 56324 587\r\n", "[2001:db8::1]:56324", "[2001:db8::11]:587"},
		{"v1 tcp6 mapped", "PROXY TCP6 ::ffff:192.0.2.1 ::ffff:198.51.100.11 56324 25\r\n", "192.0.2.1:56324", "198.51.100.11:25"},
		{"v1 unknown", "PROXY UNKNOWN\r\n", "", ""},
		{"v1 unknown long", "PROXY UNKNOWN 192.0.2.1 198.51.100.11 56324 25\r\n", "", ""},
		{"v2 tcp4", string(v2(0x21, 0x11, addrs(src4, dst4))), "192.0.2.1:56324", "198.51.100.11:25"},
		{"v2 tcp6", string(v2(0x21, 0x21, addrs(src6, dst6))), "[2001:db8::1]:56324", "[2001:db8::11]:587"},
		{"v2 tcp6 mapped", string(v2(0x21, 0x21, addrs(mapped, mapped))), "192.0.2.1:56324", "192.0.2.1:56324"},
		{"v2 tlvs", string(withCRC(v2(0x21, 0x11, addrs(src4, dst4), tlv(0x01, "smtp"), tlv(0xea, "vpce-0123")), false)),
			"192.0.2.1:56324", "198.51.100.11:25"},
		{"v2 local", string(v2(0x20, 0x00)), "", ""},
		{"v2 local with block", string(v2(0x20, 0x11, addrs(src4, dst4))), "", ""},
		{"v2 unspec", string(v2(0x21, 0x00)), "", ""},
		{"v2 udp4", string(v2(0x21, 0x12, addrs(src4, dst4))), "", ""},
		{"v2 unix", string(v2(0x21, 0x31, make([]byte, 216))), "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rej := newRejections()
			l := serve(t, &Listener{Trusted: loopback, Rejected: rej.hook})
			c := dial(t, l)
			// the header and the first command in one segment: none
			// of the command may be lost
			write(t, c, tc.header+smtpData)
			sc := acceptWithin(t, accepting(l), 5*time.Second)
			remote, local := tc.remote, tc.local
			if remote == "" {
				remote, local = c.LocalAddr().String(), c.RemoteAddr().String()
			}
			if got := sc.RemoteAddr().String(); got != remote {
				t.Errorf("RemoteAddr %s, want %s", got, remote)
			}
			if got := sc.LocalAddr().String(); got != local {
				t.Errorf("LocalAddr %s, want %s", got, local)
			}
			if _, ok := sc.RemoteAddr().(*net.TCPAddr); !ok {
				t.Errorf("RemoteAddr is a %T, want *net.TCPAddr", sc.RemoteAddr())
			}
			if _, ok := sc.Header(); !ok {
				t.Error("no Header for a trusted peer")
			}
			if got := readN(t, sc, len(smtpData)); got != smtpData {
				t.Errorf("after the header: %q, want %q", got, smtpData)
			}
			// and on, in both directions
			write(t, sc, "250 ok\r\n")
			if got := readN(t, c, 8); got != "250 ok\r\n" {
				t.Errorf("client read %q", got)
			}
			write(t, c, "QUIT\r\n")
			if got := readN(t, sc, 6); got != "QUIT\r\n" {
				t.Errorf("server read %q", got)
			}
			if len(rej.errs) != 0 {
				t.Errorf("rejections: %v", rej.errs)
			}
		})
	}
}

// TestListenerTrustedBadHeader: a trusted peer without a valid header
// is closed and never accepted; the next one is.
func TestListenerTrustedBadHeader(t *testing.T) {
	for _, bad := range []string{
		"EHLO client.example\r\n",
		"PROXY TCP4 192.0.2.1 198.51.100.11 56324 25\n",
		"PROXY TCP4 192.0.2.01 198.51.100.11 56324 25\r\n",
		string(v2(0x22, 0x11, addrs(src4, dst4))),
		string(withCRC(v2(0x21, 0x11, addrs(src4, dst4)), true)),
	} {
		rej := newRejections()
		l := serve(t, &Listener{Trusted: loopback, Rejected: rej.hook})
		acc := accepting(l)
		c := dial(t, l)
		write(t, c, bad)
		if err := rej.wait(t); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: rejected with %v, want ErrMalformed", bad, err)
		}
		closedByPeer(t, c, 5*time.Second)
		notAccepted(t, acc, 50*time.Millisecond)
		good := dial(t, l)
		write(t, good, "PROXY TCP4 192.0.2.1 198.51.100.11 56324 25\r\n")
		if sc := acceptWithin(t, acc, 5*time.Second); sc.RemoteAddr().String() != "192.0.2.1:56324" {
			t.Errorf("accepted %s", sc.RemoteAddr())
		}
	}
}

// TestListenerTrustedClosesEarly: a peer gone before its header ends is
// refused.
func TestListenerTrustedClosesEarly(t *testing.T) {
	rej := newRejections()
	l := serve(t, &Listener{Trusted: loopback, Rejected: rej.hook})
	acc := accepting(l)
	c := dial(t, l)
	write(t, c, "PROXY TCP4 192.0.2.1 198.51")
	c.Close()
	if err := rej.wait(t); !errors.Is(err, ErrMalformed) {
		t.Errorf("rejected with %v", err)
	}
	notAccepted(t, acc, 50*time.Millisecond)
}

// TestListenerSilentTrustedPeer: a balancer connection that sends
// nothing delays no other, and is closed after Timeout.
func TestListenerSilentTrustedPeer(t *testing.T) {
	const timeout = 500 * time.Millisecond
	rej := newRejections()
	l := serve(t, &Listener{Trusted: loopback, Timeout: timeout, Rejected: rej.hook})
	acc := accepting(l)
	start := time.Now()
	silent := dial(t, l)
	for i := range 3 {
		c := dial(t, l)
		write(t, c, "PROXY TCP4 192.0.2.1 198.51.100.11 56324 25\r\n")
		acceptWithin(t, acc, timeout/2)
		acc = accepting(l)
		if i == 2 {
			if d := time.Since(start); d >= timeout/2 {
				t.Errorf("three connections took %v behind a silent one", d)
			}
		}
	}
	closedByPeer(t, silent, 5*time.Second)
	if d := time.Since(start); d < timeout {
		t.Errorf("silent peer closed after %v, before the %v timeout", d, timeout)
	}
	if err := rej.wait(t); !errors.Is(err, ErrMalformed) || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("rejected with %v, want ErrMalformed and a deadline", err)
	}
	notAccepted(t, acc, 50*time.Millisecond)
}

// TestListenerSlowPeer: a header that comes in pieces is read whole if
// it is complete within Timeout (spec 2: tolerate partial headers), and
// refused otherwise, however steadily it trickles.
func TestListenerSlowPeer(t *testing.T) {
	header := "PROXY TCP6 2001:db8::1 2001:db8::11 56324 587\r\n"
	t.Run("in time", func(t *testing.T) {
		l := serve(t, &Listener{Trusted: loopback, Timeout: 2 * time.Second})
		acc := accepting(l)
		c := dial(t, l)
		for _, piece := range []string{header[:3], header[3:20], header[20 : len(header)-1], header[len(header)-1:] + smtpData} {
			write(t, c, piece)
			time.Sleep(30 * time.Millisecond)
		}
		sc := acceptWithin(t, acc, 5*time.Second)
		if sc.RemoteAddr().String() != "[2001:db8::1]:56324" {
			t.Errorf("RemoteAddr %s", sc.RemoteAddr())
		}
		if got := readN(t, sc, len(smtpData)); got != smtpData {
			t.Errorf("after the header: %q", got)
		}
	})
	t.Run("too slow", func(t *testing.T) {
		rej := newRejections()
		l := serve(t, &Listener{Trusted: loopback, Timeout: 300 * time.Millisecond, Rejected: rej.hook})
		acc := accepting(l)
		c := dial(t, l)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := range len(header) {
				if _, err := io.WriteString(c, header[i:i+1]); err != nil {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
		if err := rej.wait(t); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("rejected with %v", err)
		}
		c.Close()
		<-done
		notAccepted(t, acc, 50*time.Millisecond)
	})
}

// TestListenerUntrusted: an untrusted client is accepted at once, with
// its real address, before it sends anything: it waits for the
// greeting.
func TestListenerUntrusted(t *testing.T) {
	rej := newRejections()
	l := serve(t, &Listener{Trusted: elsewhere, Rejected: rej.hook})
	c := dial(t, l)
	sc := acceptWithin(t, accepting(l), 5*time.Second)
	if sc.RemoteAddr().String() != c.LocalAddr().String() || sc.LocalAddr().String() != c.RemoteAddr().String() {
		t.Errorf("addresses %s → %s, want the real %s → %s", sc.RemoteAddr(), sc.LocalAddr(), c.LocalAddr(), c.RemoteAddr())
	}
	if _, ok := sc.Header(); ok {
		t.Error("a Header for an untrusted peer")
	}
	write(t, sc, "220 mx.example ESMTP\r\n")
	if got := readN(t, c, 22); got != "220 mx.example ESMTP\r\n" {
		t.Errorf("greeting %q", got)
	}
	write(t, c, smtpData)
	if got := readN(t, sc, len(smtpData)); got != smtpData {
		t.Errorf("read %q, want %q", got, smtpData)
	}
	if len(rej.errs) != 0 {
		t.Errorf("rejections: %v", rej.errs)
	}
}

// TestListenerUntrustedHeader: an untrusted peer that sends a header,
// at once or in pieces, gets a read error and is closed.
func TestListenerUntrustedHeader(t *testing.T) {
	v1 := "PROXY TCP4 192.0.2.1 198.51.100.11 56324 25\r\n"
	v2h := string(v2(0x21, 0x11, addrs(src4, dst4)))
	for _, pieces := range [][]string{
		{v1 + smtpData},
		{"PROXY "},
		{"P", "RO", "XY ", "TCP4"},
		{v2h + smtpData},
		{v2Signature},
		{"\r\n", "\r\n", "\x00\r\nQ", "UIT\n"},
	} {
		rej := newRejections()
		l := serve(t, &Listener{Trusted: elsewhere, Rejected: rej.hook})
		c := dial(t, l)
		sc := acceptWithin(t, accepting(l), 5*time.Second)
		go func() {
			for _, p := range pieces {
				if _, err := io.WriteString(c, p); err != nil {
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
		sc.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := sc.Read(make([]byte, 512))
		if n != 0 || !errors.Is(err, ErrUntrusted) {
			t.Errorf("%q: Read = %d, %v; want ErrUntrusted", pieces, n, err)
		}
		if _, err := sc.Read(make([]byte, 512)); !errors.Is(err, ErrUntrusted) {
			t.Errorf("%q: second Read: %v; want ErrUntrusted", pieces, err)
		}
		if err := rej.wait(t); !errors.Is(err, ErrUntrusted) {
			t.Errorf("%q: rejected with %v", pieces, err)
		}
		closedByPeer(t, c, 5*time.Second)
	}
}

// TestListenerUntrustedNearMisses: whatever is not a header reaches the
// engine unchanged, however it is read.
func TestListenerUntrustedNearMisses(t *testing.T) {
	for _, in := range []string{
		"\r\nEHLO client.example\r\n",
		"\r\n\r\n\x00\r\nQUIX\n",
		"PROXIMA\r\n",
		"PROXY\r\n",
		"P",
		"PRO",
		"\r",
		"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
		smtpData,
	} {
		for _, size := range []int{1, 3, 512} {
			l := serve(t, &Listener{Trusted: elsewhere})
			c := dial(t, l)
			sc := acceptWithin(t, accepting(l), 5*time.Second)
			write(t, c, in)
			c.(*net.TCPConn).CloseWrite()
			sc.SetReadDeadline(time.Now().Add(5 * time.Second))
			var got []byte
			buf := make([]byte, size)
			for {
				n, err := sc.Read(buf)
				got = append(got, buf[:n]...)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("%q: %v", in, err)
				}
			}
			if string(got) != in {
				t.Errorf("%q by %d: read %q", in, size, got)
			}
		}
	}
}

// TestListenerUntrustedDeadline: a deadline before the first bytes
// (the engine's command timeout, or its shutdown) fails the read; the
// check goes on at the next one.
func TestListenerUntrustedDeadline(t *testing.T) {
	l := serve(t, &Listener{Trusted: elsewhere})
	c := dial(t, l)
	sc := acceptWithin(t, accepting(l), 5*time.Second)
	sc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := sc.Read(make([]byte, 16)); !isTimeout(err) {
		t.Fatalf("Read: %v, want a timeout", err)
	}
	sc.SetReadDeadline(time.Now().Add(5 * time.Second))
	write(t, c, "PROXY TCP4 192.0.2.1 198.51.100.11 56324 25\r\n")
	if _, err := sc.Read(make([]byte, 16)); !errors.Is(err, ErrUntrusted) {
		t.Errorf("Read after the deadline: %v, want ErrUntrusted", err)
	}
}

// TestListenerMixed: on one listener, the balancer's address must send
// a header and every other must not; a silent balancer connection does
// not hold up direct clients.
func TestListenerMixed(t *testing.T) {
	balancer := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}
	l := serve(t, &Listener{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}, Timeout: 2 * time.Second})
	d := net.Dialer{LocalAddr: balancer}
	probe, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatalf("cannot dial from %s: %v", balancer.IP, err)
	}
	// the probe is a silent balancer connection
	t.Cleanup(func() { probe.Close() })
	acc := accepting(l)
	direct := dialFrom(t, l, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	sc := acceptWithin(t, acc, time.Second)
	if sc.RemoteAddr().String() != direct.LocalAddr().String() {
		t.Errorf("direct client as %s, want %s", sc.RemoteAddr(), direct.LocalAddr())
	}
	proxied := dialFrom(t, l, balancer)
	write(t, proxied, "PROXY TCP4 192.0.2.1 198.51.100.11 56324 25\r\n")
	if sc := acceptWithin(t, accepting(l), time.Second); sc.RemoteAddr().String() != "192.0.2.1:56324" {
		t.Errorf("proxied client as %s", sc.RemoteAddr())
	}
	write(t, direct, "PROXY TCP4 192.0.2.1 198.51.100.11 56324 25\r\n")
	sc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := sc.Read(make([]byte, 64)); !errors.Is(err, ErrUntrusted) {
		t.Errorf("direct client's header: %v", err)
	}
}

// TestListenerClose: Close ends Accept and the connections whose header
// is awaited.
func TestListenerClose(t *testing.T) {
	l := serve(t, &Listener{Trusted: loopback, Timeout: time.Minute})
	acc := accepting(l)
	silent := dial(t, l)
	notAccepted(t, acc, 50*time.Millisecond)
	start := time.Now()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-acc:
		if !errors.Is(r.err, net.ErrClosed) {
			t.Errorf("Accept after Close: %v", r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept still blocked after Close")
	}
	closedByPeer(t, silent, 5*time.Second)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("pending connection closed after %v", d)
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v", err)
	}
	l.Close() // twice is harmless
}

// TestListenerCloseUnused: Close before any Accept.
func TestListenerCloseUnused(t *testing.T) {
	l := serve(t, &Listener{})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept: %v", err)
	}
}

// TestListenerMaxPending: past MaxPending trusted connections, the
// listener waits for a slot.
func TestListenerMaxPending(t *testing.T) {
	const timeout = 400 * time.Millisecond
	l := serve(t, &Listener{Trusted: loopback, Timeout: timeout, MaxPending: 1})
	acc := accepting(l)
	start := time.Now()
	dial(t, l) // silent, holds the only slot
	time.Sleep(50 * time.Millisecond)
	c := dial(t, l)
	write(t, c, "PROXY TCP4 192.0.2.1 198.51.100.11 56324 25\r\n")
	acceptWithin(t, acc, 5*time.Second)
	if d := time.Since(start); d < timeout-50*time.Millisecond {
		t.Errorf("second connection accepted after %v, before the first timed out", d)
	}
}

// fakeListener hands out scripted Accept outcomes.
type fakeListener struct {
	results chan acceptResult
	closed  chan struct{}
	once    sync.Once
}

func (f *fakeListener) Accept() (net.Conn, error) {
	select {
	case r := <-f.results:
		return r.c, r.err
	case <-f.closed:
		return nil, net.ErrClosed
	}
}

func (f *fakeListener) Close() error {
	f.once.Do(func() { close(f.closed) })
	return nil
}

func (f *fakeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 25} }

// TestListenerAcceptErrors: the wrapped listener's errors come out of
// Accept unchanged, so that the engine's retry of temporary ones works.
func TestListenerAcceptErrors(t *testing.T) {
	f := &fakeListener{results: make(chan acceptResult, 2), closed: make(chan struct{})}
	temp := &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept", errTemporary{})}
	f.results <- acceptResult{err: temp}
	f.results <- acceptResult{err: io.ErrClosedPipe}
	l := &Listener{Listener: f}
	defer l.Close()
	if _, err := l.Accept(); err != temp {
		t.Errorf("first Accept: %v, want %v", err, temp)
	}
	if _, err := l.Accept(); err != io.ErrClosedPipe {
		t.Errorf("second Accept: %v", err)
	}
	l.Close()
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v", err)
	}
}

type errTemporary struct{}

func (errTemporary) Error() string   { return "temporary" }
func (errTemporary) Timeout() bool   { return true }
func (errTemporary) Temporary() bool { return true }

// TestNoGoroutineLeak: Close ends the accept loop and every handshake.
func TestNoGoroutineLeak(t *testing.T) {
	l := serve(t, &Listener{Trusted: loopback, Timeout: time.Minute})
	acc := accepting(l)
	for range 5 {
		dial(t, l)
	}
	time.Sleep(50 * time.Millisecond)
	l.Close()
	<-acc
	deadline := time.Now().Add(5 * time.Second)
	for {
		l.mu.Lock()
		n := len(l.pending)
		l.mu.Unlock()
		if n == 0 && len(l.slots) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections, %d slots still held after Close", n, len(l.slots))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
