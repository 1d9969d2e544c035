package mfa

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"smtpd/internal/config"
	"smtpd/internal/mfa/milter"
	"smtpd/internal/mfa/procfilter"
	"smtpd/proto"
)

// session is mfa's state of one SMTP session on a listener whose chain
// has filter processes or milters. Its events, queries and message run
// one after the other, in the order smtp sent them, on the session's
// own goroutine: a filter sees a session's reports and requests in
// order, and a slow filter holds up only the sessions it filters.
type session struct {
	m        *MFA
	id       uint64
	listener *config.Listener
	chain    []*config.Filter

	mu      sync.Mutex
	jobs    []func()
	wake    chan struct{}
	closing bool

	// gens binds the session to the start of each filter process it
	// began with: a process started later never saw its beginning, so
	// it is failed for this session
	gens map[int]uint32
	// failed lists the filters that failed and were let pass (failure
	// "proceed"): they are skipped for the rest of the session
	failed map[int]bool
	// milters are the session's milter connections, done those that
	// accepted the current message (no more calls until the next)
	milters map[int]*milter.Session
	done    map[int]bool
	// what the link and transaction events told
	rdns, src, msgid, auth, authType string
	tls                              *milter.TLS
	junk                             bool
	// discard and quarantine are the milters' word on the current
	// message: drop it, or keep it out of delivery
	discard    bool
	quarantine string
	// checked is what the checks learnt, authSummary their results
	// for the message's log line
	checked     authState
	authSummary string
}

func (m *MFA) newSession(id uint64, l *config.Listener) *session {
	s := &session{
		m: m, id: id, listener: l, wake: make(chan struct{}, 1),
		gens: map[int]uint32{}, failed: map[int]bool{},
		milters: map[int]*milter.Session{}, done: map[int]bool{},
	}
	if l != nil {
		s.chain = l.Filters
	}
	go s.run()
	return s
}

// enqueue adds a job; the session's goroutine runs jobs in order.
func (s *session) enqueue(job func()) {
	s.mu.Lock()
	s.jobs = append(s.jobs, job)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// close ends the goroutine once the jobs queued so far ran.
func (s *session) close() {
	s.enqueue(func() {
		s.mu.Lock()
		s.closing = true
		s.mu.Unlock()
	})
}

func (s *session) run() {
	for {
		s.mu.Lock()
		jobs := s.jobs
		s.jobs = nil
		closing := s.closing
		s.mu.Unlock()
		if closing {
			s.closeMilters()
			return
		}
		if len(jobs) == 0 {
			<-s.wake
			continue
		}
		for _, job := range jobs {
			job()
		}
	}
}

// event passes a report event to the session's filter processes and
// keeps what the milters will need.
func (s *session) event(e *proto.SMTPFilterEvent) {
	switch e.Event {
	case "link-connect":
		if len(e.Params) >= 3 {
			s.rdns, s.src = e.Params[0], e.Params[2]
		}
		for _, f := range s.chain {
			if f.Kind == config.FilterProc {
				if _, gen, err := s.m.procs[f.ID].acquire(context.Background()); err == nil {
					s.gens[f.ID] = gen
				}
			}
		}
	case "link-tls":
		if len(e.Params) >= 1 {
			// version:cipher:bits
			f := strings.Split(e.Params[0], ":")
			t := &milter.TLS{Version: f[0]}
			if len(f) == 3 {
				t.Cipher = f[1]
				t.CipherBits, _ = strconv.Atoi(f[2])
			}
			s.tls = t
		}
	case "link-auth":
		if len(e.Params) >= 2 && e.Params[0] == "pass" {
			s.auth = e.Params[1]
		}
	case "protocol-client":
		// the mechanism of the AUTH command, for the milters' {auth_type}
		if len(e.Params) >= 1 {
			if verb, arg, ok := strings.Cut(e.Params[0], " "); ok && strings.EqualFold(verb, "AUTH") {
				s.authType, _, _ = strings.Cut(arg, " ")
			}
		}
	case "tx-begin":
		if len(e.Params) >= 1 {
			s.msgid = e.Params[0]
		}
	case "tx-reset", "tx-rollback":
		s.abortMilters()
	}
	// a failed write breaks the process, which its watcher reports
	s.report(e.Time, e.Event, e.Params...)
}

// proc returns the session's process of filter f, or nil if the one it
// began with is gone.
func (s *session) proc(f *config.Filter) *procfilter.Conn {
	gen, ok := s.gens[f.ID]
	if !ok {
		return nil
	}
	return s.m.procs[f.ID].current(gen)
}

// failure is the verdict when filter f fails: its failure policy. With
// "proceed" the filter is left out for the rest of the session.
func (s *session) failure(f *config.Filter, err error) *proto.MFAFilterVerdict {
	s.m.log.Warnf("%016x: filter %s failed: %v", s.id, f.Name, err)
	switch f.Failure {
	case config.FailProceed:
		s.failed[f.ID] = true
		return nil
	case config.FailReject:
		return &proto.MFAFilterVerdict{Verdict: proto.VerdictReject, Reply: proto.Reply{Code: 550, Enhanced: "5.7.1", Text: "Rejected: filter " + f.Name + " failed"}}
	}
	return &proto.MFAFilterVerdict{Verdict: proto.VerdictTempfail, Reply: proto.Reply{Code: 451, Enhanced: "4.7.0", Text: "Temporary failure in a filter, try again later"}}
}

// query runs a phase through the chain, in order, until a filter
// refuses; a rewrite changes what the filters after it see.
func (s *session) query(q *proto.SMTPFilterQuery) *proto.MFAFilterVerdict {
	v := s.runQuery(q)
	v.Results = s.knownResults()
	return v
}

func (s *session) runQuery(q *proto.SMTPFilterQuery) *proto.MFAFilterVerdict {
	if v := s.check(q); v != nil {
		return v
	}
	verdict := &proto.MFAFilterVerdict{Verdict: proto.VerdictProceed}
	for _, f := range s.chain {
		if s.failed[f.ID] {
			continue
		}
		var v *proto.MFAFilterVerdict
		switch f.Kind {
		case config.FilterBuiltin:
			v = decideBuiltin(f, s.m.has, q, s.resultOf)
			if v != nil && v.Verdict == proto.VerdictProceed {
				s.junk, verdict.Junk = true, true
				v = nil
			}
		case config.FilterProc:
			v = s.queryProc(f, q, verdict)
		case config.FilterMilter:
			v = s.queryMilter(f, q)
		}
		if v != nil {
			v.Junk = v.Junk || verdict.Junk
			return v
		}
	}
	verdict.Junk = verdict.Junk || s.junk
	return verdict
}

// procParams are the parameters of a filter request at q's phase
// (smtpd-filters(7)): connect gives the client's address without its
// port, the phases without an argument none.
func (s *session) procParams(q *proto.SMTPFilterQuery) []string {
	switch q.Phase {
	case proto.PhaseConnect:
		src := s.src
		if host, _, err := net.SplitHostPort(src); err == nil {
			src = host
			if strings.Contains(host, ":") {
				src = "[" + host + "]"
			}
		} else if strings.HasPrefix(src, "unix:") {
			src = "local"
		}
		return []string{s.rdns, src}
	case proto.PhaseHelo, proto.PhaseEhlo, proto.PhaseAuth, proto.PhaseMail, proto.PhaseRcpt:
		return []string{q.Param}
	}
	return nil
}

// rewritten is the new argument a filter's rewrite gives a phase, or
// false where the phase takes none. An address comes as "<address>
// [parameters]", as a client would write it; the parameters are not
// taken.
func rewritten(p proto.Phase, param string) (string, bool) {
	switch p {
	case proto.PhaseHelo, proto.PhaseEhlo:
		return strings.TrimSpace(param), strings.TrimSpace(param) != ""
	case proto.PhaseMail, proto.PhaseRcpt:
		addr, _, _ := strings.Cut(strings.TrimSpace(param), " ")
		if len(addr) < 2 || addr[0] != '<' || addr[len(addr)-1] != '>' {
			return "", false
		}
		return addr[1 : len(addr)-1], true
	}
	return "", false
}

// procResponse names a filter's answer in filter-response events.
var procResponse = map[procfilter.Action]string{
	procfilter.Proceed: "proceed", procfilter.Junk: "junk", procfilter.Reject: "reject",
	procfilter.Disconnect: "disconnect", procfilter.Rewrite: "rewrite", procfilter.Report: "report",
}

// reportResponse tells the session's filters that registered
// filter-response what one of them answered.
func (s *session) reportResponse(q *proto.SMTPFilterQuery, r procfilter.Result) {
	phase := q.Phase.String()
	switch q.Phase {
	case proto.PhaseConnect:
		phase = "connected"
	case proto.PhaseStartTLS:
		phase = "tls"
	}
	params := []string{phase, procResponse[r.Action]}
	if r.Param != "" {
		params = append(params, r.Param)
	}
	s.report(time.Now(), "filter-response", params...)
}

// report passes an event mfa makes itself to the session's filter
// processes that registered it.
func (s *session) report(t time.Time, event string, params ...string) {
	for _, f := range s.chain {
		if f.Kind != config.FilterProc || s.failed[f.ID] {
			continue
		}
		if c := s.proc(f); c != nil && c.HasEvent(event) {
			c.Report(t, event, s.id, params...)
		}
	}
}

func (s *session) queryProc(f *config.Filter, q *proto.SMTPFilterQuery, verdict *proto.MFAFilterVerdict) *proto.MFAFilterVerdict {
	if q.Phase == proto.PhaseHelp || q.Phase == proto.PhaseWiz {
		// OpenSMTPD never asks filters about these
		return nil
	}
	// a process that did not see the session begin (it started since,
	// or was down then) cannot filter it
	c := s.proc(f)
	if c != nil && !c.HasPhase(q.Phase.String()) {
		return nil
	}
	var r procfilter.Result
	err := fmt.Errorf("filter %s: %w", f.Name, errFilterDown)
	if c != nil {
		r, err = c.Filter(context.Background(), time.Now(), q.Phase.String(), s.id, s.procParams(q)...)
	}
	if err != nil {
		if q.Phase == proto.PhaseRset || q.Phase == proto.PhaseNoop || q.Phase == proto.PhaseQuit {
			// RFC 5321 §4.1.1.5, §4.1.1.9, §4.1.1.10: these succeed;
			// a broken filter costs the next phase that may fail
			return nil
		}
		return s.failure(f, err)
	}
	s.reportResponse(q, r)
	switch r.Action {
	case procfilter.Proceed:
	case procfilter.Junk:
		s.junk, verdict.Junk = true, true
	case procfilter.Rewrite:
		if param, ok := rewritten(q.Phase, r.Param); ok {
			q.Param, verdict.Rewrite = param, param
		} else {
			s.m.log.Warnf("%016x: filter %s rewrote %s to %q: ignored", s.id, f.Name, q.Phase, sanitizeLog(r.Param))
		}
	case procfilter.Report:
		s.m.log.Infof("%016x: filter %s reports: %s", s.id, f.Name, r.Param)
	case procfilter.Reject, procfilter.Disconnect:
		v := &proto.MFAFilterVerdict{Verdict: proto.VerdictReject, Reply: proto.Reply{Code: uint32(r.Code), Enhanced: r.Enhanced, Text: r.Text}}
		switch {
		case r.Action == procfilter.Disconnect || r.Code == 421:
			v.Verdict = proto.VerdictDisconnect
		case r.Code/100 == 4:
			v.Verdict = proto.VerdictTempfail
		}
		return v
	}
	return nil
}

// milterSession returns the session's connection to milter f, opened
// at the first phase the milter sees.
func (s *session) milterSession(f *config.Filter) (*milter.Session, error) {
	if ms := s.milters[f.ID]; ms != nil {
		return ms, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.Timeout)
	defer cancel()
	ms, err := s.m.milters[f.ID].Session(ctx)
	if err != nil {
		return nil, err
	}
	s.milters[f.ID] = ms
	host, port, family := "", uint16(0), milter.FamilyUnknown
	if h, p, err := net.SplitHostPort(s.src); err == nil {
		n, _ := strconv.Atoi(p)
		host, port, family = h, uint16(n), milter.FamilyInet
		if strings.Contains(h, ":") {
			family = milter.FamilyInet6
		}
	}
	rdns := s.rdns
	if rdns == "<unknown>" {
		rdns = ""
	}
	v, err := ms.Connect(rdns, host, port, family)
	if err != nil {
		return nil, err
	}
	if v.Action != milter.Continue {
		// a verdict at connect stands for the whole session
		return ms, &connectVerdict{v}
	}
	return ms, nil
}

// connectVerdict carries a milter's refusal at connect through the
// error path of milterSession.
type connectVerdict struct{ v milter.Verdict }

func (e *connectVerdict) Error() string { return fmt.Sprintf("milter verdict %d", e.v.Action) }

func (s *session) queryMilter(f *config.Filter, q *proto.SMTPFilterQuery) *proto.MFAFilterVerdict {
	if s.done[f.ID] {
		return nil
	}
	var v milter.Verdict
	ms, err := s.milterSession(f)
	var mv *connectVerdict
	switch {
	case errors.As(err, &mv):
		v = mv.v
	case err != nil:
		return s.milterFailure(f, err)
	default:
		switch q.Phase {
		case proto.PhaseConnect:
			return nil // asked when the session opened
		case proto.PhaseHelo, proto.PhaseEhlo:
			v, err = ms.Helo(q.Param, s.tls)
		case proto.PhaseMail:
			m := milter.MailMacros{QueueID: s.msgid, AuthUser: s.auth}
			if s.auth != "" {
				m.AuthType = s.authType
			}
			v, err = ms.Mail(q.Param, nil, m)
		case proto.PhaseRcpt:
			v, err = ms.Rcpt(q.Param, nil)
		case proto.PhaseData:
			v, err = ms.Data()
		default:
			return nil
		}
		if err != nil {
			return s.milterFailure(f, err)
		}
	}
	return s.milterVerdict(f, v)
}

// milterVerdict turns a milter's answer into a verdict, nil to go on.
func (s *session) milterVerdict(f *config.Filter, v milter.Verdict) *proto.MFAFilterVerdict {
	reply := proto.Reply{Code: uint32(v.Code), Enhanced: v.Enhanced, Text: v.Text}
	switch v.Action {
	case milter.Accept:
		s.done[f.ID] = true
	case milter.Reject:
		return &proto.MFAFilterVerdict{Verdict: proto.VerdictReject, Reply: reply}
	case milter.Tempfail:
		return &proto.MFAFilterVerdict{Verdict: proto.VerdictTempfail, Reply: reply}
	case milter.Reply:
		verdict := proto.VerdictReject
		if v.Code/100 == 4 {
			verdict = proto.VerdictTempfail
		}
		if v.Code == 421 {
			verdict = proto.VerdictDisconnect
		}
		return &proto.MFAFilterVerdict{Verdict: verdict, Reply: reply}
	case milter.Discard:
		// the message is taken and dropped; what follows of it needs
		// no more filtering
		s.done[f.ID] = true
		s.discard = true
	}
	return nil
}

// milterFailure drops the session's broken connection to milter f and
// applies its failure policy.
func (s *session) milterFailure(f *config.Filter, err error) *proto.MFAFilterVerdict {
	if ms := s.milters[f.ID]; ms != nil {
		ms.Close()
		delete(s.milters, f.ID)
	}
	s.m.stats.Increment("mfa.filter."+f.Name+".errors", 1)
	s.m.milterState(f, err)
	v := s.failure(f, err)
	if v == nil {
		s.failed[f.ID] = true
	}
	return v
}

// abortMilters ends the current transaction in every milter.
func (s *session) abortMilters() {
	for id, ms := range s.milters {
		if err := ms.Abort(); err != nil {
			ms.Close()
			delete(s.milters, id)
		}
		delete(s.done, id)
	}
	s.discard, s.quarantine = false, ""
}

func (s *session) closeMilters() {
	for id, ms := range s.milters {
		ms.Close()
		delete(s.milters, id)
	}
}

// memFile makes an anonymous file in memory for a rewritten message:
// mfa runs in an empty chroot, and the queue gets the content copied
// into its own body file.
func memFile() (*os.File, error) {
	fd, err := unix.MemfdCreate("smtpd-message", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	return os.NewFile(uintptr(fd), "message"), nil
}

// message passes a received message through the data-line filters and
// milters of the chain, each reading what the one before wrote, and
// answers with the verdict or the new message (whose file the caller
// closes once sent).
func (s *session) message(m *proto.SMTPFilterMessage) (proto.Message, *os.File) {
	// the chain's filters in order, then the checks (which see the
	// message as filtered), then the signatures (over all of it)
	var stages []messageStage
	for _, f := range s.chain {
		if !s.failed[f.ID] && !s.done[f.ID] {
			stages = append(stages, func(in *os.File, size int64) (*os.File, *proto.MFAFilterVerdict) {
				return s.filterStage(f, in, size)
			})
		}
	}
	stages = append(stages, s.messageChecks,
		func(in *os.File, size int64) (*os.File, *proto.MFAFilterVerdict) {
			// the checks ran by now: seal over their results
			return s.m.checks.sealStage(s.m, s.id, m.Seal, s.checked.arc, s.checked.results)(in, size)
		},
		s.m.checks.signStage(s.m, s.id, m.Sign))
	return runStages(m.File(), m.Size, stages, func() proto.MessageFate {
		return proto.MessageFate{Discard: s.discard, Quarantine: s.quarantine, Auth: s.authSummary}
	})
}

// messageStage is one step a message goes through: it gives a new
// version of the message (nil to keep it) or a verdict that ends the
// transaction.
type messageStage func(in *os.File, size int64) (*os.File, *proto.MFAFilterVerdict)

// runStages runs the stages, each reading what the one before wrote,
// and gives the answer to SMTPFilterMessage and the file it carries, if
// any, which the caller closes once sent. fate tells, once the stages
// ran, what they decided.
func runStages(in *os.File, size int64, stages []messageStage, fate func() proto.MessageFate) (proto.Message, *os.File) {
	cur := in
	var rewritten *os.File
	for _, stage := range stages {
		out, v := stage(cur, size)
		if v != nil {
			if rewritten != nil {
				rewritten.Close()
			}
			return &proto.MFAMessageVerdict{Verdict: v.Verdict, Reply: v.Reply}, nil
		}
		if out == nil {
			continue
		}
		end, err := out.Seek(0, io.SeekEnd)
		if err != nil {
			out.Close()
			continue
		}
		if rewritten != nil {
			rewritten.Close()
		}
		rewritten, cur, size = out, out, end
	}
	if rewritten == nil {
		return &proto.MFAMessageVerdict{Verdict: proto.VerdictProceed, Fate: fate()}, nil
	}
	return proto.NewMFAMessageRewritten(rewritten, size, fate()), rewritten
}

// signFailure is the reply when a message cannot be signed: the
// daemon's trouble, a temporary failure.
var signFailure = proto.Reply{Code: 451, Enhanced: "4.3.0", Text: "Temporary failure signing the message, try again later"}

// filterStage runs one filter of the chain on the message: the new
// message if the filter changed it, or a verdict that ends the
// transaction, or neither.
func (s *session) filterStage(f *config.Filter, in *os.File, size int64) (*os.File, *proto.MFAFilterVerdict) {
	switch f.Kind {
	case config.FilterProc:
		c := s.proc(f)
		if c == nil {
			return nil, s.failure(f, fmt.Errorf("filter %s: %w", f.Name, errFilterDown))
		}
		if !c.HasPhase("data-line") {
			return nil, nil
		}
		out, err := memFile()
		if err == nil {
			if err = c.DataLines(context.Background(), time.Now(), s.id, io.NewSectionReader(in, 0, size), &checkedWriter{w: out}); err != nil {
				out.Close()
			}
		}
		switch {
		case errors.Is(err, errMalformedData):
			return nil, s.malformed(f, err)
		case err != nil:
			return nil, s.failure(f, err)
		}
		return out, nil
	case config.FilterMilter:
		ms := s.milters[f.ID]
		if ms == nil {
			return nil, nil
		}
		out, err := memFile()
		if err != nil {
			return nil, s.failure(f, err)
		}
		res, err := ms.Message(io.NewSectionReader(in, 0, size), out)
		if err != nil {
			out.Close()
			if errors.Is(err, milter.ErrMalformed) {
				return nil, s.malformed(f, err)
			}
			return nil, s.milterFailure(f, err)
		}
		if res.Quarantine != "" {
			s.quarantine = fmt.Sprintf("milter %s: %s", f.Name, sanitizeLog(res.Quarantine))
		}
		if v := s.milterVerdict(f, res.Verdict); v != nil || !res.Changed {
			out.Close()
			return nil, v
		}
		return out, nil
	}
	return nil, nil
}

// errMalformedData is a message line from a filter that could not be
// written to the spool as it is: a NUL or a bare CR, which receivers
// read differently (the stuff of SMTP smuggling).
var errMalformedData = errors.New("malformed message data")

// checkedWriter passes a filter's message lines on, refusing NUL and
// CR not followed by LF.
type checkedWriter struct {
	w  io.Writer
	cr bool // the last byte written was a CR
}

func (c *checkedWriter) Write(p []byte) (int, error) {
	for _, b := range p {
		switch {
		case c.cr && b != '\n', b == 0:
			return 0, fmt.Errorf("%w: a NUL or a bare CR", errMalformedData)
		}
		c.cr = b == '\r'
	}
	return c.w.Write(p)
}

// malformed is the verdict when a filter made the message malformed:
// the transaction fails with 451 whatever the filter's failure policy,
// since neither a corrupt message nor the unfiltered one may go on.
func (s *session) malformed(f *config.Filter, err error) *proto.MFAFilterVerdict {
	s.m.log.Warnf("%016x: filter %s: %v", s.id, f.Name, err)
	s.m.stats.Increment("mfa.filter."+f.Name+".errors", 1)
	return &proto.MFAFilterVerdict{Verdict: proto.VerdictTempfail, Reply: proto.Reply{Code: 451, Enhanced: "4.7.0", Text: "Temporary failure in a filter, try again later"}}
}

// sanitizeLog keeps a filter's text on one log line.
func sanitizeLog(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' {
			return ' '
		}
		return r
	}, s)
}
