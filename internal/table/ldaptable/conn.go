package ldaptable

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// conn is a bound connection. raw is the TCP connection under lc (and
// under its TLS, if any): closing it stops lc's goroutines at once,
// whatever they wait for.
type conn struct {
	lc  *ldap.Conn
	raw net.Conn
}

func (c *conn) close() {
	_ = c.raw.Close()
	// waits for lc's goroutines, which the closed socket has woken;
	// those waiting to hand an answer over give up after the timeout
	_ = c.lc.Close()
}

// discard closes c in the background: the lookup that found it broken
// returns its error now, within its timeout, not after go-ldap's
// goodbyes.
func (c *conn) discard() {
	_ = c.raw.Close()
	go c.lc.Close()
}

// conn returns the shared connection, dialling and binding one if there
// is none. Only one lookup dials at a time; the others wait for it (or
// for their ctx) and then use its connection, or dial themselves if it
// failed because of the dialler's ctx.
func (t *Table) conn(ctx context.Context) (*conn, error) {
	for {
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			return nil, ErrClosed
		}
		if c := t.cur; c != nil {
			if !c.lc.IsClosing() {
				t.mu.Unlock()
				return c, nil
			}
			// go-ldap's reader saw the server go away (a restart,
			// an idle timeout): dial again rather than fail this
			// lookup
			t.cur = nil
			t.mu.Unlock()
			c.discard()
			continue
		}
		if ch := t.dialing; ch != nil {
			t.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, waitErr(ctx, "waiting for the connection")
			}
		}
		if now := time.Now(); now.Before(t.retryAt) {
			err := t.lastErr
			t.mu.Unlock()
			return nil, fmt.Errorf("not dialling again for %v after: %w", t.retryAt.Sub(now).Round(time.Millisecond), err)
		}
		ch := make(chan struct{})
		t.dialing = ch
		t.mu.Unlock()

		c, err := t.dial(ctx)

		t.mu.Lock()
		t.dialing = nil
		close(ch)
		switch {
		case err != nil:
			// a lookup given up by its caller says nothing of the
			// server; a timeout or a refusal does
			if !errors.Is(ctx.Err(), context.Canceled) {
				t.lastErr, t.retryAt = err, time.Now().Add(redialHoldoff)
			}
		case t.closed:
			err = ErrClosed
		default:
			t.cur = c
		}
		t.mu.Unlock()
		if err != nil {
			if c != nil {
				c.close()
			}
			return nil, err
		}
		return c, nil
	}
}

// dial connects, sets up TLS, and binds, all within ctx: go-ldap's
// StartTLS and Bind take no context, so ctx ending sets a past deadline
// on the socket, which fails whatever is under way.
func (t *Table) dial(ctx context.Context) (*conn, error) {
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Unix(1, 0)) })
	var lc *ldap.Conn
	fail := func(what string, err error) (*conn, error) {
		stop()
		_ = raw.Close()
		if lc != nil {
			go lc.Close()
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w (%w)", waitErr(ctx, what), err)
		}
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	nc := raw
	if t.ldaps {
		tc := tls.Client(raw, t.tlsConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fail("tls handshake", err)
		}
		nc = tc
	}
	lc = ldap.NewConn(nc, t.ldaps)
	lc.Start()
	// bounds go-ldap's own waits (a request's answer, Close's goodbye)
	// when the socket is fine but the server says nothing
	lc.SetTimeout(t.timeout)
	if t.startTLS {
		if err := lc.StartTLS(t.tlsConfig); err != nil {
			return fail("starttls", err)
		}
	}
	if t.bindDN != "" {
		if err := lc.Bind(t.bindDN, t.bindPW); err != nil {
			return fail("bind as "+t.bindDN, err)
		}
	}
	c := &conn{lc: lc, raw: raw}
	if !stop() {
		// ctx ended as the bind succeeded: the deadline is set, or
		// about to be, and the socket is of no use
		c.discard()
		return nil, waitErr(ctx, "bind")
	}
	return c, nil
}

// drop forgets c if it is still the shared connection, and closes it;
// the next lookup dials again.
func (t *Table) drop(c *conn) {
	t.mu.Lock()
	if t.cur == c {
		t.cur = nil
	}
	t.mu.Unlock()
	c.discard()
}

// search runs a subtree search of the base on the shared connection.
// If the connection turns out to be dead (the server restarted, or
// closed it as idle) it tries once more on a new one: a search changes
// nothing, and it saves a tempfail.
func (t *Table) search(ctx context.Context, filter string, attrs []string, limit int) ([]*ldap.Entry, error) {
	if len(attrs) == 0 {
		// no attributes is "all user attributes" to LDAP; "1.1" is
		// none (RFC 4511 section 4.5.1.8)
		attrs = []string{"1.1"}
	}
	req := ldap.NewSearchRequest(t.base, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, limit, t.timeLimit, false,
		filter, attrs, nil)
	var entries []*ldap.Entry
	var err error
	for try := 0; try < 2; try++ {
		var c *conn
		c, err = t.conn(ctx)
		if err != nil {
			return nil, err
		}
		entries, err = t.run(ctx, c, req)
		if err == nil || ctx.Err() != nil || !broken(ctx, err) {
			break
		}
	}
	if ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) && limit < maxEntries && len(entries) == limit {
		// enough entries for the answer: see Lookup
		err = nil
	}
	if err != nil {
		return nil, err
	}
	return entries, nil
}

// run runs req on c and returns the entries. Any answer short of the
// server's SearchResultDone is an error, and one that says the
// connection is broken (or the server hung) drops c.
func (t *Table) run(ctx context.Context, c *conn, req *ldap.SearchRequest) ([]*ldap.Entry, error) {
	// go-ldap waits on ctx only for the answer: sending waits for its
	// writer goroutine, which a server that stopped reading can block.
	// Closing the socket at the deadline frees them all, so a lookup
	// never outlives it.
	stop := context.AfterFunc(ctx, func() {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			t.drop(c)
		}
	})
	defer stop()
	resp := c.lc.SearchAsync(ctx, req, 0)
	var entries []*ldap.Entry
	var referral string
	for resp.Next() {
		if e := resp.Entry(); e != nil {
			entries = append(entries, e)
		} else if r := resp.Referral(); r != "" && referral == "" {
			referral = r
		}
	}
	err := resp.Err()
	// SearchAsync ends without an error when ctx ends or when the
	// connection was closing before the request went out: the
	// entries so far are then not the answer. Both states stay once
	// reached, so checking after the loop cannot miss them.
	switch {
	case err != nil:
	case ctx.Err() != nil:
		err = waitErr(ctx, "search")
	case c.lc.IsClosing():
		err = errors.New("search: connection lost")
	}
	if err != nil {
		if broken(ctx, err) {
			t.drop(c)
		}
		return entries, err
	}
	if referral != "" {
		// table-ldap fails too: part of the answer may be on a
		// server we do not know
		return nil, fmt.Errorf("search: referral to %s", referral)
	}
	return entries, nil
}

// broken says whether err leaves the connection unfit for more
// requests: anything but an LDAP result the server sent (a result code
// below go-ldap's own, which start at 200), and a search that timed out
// on what may be a hung server.
func broken(ctx context.Context, err error) bool {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return true
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		// our caller gave up: the connection is as good as it was
		return false
	}
	var le *ldap.Error
	if errors.As(err, &le) {
		return le.ResultCode >= ldap.ErrorNetwork
	}
	return true
}

// waitErr is the error of ctx ending during what.
func waitErr(ctx context.Context, what string) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("no answer (%s) in time: %w", what, ctx.Err())
	}
	return fmt.Errorf("%s: %w", what, ctx.Err())
}
