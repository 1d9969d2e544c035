// Package mfa is the mail filter process: smtp asks it at each phase of
// a session whether the session may proceed, and it answers proceed,
// reject, tempfail or disconnect from the filter chain of the session's
// listener: built-in checks, filter processes speaking OpenSMTPD's
// filter protocol (started by the parent, spoken to here) and milters.
// A filter that fails costs the sessions it filters its failure policy,
// never the daemon.
package mfa

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"smtpd/internal/config"
	"smtpd/internal/logging"
	"smtpd/internal/mfa/milter"
	"smtpd/internal/privsep"
	"smtpd/internal/stats"
	"smtpd/proto"
)

// FilterProtocolVersion is the smtpd-version told to filter processes:
// that of the OpenSMTPD release whose filter protocol (0.7) this is.
const FilterProtocolVersion = "7.8.0"

// tableTimeout bounds the wait for lookup's answer about a table.
const tableTimeout = time.Minute

// MFA is the state of the mfa process.
type MFA struct {
	child *privsep.Child
	cfg   *config.Config
	log   *logging.Logger
	stats *stats.Sender
	has   TableCheck

	// checks are the checks of mail and the signing keys
	checks *Checks
	// procs and milters are the filter processes and milters, by
	// filter id
	procs   map[int]*procSlot
	milters map[int]*milter.Client

	mu       sync.Mutex
	sessions map[uint64]*session
	// milterErr is the last failure of each milter and when
	milterErr map[int]milterFailure
}

type milterFailure struct {
	at  time.Time
	err string
}

// New prepares the mfa process: it reads the DKIM keys and the
// resolver's configuration, which must happen before the process drops
// its privileges.
func New(c *privsep.Child) (*MFA, error) {
	checks, err := NewChecks(c.Config)
	if err != nil {
		return nil, err
	}
	return &MFA{
		child: c, cfg: c.Config, log: c.Log, checks: checks,
		procs: map[int]*procSlot{}, milters: map[int]*milter.Client{},
		sessions: map[uint64]*session{}, milterErr: map[int]milterFailure{},
	}, nil
}

// Run runs the mfa process.
func (m *MFA) Run() {
	c := m.child
	m.stats = c.Stats
	lookup := c.Peers[proto.ProcLookup]
	// mfa holds no table contents: lookup answers for the filter tables
	m.has = func(id uint32, kind proto.TableKey, key string) (bool, error) {
		frames, err := c.Requests.Ask(lookup, &proto.MFATableQuery{Table: id, Kind: kind, Key: key}, tableTimeout)
		if err != nil {
			return false, err
		}
		a, ok := frames[0].Msg.(*proto.LookupTableResult)
		switch {
		case !ok:
			return false, fmt.Errorf("lookup answered %s", frames[0].Type)
		case a.Status == proto.StatusTempfail:
			return false, fmt.Errorf("table %d: %s", id, a.Text)
		}
		return a.Status == proto.StatusOK, nil
	}
	for _, f := range m.cfg.Filters {
		switch f.Kind {
		case config.FilterProc:
			m.procs[f.ID] = newProcSlot(m, f)
		case config.FilterMilter:
			o := milter.Options{Network: f.MilterNetwork, Address: f.MilterAddress, Timeout: f.Timeout, Hostname: m.cfg.Hostname}
			if f.MilterNetwork == "unix" && c.Chrooted {
				o.Dial = m.parentDialer(f)
			}
			m.milters[f.ID] = milter.New(o)
		}
	}
	if err := c.Ready(); err != nil {
		c.Log.Fatalf("%v", err)
	}
	c.Serve(m.handle)
}

// external reports whether a chain has filter processes or milters,
// which need the session's events and their own session state.
func external(chain []*config.Filter) bool {
	for _, f := range chain {
		if f.Kind != config.FilterBuiltin {
			return true
		}
	}
	return false
}

// chain is the filter chain of the listener numbered id, or nil.
func (m *MFA) chain(id uint32) []*config.Filter {
	if int(id) >= len(m.cfg.Listeners) {
		return nil
	}
	return m.cfg.Listeners[id].Filters
}

func (m *MFA) handle(ch *proto.Channel, env *proto.Frame) error {
	switch msg := env.Msg.(type) {
	case *proto.LookupTableResult, *proto.ParentMilterSocket, *proto.ParentMilterRefused:
		if !m.child.Requests.Deliver(env) {
			return fmt.Errorf("answer to request %d that nobody asked", env.PeerID)
		}
	case *proto.ParentFilterProcess:
		slot := m.procs[int(msg.Filter)]
		if slot == nil {
			msg.File().Close()
			return fmt.Errorf("process for filter %d, which runs none", msg.Filter)
		}
		go slot.started(msg.File(), msg.Generation)
	case *proto.ParentFilterExited:
		slot := m.procs[int(msg.Filter)]
		if slot == nil {
			return fmt.Errorf("exit of filter %d, which runs none", msg.Filter)
		}
		slot.exited(msg)
		m.log.Warnf("filter %s (start %d) ended: %s; next start at %s", slot.filter.Name, msg.Generation, msg.Reason, msg.Restart.Format(time.TimeOnly))
	case *proto.ControlFiltersQuery:
		return proto.SendLines(ch, env.PeerID, m.filterLines(), func(lines []string, last bool) proto.Message {
			return &proto.MFAFilterLines{TextLines: proto.TextLines{Lines: lines, Last: last}}
		})
	case *proto.SMTPFilterEvent:
		m.event(msg)
	case *proto.SMTPFilterQuery:
		m.query(ch, env.PeerID, msg)
	case *proto.SMTPFilterMessage:
		m.message(ch, env.PeerID, msg)
	default:
		return fmt.Errorf("unexpected %s", env.Type)
	}
	return nil
}

// sessionOf returns the state of a session, made at its first event.
func (m *MFA) sessionOf(id uint64, listener uint32, create bool) *session {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sessions[id]
	if s == nil && create {
		var l *config.Listener
		if int(listener) < len(m.cfg.Listeners) {
			l = m.cfg.Listeners[listener]
		}
		s = m.newSession(id, l)
		m.sessions[id] = s
		m.stats.Increment("mfa.session", 1)
	}
	return s
}

func (m *MFA) event(e *proto.SMTPFilterEvent) {
	s := m.sessionOf(e.Session, e.Listener, true)
	s.enqueue(func() { s.event(e) })
	if e.Event == "link-disconnect" {
		m.mu.Lock()
		delete(m.sessions, e.Session)
		m.mu.Unlock()
		m.stats.Decrement("mfa.session", 1)
		s.close()
	}
}

func (m *MFA) query(ch *proto.Channel, id uint32, q *proto.SMTPFilterQuery) {
	answer := func(v *proto.MFAFilterVerdict) {
		m.stats.Increment("mfa."+q.Phase.String(), 1)
		if v.Verdict != proto.VerdictProceed {
			m.stats.Increment("mfa."+q.Phase.String()+".refused", 1)
			m.log.Infof("%016x: %s refused for [%s] helo %q from <%s> %q: %d %s",
				q.Session.ID, q.Phase, q.Session.Remote, q.Session.Helo, q.Session.Sender, q.Param, v.Reply.Code, v.Reply.Text)
		}
		if err := m.child.Send(ch, v, id); err != nil {
			m.log.Fatalf("%v", err)
		}
	}
	chain := m.chain(q.Listener)
	if !external(chain) && !m.checking(q.Listener) {
		// a verdict may wait for lookup: decide out of order
		go func() { answer(Decide(chain, m.has, q)) }()
		return
	}
	s := m.sessionOf(q.Session.ID, q.Listener, true)
	s.enqueue(func() { answer(s.query(q)) })
}

func (m *MFA) message(ch *proto.Channel, id uint32, msg *proto.SMTPFilterMessage) {
	reply := func(answer proto.Message, f *os.File) {
		msg.File().Close()
		err := m.child.Send(ch, answer, id)
		if f != nil {
			f.Close()
		}
		if err != nil {
			m.log.Fatalf("%v", err)
		}
	}
	if !external(m.chain(msg.Listener)) && !m.checking(msg.Listener) {
		// a session mfa keeps no state of: the message is only signed
		go func() {
			stages := []messageStage{m.checks.sealStage(m, msg.Session, msg.Seal, nil, ""), m.checks.signStage(m, msg.Session, msg.Sign)}
			reply(runStages(msg.File(), msg.Size, stages, func() proto.MessageFate { return proto.MessageFate{} }))
		}()
		return
	}
	s := m.sessionOf(msg.Session, msg.Listener, true)
	s.enqueue(func() { reply(s.message(msg)) })
}

// checking reports whether the listener numbered id makes checks.
func (m *MFA) checking(id uint32) bool {
	return int(id) < len(m.cfg.Listeners) && len(m.cfg.Listeners[id].Checks) > 0
}

// parentDialer connects to a milter's unix socket through the parent:
// the socket is outside mfa's chroot.
func (m *MFA) parentDialer(f *config.Filter) func(ctx context.Context, network, address string) (net.Conn, error) {
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		timeout := f.Timeout
		if d, ok := ctx.Deadline(); ok {
			timeout = time.Until(d)
		}
		frames, err := m.child.Requests.Ask(m.child.Parent, &proto.MFAMilterConnect{Filter: uint32(f.ID)}, timeout)
		if err != nil {
			return nil, err
		}
		switch a := frames[0].Msg.(type) {
		case *proto.ParentMilterSocket:
			defer a.File().Close()
			return net.FileConn(a.File())
		case *proto.ParentMilterRefused:
			return nil, fmt.Errorf("%s %s: %s", network, address, a.Text)
		}
		return nil, fmt.Errorf("parent answered %s", frames[0].Type)
	}
}

// milterState records a milter's failure for show filters.
func (m *MFA) milterState(f *config.Filter, err error) {
	m.mu.Lock()
	m.milterErr[f.ID] = milterFailure{time.Now(), err.Error()}
	m.mu.Unlock()
}

// filterLines are the lines of smtpctl show filters: each filter's
// kind and state.
func (m *MFA) filterLines() []string {
	var lines []string
	for _, f := range m.cfg.Filters {
		switch f.Kind {
		case config.FilterBuiltin:
			lines = append(lines, fmt.Sprintf("%s\tbuiltin\t%s phase", f.Name, f.Phase))
		case config.FilterProc:
			lines = append(lines, m.procs[f.ID].line())
		case config.FilterMilter:
			s := fmt.Sprintf("%s\tmilter\t%s:%s", f.Name, f.MilterNetwork, f.MilterAddress)
			m.mu.Lock()
			if e, ok := m.milterErr[f.ID]; ok {
				s += fmt.Sprintf("\tlast error at %s: %s", e.at.UTC().Format(time.RFC3339), e.err)
			}
			m.mu.Unlock()
			lines = append(lines, s)
		}
	}
	return lines
}
