// Package lookup is the lookup process, the one process that holds the
// tables: it matches recipients against the match rules, expands them
// through aliases, virtual tables and .forward files into destinations,
// checks passwords, and answers the others' questions about tables,
// relay credentials and local accounts, so that none of them holds a
// table's contents. It also resolves DNS for all.
package lookup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"

	mdns "github.com/miekg/dns"

	"smtpd/internal/config"
	"smtpd/internal/dns"
	"smtpd/internal/mailauth/srs"
	"smtpd/internal/monkey"
	"smtpd/internal/privsep"
	"smtpd/proto"
)

// answerAside answers the request env on its own goroutine with what
// ask gives, so that a slow question (a password hash, DNS, a table kept
// outside smtpd) holds up no other; an error of ask is a broken peer's
// doing, which stops lookup as Serve's handler would.
func answerAside(c *privsep.Child, ch *proto.Channel, env *proto.Frame, ask func() (proto.Message, error)) {
	go func() {
		m, err := ask()
		if err == nil {
			err = c.Send(ch, m, env.PeerID)
		}
		if err != nil {
			c.Log.Fatalf("%v", err)
		}
	}()
}

// loadSRS reads the SRS secrets: the first line of each file, the
// current one's first.
func loadSRS(cfg *config.SRS) (*srs.Rewriter, error) {
	var keys [][]byte
	for _, p := range append([]string{cfg.Key}, cfg.OldKeys...) {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("srs: %w", err)
		}
		key, _, err := srs.ParseKeys(data)
		if err != nil {
			return nil, fmt.Errorf("srs: %s: %w", p, err)
		}
		keys = append(keys, key)
	}
	rw, err := srs.New(keys[0], keys[1:]...)
	if err != nil {
		return nil, fmt.Errorf("srs: %w", err)
	}
	rw.MaxAge = cfg.MaxAge
	return rw, nil
}

// destinationsPerFrame keeps a LookupExpandResult inside proto.MaxPayload
// with addresses of up to 256 bytes.
const destinationsPerFrame = 25

// Lookup is the lookup process, prepared by New.
type Lookup struct {
	c        *privsep.Child
	srs      *srs.Rewriter
	backends map[int]*backendTable
}

// New prepares the lookup process: it reads the SRS secrets, which
// must happen before the process drops its privileges.
func New(c *privsep.Child) (*Lookup, error) {
	l := &Lookup{c: c}
	var err error
	if l.backends, err = openBackends(c.Config); err != nil {
		return nil, err
	}
	if c.Config.SRS != nil {
		// lookup alone holds the SRS secrets: it rewrites and reverses
		if l.srs, err = loadSRS(c.Config.SRS); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// Run runs the lookup process.
func (l *Lookup) Run() {
	c := l.c
	r := NewResolver(c.Config)
	r.SRS, r.Backends = l.srs, l.backends
	if err := openProcTables(c.Config, c.Log.Infof, r.Backends); err != nil {
		c.Log.Fatalf("%v", err)
	}
	res, err := dns.New(c.Config.Resolvers)
	if err != nil {
		c.Log.Fatalf("%v", err)
	}
	res.Validating = c.Config.ResolverValidates
	r.Forward = func(acct proto.Account) ([]string, error) { return askForward(c, acct) }
	if err := c.Ready(); err != nil {
		c.Log.Fatalf("%v", err)
	}
	c.Serve(func(ch *proto.Channel, env *proto.Frame) error {
		switch env.Msg.(type) {
		case *proto.ParentForwardFile, *proto.ParentForwardNone:
			if !c.Requests.Deliver(env) {
				return fmt.Errorf("answer to request %d that nobody asked", env.PeerID)
			}
			return nil
		case *proto.MTAResolveMX:
			answerAside(c, ch, env, func() (proto.Message, error) { return resolveMX(res, env.Msg.(*proto.MTAResolveMX)), nil })
			return nil
		case *proto.MTAResolveDNS:
			answerAside(c, ch, env, func() (proto.Message, error) { return resolveDNS(res, env.Msg.(*proto.MTAResolveDNS)), nil })
			return nil
		case *proto.MTAResolvePTR:
			answerAside(c, ch, env, func() (proto.Message, error) {
				var name string
				if ip, err := netip.ParseAddr(env.Msg.(*proto.MTAResolvePTR).Addr); err == nil {
					name, _ = res.PTR(context.Background(), ip)
				}
				return &proto.LookupPTRResult{Name: name}, nil
			})
			return nil
		case *proto.SMTPAuthQuery:
			// hashing is slow on purpose
			answerAside(c, ch, env, func() (proto.Message, error) { return authAnswer(r, c, env.Msg.(*proto.SMTPAuthQuery)), nil })
			return nil
		case *proto.MFATableQuery:
			answerAside(c, ch, env, func() (proto.Message, error) { return r.tableAnswer(env.Msg.(*proto.MFATableQuery)) })
			return nil
		case *proto.MTACredentialsQuery:
			answerAside(c, ch, env, func() (proto.Message, error) { return r.credentialsAnswer(env.Msg.(*proto.MTACredentialsQuery)) })
			return nil
		case *proto.ParentAccountQuery:
			answerAside(c, ch, env, func() (proto.Message, error) { return r.accountAnswer(env.Msg.(*proto.ParentAccountQuery)), nil })
			return nil
		case *proto.ControlTableReload:
			q := env.Msg.(*proto.ControlTableReload)
			line := "table " + q.Name + " reloaded"
			err := reload(c, r, q.Name)
			if err != nil {
				line = err.Error()
			}
			return c.Send(ch, &proto.LookupTableLines{TextLines: proto.TextLines{Lines: []string{line}, Last: true}}, env.PeerID)
		case *proto.ControlTableLookup:
			answerAside(c, ch, env, func() (proto.Message, error) {
				q := env.Msg.(*proto.ControlTableLookup)
				line := r.ShowTable(q.Name, q.Service, q.Key)
				return &proto.LookupTableLines{TextLines: proto.TextLines{Lines: []string{line}, Last: true}}, nil
			})
			return nil
		case *proto.ParentTablesReload:
			if err := reload(c, r, env.Msg.(*proto.ParentTablesReload).Name); err != nil {
				c.Log.Warnf("reload: %v", err)
			} else {
				c.Log.Infof("tables reloaded")
			}
			return nil
		}
		var m *proto.SMTPExpandRcpt
		switch q := env.Msg.(type) {
		case *proto.SMTPExpandRcpt:
			m = q
		case *proto.QueueExpandRcpt:
			m = &q.SMTPExpandRcpt
		}
		if m != nil {
			// the password database may be slow: answer out of order
			go func() {
				res := r.Expand(m.Session, m.Rcpt)
				if err := monkey.Fail("lookup.expand"); err != nil {
					res = proto.LookupExpandResult{Status: proto.StatusTempfail, Reply: proto.Reply{Code: 451, Enhanced: "4.3.0", Text: err.Error()}}
				}
				c.Log.Tracef("expand", "<%s> from <%s>: status %d, %d destinations %v", m.Rcpt, m.Session.Sender, res.Status, len(res.Destinations), res.Destinations)
				c.Stats.Increment(fmt.Sprintf("lookup.expand.%s", statusKey(res.Status)), 1)
				if err := sendExpansion(c, ch, res, env.PeerID); err != nil {
					c.Log.Fatalf("%v", err)
				}
			}()
			return nil
		}
		return fmt.Errorf("unexpected %s", env.Type)
	})
}

// reload reads the table files again (one, or all when name is empty)
// and tells mta, which then drops the credentials it keeps, so that the
// next session of every relay asks again, and the parent, which drops
// the accounts it keeps. A file that cannot be read keeps its old
// contents; the error says which.
func reload(c *privsep.Child, r *Resolver, name string) error {
	err := r.Reload(name)
	c.Stats.Increment("lookup.table.reload", 1)
	for _, ch := range []*proto.Channel{c.Peers[proto.ProcMTA], c.Parent} {
		if ch == nil {
			continue
		}
		if err := c.Send(ch, &proto.LookupTablesReloaded{}, 0); err != nil {
			c.Log.Fatalf("%v", err)
		}
	}
	return err
}

// authAnswer checks a password or a sender of an authenticated user.
func authAnswer(r *Resolver, c *privsep.Child, q *proto.SMTPAuthQuery) *proto.LookupAuthResult {
	switch q.What {
	case "password":
		ok, err := r.CheckPassword(q.Listener, q.User, q.Value)
		if err != nil {
			c.Log.Warnf("auth of %q on %s: %v", q.User, q.Listener, err)
			return &proto.LookupAuthResult{Outcome: proto.Outcome{Status: proto.StatusTempfail, Text: "credentials cannot be checked"}}
		}
		if ok {
			return &proto.LookupAuthResult{Outcome: proto.Outcome{Status: proto.StatusOK}}
		}
	case "sender":
		ok, err := r.SenderAllowed(q.Listener, q.User, q.Value)
		if err != nil {
			c.Log.Warnf("senders of %q on %s: %v", q.User, q.Listener, err)
			return &proto.LookupAuthResult{Outcome: proto.Outcome{Status: proto.StatusTempfail, Text: "senders cannot be checked"}}
		}
		if ok {
			return &proto.LookupAuthResult{Outcome: proto.Outcome{Status: proto.StatusOK}}
		}
	case "etrn":
		ok, err := r.ETRNAllowed(q.Listener, q.Value)
		if err != nil {
			c.Log.Warnf("etrn clients of %s: %v", q.Listener, err)
			return &proto.LookupAuthResult{Outcome: proto.Outcome{Status: proto.StatusTempfail, Text: "etrn clients cannot be checked"}}
		}
		if ok {
			return &proto.LookupAuthResult{Outcome: proto.Outcome{Status: proto.StatusOK}}
		}
	}
	return &proto.LookupAuthResult{Outcome: proto.Outcome{Status: proto.StatusPermfail}}
}

func statusKey(s proto.Status) string {
	switch s {
	case proto.StatusOK:
		return "ok"
	case proto.StatusTempfail:
		return "tempfail"
	}
	return "permfail"
}

// sendExpansion sends a result in as many frames as its destinations need.
func sendExpansion(c *privsep.Child, ch *proto.Channel, res proto.LookupExpandResult, id uint32) error {
	all := res.Destinations
	for {
		n := min(len(all), destinationsPerFrame)
		part := res
		part.Destinations, part.More = all[:n], n < len(all)
		if err := c.Send(ch, &part, id); err != nil {
			return err
		}
		all = all[n:]
		if len(all) == 0 {
			return nil
		}
	}
}

// forwardTimeout bounds the wait for the parent to open a .forward.
const forwardTimeout = time.Minute

// MaxForward bounds the .forward file read.
const MaxForward = 64 * 1024

// askForward has the parent open a user's ~/.forward and reads it.
func askForward(c *privsep.Child, acct proto.Account) ([]string, error) {
	frames, err := c.Requests.Ask(c.Parent, &proto.LookupForwardOpen{User: acct.Name, UID: acct.UID, Dir: acct.Directory}, forwardTimeout)
	if err != nil {
		return nil, err
	}
	env := frames[0]
	switch m := env.Msg.(type) {
	case *proto.ParentForwardNone:
		if m.Status != proto.StatusOK {
			return nil, fmt.Errorf("lookup: .forward of %s: %s", acct.Name, m.Text)
		}
		return nil, nil
	case *proto.ParentForwardFile:
		defer m.File().Close()
		data, err := io.ReadAll(io.LimitReader(m.File(), MaxForward))
		if err != nil {
			return nil, fmt.Errorf("lookup: .forward of %s: %w", acct.Name, err)
		}
		return ParseForward(data), nil
	}
	return nil, fmt.Errorf("lookup: unexpected %s", env.Type)
}

// resolveMX answers an MX question with exchangers and their addresses.
func resolveMX(res *dns.Resolver, q *proto.MTAResolveMX) *proto.LookupMXResult {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var mxs []dns.MX
	var err error
	if q.HostOnly {
		var addrs []netip.Addr
		addrs, err = res.Addrs(ctx, q.Domain)
		mxs = []dns.MX{{Host: q.Domain, Addrs: addrs}}
	} else {
		mxs, err = res.MX(ctx, q.Domain)
	}
	if err != nil {
		status := proto.StatusTempfail
		if dns.IsPermanent(err) {
			status = proto.StatusPermfail
		}
		return &proto.LookupMXResult{Outcome: proto.Outcome{Status: status, Text: err.Error()}, NullMX: errors.Is(err, dns.ErrNullMX)}
	}
	out := &proto.LookupMXResult{Outcome: proto.Outcome{Status: proto.StatusOK}}
	for _, mx := range mxs {
		h := proto.MXHost{Preference: uint32(mx.Preference), Host: mx.Host, Secure: mx.Secure}
		for _, a := range mx.Addrs {
			h.Addrs = append(h.Addrs, a.String())
		}
		out.MXs = append(out.MXs, h)
	}
	return out
}

// resolveDNS answers one query of mta's outbound TLS policies: TXT
// records as their joined strings, others in zone file syntax.
func resolveDNS(res *dns.Resolver, q *proto.MTAResolveDNS) *proto.LookupDNSResult {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rrs, secure, err := res.SecureRecords(ctx, q.Name, q.Qtype)
	if err != nil {
		status := proto.StatusTempfail
		if dns.IsPermanent(err) {
			status = proto.StatusPermfail
		}
		return &proto.LookupDNSResult{Outcome: proto.Outcome{Status: status, Text: err.Error()}, Secure: secure}
	}
	out := &proto.LookupDNSResult{Outcome: proto.Outcome{Status: proto.StatusOK}, Secure: secure}
	for _, rr := range rrs {
		if txt, ok := rr.(*mdns.TXT); ok {
			out.Records = append(out.Records, dns.TXTString(txt))
			continue
		}
		out.Records = append(out.Records, rr.String())
	}
	return out
}
