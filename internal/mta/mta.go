// Package mta is the mta process: it relays envelopes the queue hands it
// to the recipients' mail exchangers or to smarthosts. As in OpenSMTPD,
// a relay is a destination with its settings, a domain's MX list is
// looked up once and shared, a host is one address whose PTR is looked
// up once, and a route (source to host) carries a penalty: a host whose
// connects fail is left alone for 15 s x penalty², at most an hour.
// Sessions carry many messages for the same relay. They speak SMTP, or
// LMTP, with go-smtp's client; client.go holds the little it cannot do.
package mta

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"smtpd/internal/address"
	"smtpd/internal/config"
	"smtpd/internal/envelope"
	"smtpd/internal/mtasts"
	"smtpd/internal/privsep"
	"smtpd/internal/safeio"
	"smtpd/internal/stats"
	"smtpd/internal/throttle"
	"smtpd/internal/tlsrpt"
	"smtpd/proto"
)

// Defaults of the limits, after OpenSMTPD's.
const (
	// SessionsPerRelay bounds concurrent sessions to one relay.
	SessionsPerRelay = 10
	// SessionsPerHost bounds concurrent sessions to one address.
	SessionsPerHost = 5
	// MessagesPerSession is how many messages one session carries.
	MessagesPerSession = 100
	// Keepalive is how long an idle session waits for more messages.
	Keepalive = 2 * time.Second
	// DomainTTL is how long an MX list is used before it is asked again.
	DomainTTL   = 5 * time.Minute
	penaltyUnit = 15 * time.Second
	penaltyMax  = time.Hour
)

// MTA is the state of the mta process.
type MTA struct {
	cfg   *config.Config
	child *privsep.Child
	stats *stats.Sender
	roots *x509.CertPool
	reqs  *proto.Requests
	// sts finds the MTA-STS policies of recipient domains; tlsrpt
	// counts TLS sessions for TLS-RPT (nil when reports are off).
	sts    *mtasts.Resolver
	tlsrpt *tlsrpt.Store

	mu      sync.Mutex
	relays  map[string]*relay
	domains map[string]*domain
	hosts   map[netip.Addr]*host
	routes  map[string]*route
	// dests are the states of the destination limits, paces the
	// message rates of each destination block (destination.go).
	dests map[string]*destination
	paces map[*config.Destination]*throttle.Keyed
	// reloads counts the reloads of the tables: an answer asked
	// before a reload is not kept.
	reloads int
}

// task is one message for one relay, with the envelopes of its
// recipients there.
type task struct {
	msgid uint32
	envs  []*envelope.Envelope
	body  *os.File
	// due is the task's turn at its destination (destination.go);
	// zero for at once.
	due time.Time
}

// relay is a destination: a domain's exchangers, or a smarthost.
type relay struct {
	key      string
	action   *config.Action
	domain   string   // the recipient domain, or the smarthost
	url      *url.URL // nil for MX delivery
	dest     *destination
	tasks    []*task
	sessions int
	// hostsTake, if set, is how many sessions the relay's hosts took
	// when one more found them all busy: no more start until the relay
	// is idle (giveBack).
	hostsTake int
	// more is closed, and replaced, when a task comes: sessions
	// waiting for one wake up.
	more chan struct{}
	// creds is lookup's answer for the relay's credentials, kept for
	// the life of the relay or until the tables are reloaded; asking
	// is held by one session at a time, so that lookup is asked once.
	creds  *proto.LookupCredentials
	asking sync.Mutex
	// requireTLS and tlsOptional are the TLS its mail asks for (RFC
	// 8689); policy is the TLS policy of its last session and why.
	requireTLS, tlsOptional bool
	policy                  string
}

// domain is an MX list, shared by all relays to the domain.
type domain struct {
	name    string
	mxs     []proto.MXHost
	err     *deliveryError
	expires time.Time
	done    bool // answered; until then others wait on ready
	ready   chan struct{}
}

// host is one address of an exchanger.
type host struct {
	addr     netip.Addr
	name     string // exchanger name, for logs
	ptr      string
	ptrDone  bool
	sessions int
}

// route is the path from our source address to a host.
type route struct {
	key      string
	penalty  int
	disabled time.Time
	lastErr  string
}

// New prepares the mta process before it drops privileges: the
// certificate authorities are read while /etc/ssl is still visible,
// and the state directory it will be locked into is made its own.
func New(c *privsep.Child) *MTA {
	if err := prepareStateDir(c.Config); err != nil {
		c.Log.Fatalf("%v", err)
	}
	roots, err := x509.SystemCertPool()
	if err != nil {
		c.Log.Warnf("no system certificate authorities: %v", err)
		roots = x509.NewCertPool()
	}
	if c.Config.CAFile != "" {
		pem, err := os.ReadFile(c.Config.CAFile)
		if err == nil && !roots.AppendCertsFromPEM(pem) {
			err = errors.New("no certificate in it")
		}
		if err != nil {
			c.Log.Fatalf("ca_file %s: %v", c.Config.CAFile, err)
		}
	}
	return &MTA{
		cfg: c.Config, child: c, roots: roots, reqs: c.Requests,
		relays: map[string]*relay{}, domains: map[string]*domain{},
		hosts: map[netip.Addr]*host{}, routes: map[string]*route{},
		dests: map[string]*destination{}, paces: map[*config.Destination]*throttle.Keyed{},
	}
}

// prepareStateDir creates mta's state directory, its chroot, writable
// by the daemon's user alone.
func prepareStateDir(cfg *config.Config) error {
	uid, gid := -1, -1
	if privsep.Privileged() {
		u, err := privsep.DaemonUser(cfg.User)
		if err != nil {
			return err
		}
		uid, gid = int(u.UID), int(u.GID)
	}
	if err := safeio.EnsureDir(cfg.MTAStateDir, 0o700, uid, gid); err != nil {
		return fmt.Errorf("mta state dir: %w", err)
	}
	return nil
}

// Run serves until the process is told to stop.
func (m *MTA) Run() {
	m.stats = m.child.Stats
	m.startPolicies()
	if err := m.child.Ready(); err != nil {
		m.child.Log.Fatalf("%v", err)
	}
	m.child.Serve(m.handle)
}

func (m *MTA) handle(ch *proto.Channel, env *proto.Frame) error {
	switch msg := env.Msg.(type) {
	case *proto.QueueTransfer:
		e, err := envelope.Unmarshal(msg.Envelope)
		if err != nil {
			msg.File().Close()
			return fmt.Errorf("transfer: %w", err)
		}
		m.enqueue(e, msg.File())
		return nil
	case *proto.ControlMTAQuery:
		if today, ok := map[string]bool{"send-tls-reports": false, "send-tls-reports-today": true}[msg.What]; ok {
			// reports ask lookup and queue, whose answers come here
			go func() {
				lines := m.sendTLSReports(today)
				if err := proto.SendLines(ch, env.PeerID, lines, func(l []string, last bool) proto.Message {
					return &proto.MTAObjects{TextLines: proto.TextLines{Lines: l, Last: last}}
				}); err != nil {
					m.child.Log.Fatalf("%v", err)
				}
			}()
			return nil
		}
		lines := m.objects(msg.What)
		return proto.SendLines(ch, env.PeerID, lines, func(l []string, last bool) proto.Message {
			return &proto.MTAObjects{TextLines: proto.TextLines{Lines: l, Last: last}}
		})
	case *proto.LookupMXResult, *proto.LookupPTRResult, *proto.LookupCredentials, *proto.LookupDNSResult, *proto.QueueReportQueued:
		if !m.reqs.Deliver(env) {
			return fmt.Errorf("answer to request %d that nobody asked", env.PeerID)
		}
		return nil
	case *proto.QueueDomainFlush:
		m.flushDomain(msg.Domain, msg.Subdomains)
		return nil
	case *proto.LookupTablesReloaded:
		// the next session of each relay asks for its credentials again
		m.mu.Lock()
		m.reloads++
		for _, r := range m.relays {
			r.creds = nil
		}
		m.mu.Unlock()
		return nil
	}
	return fmt.Errorf("unexpected %s", env.Type)
}

// relayFor returns the relay key and destination of an envelope.
// Mail with REQUIRETLS, or with "TLS-Required: No", travels in
// sessions of its own, since the TLS it asks for is not the rest's.
func relayFor(act *config.Action, e *envelope.Envelope) (key, dom string) {
	if act.RelayURL != nil {
		key, dom = "url:"+act.Name, act.RelayURL.Hostname()
	} else {
		_, d, _ := strings.Cut(e.Dest, "@")
		dom = strings.ToLower(d)
		key = "mx:" + act.Name + ":" + dom
	}
	switch {
	case e.RequireTLS:
		key += " requiretls"
	case e.TLSOptional:
		key += " tls-optional"
	}
	return key, dom
}

// enqueue adds an envelope to its relay, joining the task of its
// message if that has not started yet, and starts a session if the
// relay may have one more. A new task takes its turn at the
// destination, or goes back to the queue to wait for it if that is too
// far away.
func (m *MTA) enqueue(e *envelope.Envelope, body *os.File) {
	act := m.cfg.Action(e.Action)
	if act == nil || act.Method != config.Relay {
		body.Close()
		err := tempfail(smtp.EnhancedCode{4, 3, 5}, nil, "no relay action %q", e.Action)
		_, domain, _ := strings.Cut(e.Dest, "@")
		m.logFailures(domain, []*envelope.Envelope{e}, err, newSessionID())
		m.report(e, "", err)
		return
	}
	key, dom := relayFor(act, e)
	m.mu.Lock()
	r := m.relays[key]
	if r == nil {
		r = &relay{key: key, action: act, domain: dom, url: act.RelayURL, more: make(chan struct{}),
			requireTLS: e.RequireTLS, tlsOptional: e.TLSOptional && !e.RequireTLS}
		r.dest = m.destination(dom, act.RelayURL == nil)
		r.dest.relays = append(r.dest.relays, r)
		m.relays[key] = r
		m.stats.Increment("mta.relay", 1)
	}
	joined := false
	for _, t := range r.tasks {
		if t.msgid == e.MsgID() {
			t.envs = append(t.envs, e)
			joined = true
			break
		}
	}
	m.stats.Increment("mta.envelope", 1)
	if joined {
		body.Close()
	} else {
		due, err := m.turn(r.dest, e.MsgID())
		if err != nil {
			m.mu.Unlock()
			body.Close()
			m.report(e, "", err)
			return
		}
		r.add(&task{msgid: e.MsgID(), envs: []*envelope.Envelope{e}, body: body, due: due})
		m.stats.Increment("mta.task", 1)
	}
	start := r.wantsSession()
	if start {
		r.startSession()
	} else if r.sessions == 0 && r.dest.full() {
		// the sessions of other relays to the destination that wait
		// for tasks end and hand one over (next)
		for _, o := range r.dest.relays {
			if o != r {
				o.wake()
			}
		}
	}
	m.mu.Unlock()
	if start {
		go m.session(r)
	}
}

// add queues a task and wakes the sessions waiting for one; m.mu is
// held.
func (r *relay) add(t *task) {
	r.tasks = append(r.tasks, t)
	r.wake()
}

// wake wakes the sessions of a relay waiting for a task; m.mu is held.
func (r *relay) wake() {
	close(r.more)
	r.more = make(chan struct{})
}

// TasksPerSession is the backlog of a relay that makes it worth one more
// session: fewer tasks wait for the sessions already running.
const TasksPerSession = 10

// wantsSession reports whether a relay should open one more session:
// it has tasks, and neither it nor its destination has all the
// sessions it may.
func (r *relay) wantsSession() bool {
	if len(r.tasks) == 0 || r.sessions >= SessionsPerRelay || r.dest.full() || r.hostsTake > 0 && r.sessions >= r.hostsTake {
		return false
	}
	return r.sessions == 0 || len(r.tasks) > r.sessions*TasksPerSession
}

// next takes the next task of a relay; with wait, it waits up to
// Keepalive for one to come, unless another relay of the destination
// waits for the session.
func (m *MTA) next(r *relay, wait bool) *task {
	var expired <-chan time.Time
	if wait {
		timer := time.NewTimer(Keepalive)
		defer timer.Stop()
		expired = timer.C
	}
	for {
		m.mu.Lock()
		if len(r.tasks) > 0 {
			t := r.tasks[0]
			r.tasks = r.tasks[1:]
			m.mu.Unlock()
			return t
		}
		more := r.more
		// an idle session gives way to another relay of its
		// destination that waits for a session
		yields := r.yields()
		m.mu.Unlock()
		if !wait || yields {
			return nil
		}
		select {
		case <-more:
			// another session may have taken it: look again
		case <-expired:
			return nil
		}
	}
}

// report tells queue how one envelope went: delivered with the remote
// host's reply when err is nil.
func (m *MTA) report(e *envelope.Envelope, reply string, err error) {
	res := outcome(reply, err)
	res.EvpID = e.ID
	if err := m.child.Send(m.child.Peers[proto.ProcQueue], &proto.MTADeliveryResult{DeliveryResult: res}, 0); err != nil {
		m.child.Log.Fatalf("%v", err)
	}
}

// failAll ends every task of a relay with the same failure.
func (m *MTA) failAll(r *relay, first *task, err error) {
	id := newSessionID()
	for t := first; t != nil; t = m.next(r, false) {
		m.logFailures(r.domain, t.envs, err, id)
		for _, e := range t.envs {
			m.report(e, "", err)
		}
		t.body.Close()
	}
}

// resolve returns the exchangers of a relay: the domain's MX list, looked
// up once and shared, or the smarthost's addresses.
func (m *MTA) resolve(r *relay) ([]proto.MXHost, error) {
	key := r.domain
	if r.url != nil {
		key = "host:" + r.domain
	}
	m.mu.Lock()
	d := m.domains[key]
	if d == nil || d.done && time.Now().After(d.expires) {
		d = &domain{name: r.domain, ready: make(chan struct{})}
		m.domains[key] = d
		m.stats.Increment("mta.domain", 1)
		m.mu.Unlock()
		env, err := m.ask(proto.ProcLookup, &proto.MTAResolveMX{Domain: r.domain, HostOnly: r.url != nil})
		var res *proto.LookupMXResult
		if err == nil {
			var ok bool
			if res, ok = env.Msg.(*proto.LookupMXResult); !ok {
				err = fmt.Errorf("lookup answered %s", env.Type)
			}
		}
		switch {
		case err != nil:
			d.err = tempfail(smtp.EnhancedCode{4, 4, 3}, err, "")
		case res.Status != proto.StatusOK:
			d.err = mxError(res)
		default:
			d.mxs = res.MXs
		}
		m.mu.Lock()
		d.expires = time.Now().Add(DomainTTL)
		if d.err != nil && d.err.Temporary() {
			d.expires = time.Now() // temporary failures are asked again
		}
		d.done = true
		m.mu.Unlock()
		close(d.ready)
	} else {
		m.mu.Unlock()
		<-d.ready
	}
	if d.err != nil {
		return nil, d.err
	}
	return d.mxs, nil
}

// lookupTimeout bounds the wait for lookup's answer; DNS answers take
// at most a minute there.
const lookupTimeout = 2 * time.Minute

func (m *MTA) ask(to proto.Proc, msg proto.Message) (*proto.Frame, error) {
	frames, err := m.reqs.Ask(m.child.Peers[to], msg, lookupTimeout)
	if err != nil {
		return nil, err
	}
	return frames[0], nil
}

// credentials returns the user name and password of a relay's
// credentials. Lookup holds the tables: it is asked once per relay, and
// its answer kept on the relay until the tables are reloaded; only a
// temporary failure is asked again. No credentials, or none now, is a
// temporary failure: the mail waits for the table to be fixed.
func (m *MTA) credentials(r *relay) (*proto.LookupCredentials, error) {
	r.asking.Lock()
	defer r.asking.Unlock()
	label, table := r.url.User.Username(), r.action.Credentials
	m.mu.Lock()
	a, reloads := r.creds, m.reloads
	m.mu.Unlock()
	if a == nil {
		env, err := m.ask(proto.ProcLookup, &proto.MTACredentialsQuery{Table: uint32(table.ID), Label: label})
		if err != nil {
			return nil, tempfail(smtp.EnhancedCode{4, 7, 0}, err, "credentials %q in table %s", label, table.Name)
		}
		var ok bool
		if a, ok = env.Msg.(*proto.LookupCredentials); !ok {
			return nil, tempfail(smtp.EnhancedCode{4, 7, 0}, nil, "credentials %q in table %s: lookup answered %s", label, table.Name, env.Type)
		}
		m.mu.Lock()
		if a.Status != proto.StatusTempfail && m.reloads == reloads {
			r.creds = a
		}
		m.mu.Unlock()
	}
	switch a.Status {
	case proto.StatusOK:
		return a, nil
	case proto.StatusPermfail:
		return nil, tempfail(smtp.EnhancedCode{4, 7, 8}, nil, "no credentials %q in table %s", label, table.Name)
	}
	return nil, tempfail(smtp.EnhancedCode{4, 7, 0}, nil, "credentials %q in table %s: %s", label, table.Name, a.Text)
}

// candidate is a host to try, with its route and exchanger; once
// chosen, with its TLS policy and what the handshake found.
type candidate struct {
	host   *host
	route  *route
	pref   uint32
	mx     proto.MXHost
	policy *tlsPolicy
	tls    *tlsSession
}

// candidates orders the hosts of a relay: by MX preference; within a
// preference, hosts with fewer sessions first, so equal exchangers
// share the load; hosts whose route is disabled are left out. Backup
// exchangers (a worse preference) come only after every better one.
// busy reports hosts left out only for having all their sessions.
func (m *MTA) candidates(mxs []proto.MXHost, source string) (out []candidate, busy bool) {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, mx := range mxs {
		for _, a := range mx.Addrs {
			ip, err := netip.ParseAddr(a)
			if err != nil {
				continue
			}
			h := m.hosts[ip]
			if h == nil {
				h = &host{addr: ip, name: mx.Host}
				m.hosts[ip] = h
				m.stats.Increment("mta.host", 1)
			}
			src := source
			if src == "" {
				src = "any"
			}
			rkey := src + ">" + ip.String()
			rt := m.routes[rkey]
			if rt == nil {
				rt = &route{key: rkey}
				m.routes[rkey] = rt
				m.stats.Increment("mta.route", 1)
			}
			if now.Before(rt.disabled) {
				continue
			}
			if h.sessions >= SessionsPerHost {
				busy = true
				continue
			}
			out = append(out, candidate{host: h, route: rt, pref: mx.Preference, mx: mx})
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].pref != out[j].pref {
			return out[i].pref < out[j].pref
		}
		return out[i].host.sessions < out[j].host.sessions
	})
	return out, busy
}

// penalize disables a route after a failed connect: 15 s x penalty²,
// capped at an hour. Attempts that fail together count once.
func (m *MTA) penalize(rt *route, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if time.Now().Before(rt.disabled) {
		return // a concurrent attempt failed already
	}
	rt.penalty++
	d := min(penaltyUnit*time.Duration(rt.penalty*rt.penalty), penaltyMax)
	rt.disabled = time.Now().Add(d)
	rt.lastErr = err.Error()
	m.child.Log.Infof("route %s disabled for %v: %v", rt.key, d, err)
}

// flushDomain forgets what the failures of a domain's exchangers (and
// with subdomains those of the domains below it) taught: the penalties
// of the routes to their addresses, and the MX lists, which are asked
// again. The queue says so before it sends the mail it scheduled for
// the domain at the site's request (ETRN, RFC 1985 §5): the site is up
// now, perhaps at a new address, and its mail goes at once.
func (m *MTA) flushDomain(name string, subdomains bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	addrs := map[netip.Addr]bool{}
	for key, d := range m.domains {
		if !d.done || strings.HasPrefix(key, "host:") {
			continue
		}
		if key != name && !(subdomains && address.InDomain(key, name)) {
			continue
		}
		for _, mx := range d.mxs {
			for _, a := range mx.Addrs {
				if ip, err := netip.ParseAddr(a); err == nil {
					addrs[ip] = true
				}
			}
		}
		delete(m.domains, key)
	}
	for _, rt := range m.routes {
		_, ip, _ := strings.Cut(rt.key, ">")
		if a, err := netip.ParseAddr(ip); err == nil && addrs[a] && rt.penalty > 0 {
			rt.penalty, rt.disabled, rt.lastErr = 0, time.Time{}, ""
			m.child.Log.Infof("route %s enabled again: mail for %s asked for", rt.key, name)
		}
	}
}

func (m *MTA) healthy(rt *route) {
	m.mu.Lock()
	rt.penalty, rt.disabled, rt.lastErr = 0, time.Time{}, ""
	m.mu.Unlock()
}

// objects describes the live hosts, relays or routes, one per line,
// sorted, for smtpctl.
func (m *MTA) objects(what string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	var lines []string
	switch what {
	case "hosts":
		for _, h := range m.hosts {
			lines = append(lines, fmt.Sprintf("%s name=%s ptr=%s sessions=%d", h.addr, h.name, orNone(h.ptr), h.sessions))
		}
	case "relays":
		for _, r := range m.relays {
			lines = append(lines, fmt.Sprintf("%s tasks=%d sessions=%d tls=%s", r.key, len(r.tasks), r.sessions, orNone(r.policy)))
		}
	case "routes":
		for _, rt := range m.routes {
			state := "up"
			if now.Before(rt.disabled) {
				state = fmt.Sprintf("disabled for %s", rt.disabled.Sub(now).Round(time.Second))
			}
			line := fmt.Sprintf("%s penalty=%d %s", rt.key, rt.penalty, state)
			if rt.lastErr != "" {
				line += " error=" + rt.lastErr
			}
			lines = append(lines, line)
		}
	case "policies":
		lines = m.stsPolicies()
	default:
		return []string{fmt.Sprintf("unknown object %q: hosts, relays, routes or policies", what)}
	}
	sort.Strings(lines)
	return lines
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
