package proto

import (
	"fmt"
	"os"
	"strings"
	"time"
)

// Phase is the point of an SMTP session that mfa is asked about: the
// phases of OpenSMTPD's filter protocol, in session order.
type Phase uint8

// The filter phases.
const (
	PhaseConnect Phase = iota + 1
	PhaseHelo
	PhaseEhlo
	PhaseStartTLS
	PhaseAuth
	PhaseMail
	PhaseRcpt
	PhaseData
	PhaseCommit
	PhaseRset
	PhaseQuit
	PhaseNoop
	PhaseHelp
	PhaseWiz
	phaseEnd
)

// phaseNames are the names of the phases in OpenSMTPD's filter
// protocol (smtpd-filters(7)); the configuration of built-in filters
// says mail and rcpt for mail-from and rcpt-to.
var phaseNames = [...]string{
	PhaseConnect: "connect", PhaseHelo: "helo", PhaseEhlo: "ehlo", PhaseStartTLS: "starttls",
	PhaseAuth: "auth", PhaseMail: "mail-from", PhaseRcpt: "rcpt-to", PhaseData: "data",
	PhaseCommit: "commit", PhaseRset: "rset", PhaseQuit: "quit", PhaseNoop: "noop",
	PhaseHelp: "help", PhaseWiz: "wiz",
}

// String returns the phase's name in the filter protocol.
func (p Phase) String() string {
	if p >= PhaseConnect && p < phaseEnd {
		return phaseNames[p]
	}
	return fmt.Sprintf("phase(%d)", uint8(p))
}

// ParsePhase returns the phase named name in the filter protocol or in
// the configuration of built-in filters (mail, rcpt), or false.
func ParsePhase(name string) (Phase, bool) {
	switch name {
	case "mail":
		return PhaseMail, true
	case "rcpt":
		return PhaseRcpt, true
	}
	for p := PhaseConnect; p < phaseEnd; p++ {
		if phaseNames[p] == name {
			return p, true
		}
	}
	return 0, false
}

// Session describes the SMTP session a query is about.
type Session struct {
	ID     uint64
	Remote string // client IP address, "" for a local socket
	Local  bool   // from this host: loopback or the local socket
	Helo   string
	Auth   string // authenticated user, "" if none
	Sender string // MAIL FROM, "" for <> and before MAIL
	// Results are the results of the listener's checks known so far,
	// as "spf=pass fcrdns=fail", for the match rules that test them.
	Results string
}

func (s *Session) encode(w *Writer) {
	w.U64(s.ID)
	w.String(s.Remote)
	w.Bool(s.Local)
	w.String(s.Helo)
	w.String(s.Auth)
	w.String(s.Sender)
	w.String(s.Results)
}

func (s *Session) decode(r *Reader) {
	s.ID, s.Remote, s.Local = r.U64(), r.String(), r.Bool()
	s.Helo, s.Auth, s.Sender, s.Results = r.String(), r.String(), r.String(), r.String()
}

// Result returns the result of check in Results, or "".
func (s *Session) Result(check string) string {
	for _, kv := range strings.Fields(s.Results) {
		if k, v, ok := strings.Cut(kv, "="); ok && k == check {
			return v
		}
	}
	return ""
}

// SMTPFilterQuery asks mfa whether a session may go on at a phase.
type SMTPFilterQuery struct {
	Phase   Phase
	Session Session
	// Listener is the session's listener, by its place in the
	// configuration: mfa runs that listener's filter chain.
	Listener uint32
	// Param is what the phase is about: the HELO or EHLO name, the
	// AUTH mechanism, the MAIL or RCPT address, STARTTLS's and the
	// other commands' argument; "" for connect, data and commit.
	Param string
}

func (*SMTPFilterQuery) Type() Type { return TypeSMTPFilterQuery }
func (m *SMTPFilterQuery) Encode(w *Writer) {
	w.U8(uint8(m.Phase))
	m.Session.encode(w)
	w.U32(m.Listener)
	w.String(m.Param)
}
func (m *SMTPFilterQuery) Decode(r *Reader) {
	m.Phase = enum8(r, PhaseConnect, phaseEnd-1, "phase")
	m.Session.decode(r)
	m.Listener = r.U32()
	m.Param = r.String()
}

// Verdict is mfa's answer to a query.
type Verdict uint8

// The verdicts.
const (
	VerdictProceed Verdict = iota + 1
	VerdictReject
	VerdictTempfail
	VerdictDisconnect
)

// Reply is an SMTP reply: code, enhanced status and text.
type Reply struct {
	Code     uint32 // e.g. 550
	Enhanced string // e.g. "5.7.1"
	Text     string
}

func (rp *Reply) encode(w *Writer) {
	w.U32(rp.Code)
	w.String(rp.Enhanced)
	w.String(rp.Text)
}

func (rp *Reply) decode(r *Reader) {
	rp.Code, rp.Enhanced, rp.Text = r.U32(), r.String(), r.String()
	if rp.Code != 0 && (rp.Code < 200 || rp.Code > 599) {
		r.Fail(fmt.Errorf("%w: reply code %d", ErrBadFrame, rp.Code))
	}
}

// MFAFilterVerdict answers SMTPFilterQuery; Reply is set unless the
// verdict is VerdictProceed.
type MFAFilterVerdict struct {
	Verdict Verdict
	Reply   Reply
	// Rewrite, if not empty, replaces the query's Param (a filter's
	// rewrite of a HELO name or an address).
	Rewrite string
	// Junk marks the session's messages as spam (X-Spam: yes).
	Junk bool
	// Results are the session's check results so far, for
	// Session.Results.
	Results string
}

func (*MFAFilterVerdict) Type() Type { return TypeMFAFilterVerdict }
func (m *MFAFilterVerdict) Encode(w *Writer) {
	w.U8(uint8(m.Verdict))
	m.Reply.encode(w)
	w.String(m.Rewrite)
	w.Bool(m.Junk)
	w.String(m.Results)
}
func (m *MFAFilterVerdict) Decode(r *Reader) {
	m.Verdict = enum8(r, VerdictProceed, VerdictDisconnect, "verdict")
	m.Reply.decode(r)
	m.Rewrite = r.String()
	m.Junk = r.Bool()
	m.Results = r.String()
}

// SMTPExpandRcpt asks lookup to match a recipient against the rules and
// expand it into destinations.
type SMTPExpandRcpt struct {
	Session Session
	Rcpt    string
}

func (*SMTPExpandRcpt) Type() Type { return TypeSMTPExpandRcpt }
func (m *SMTPExpandRcpt) Encode(w *Writer) {
	m.Session.encode(w)
	w.String(m.Rcpt)
}
func (m *SMTPExpandRcpt) Decode(r *Reader) {
	m.Session.decode(r)
	m.Rcpt = r.String()
}

// QueueExpandRcpt asks lookup where a notification to rcpt goes; it is
// matched as mail from this host.
type QueueExpandRcpt struct{ SMTPExpandRcpt }

func (*QueueExpandRcpt) Type() Type { return TypeQueueExpandRcpt }

// Status is the outcome of a lookup or a delivery.
type Status uint8

// The outcomes. StatusDeferred is only a delivery's (DeliveryResult):
// the delivery was not tried, and should be at a given time, as when a
// destination's message rate has no turn for it sooner. It is not a
// failure: the envelope's retries, last error and delay warning stay
// as they were.
const (
	StatusOK Status = iota + 1
	StatusTempfail
	StatusPermfail
	StatusDeferred
)

// decodeStatus reads the status of a lookup's answer, which is never
// StatusDeferred.
func decodeStatus(r *Reader) Status { return enum8(r, StatusOK, StatusPermfail, "status") }

// Outcome is the status of an answer with the text that says why it is
// not StatusOK.
type Outcome struct {
	Status Status
	Text   string
}

func (o *Outcome) encode(w *Writer) {
	w.U8(uint8(o.Status))
	w.String(o.Text)
}

func (o *Outcome) decode(r *Reader) { o.Status, o.Text = decodeStatus(r), r.String() }

// Destination is one envelope a recipient expands to.
type Destination struct {
	Kind   string // envelope.MDA or envelope.MTA
	Rule   uint32
	Action string
	Dest   string
	User   string
	// Target is "|command" or "/file" for alias and .forward entries
	// that deliver to a program or a file, "" otherwise.
	Target string
	// Sender, if set, replaces the envelope sender: the SRS address of
	// mail forwarded to another domain.
	Sender string
}

// LookupExpandResult answers SMTPExpandRcpt, in several frames for a
// long expansion: all but the last have More set. Reply is set when the
// status is not StatusOK.
type LookupExpandResult struct {
	Status       Status
	Reply        Reply
	Destinations []Destination
	More         bool
}

func (*LookupExpandResult) Type() Type { return TypeLookupExpandResult }
func (m *LookupExpandResult) Encode(w *Writer) {
	w.U8(uint8(m.Status))
	m.Reply.encode(w)
	w.Bool(m.More)
	w.U32(uint32(len(m.Destinations)))
	for _, d := range m.Destinations {
		w.String(d.Kind)
		w.U32(d.Rule)
		w.String(d.Action)
		w.String(d.Dest)
		w.String(d.User)
		w.String(d.Target)
		w.String(d.Sender)
	}
}
func (m *LookupExpandResult) Decode(r *Reader) {
	m.Status = decodeStatus(r)
	m.Reply.decode(r)
	m.More = r.Bool()
	n := r.Count(24, "destinations")
	m.Destinations = make([]Destination, 0, n)
	for range n {
		m.Destinations = append(m.Destinations, Destination{
			Kind: r.String(), Rule: r.U32(), Action: r.String(), Dest: r.String(), User: r.String(), Target: r.String(), Sender: r.String(),
		})
	}
}

// SMTPMessageCreate asks queue for a new message and its body file.
type SMTPMessageCreate struct{}

func (*SMTPMessageCreate) Type() Type     { return TypeSMTPMessageCreate }
func (*SMTPMessageCreate) Encode(*Writer) {}
func (*SMTPMessageCreate) Decode(*Reader) {}

// QueueMessageCreated answers SMTPMessageCreate with the message id and
// the body file, open for writing.
type QueueMessageCreated struct {
	fileField
	MsgID uint32
}

// NewQueueMessageCreated returns a QueueMessageCreated carrying f.
func NewQueueMessageCreated(msgid uint32, f *os.File) *QueueMessageCreated {
	return &QueueMessageCreated{fileField{f}, msgid}
}

func (*QueueMessageCreated) Type() Type         { return TypeQueueMessageCreated }
func (m *QueueMessageCreated) Encode(w *Writer) { w.U32(m.MsgID) }
func (m *QueueMessageCreated) Decode(r *Reader) { m.MsgID = r.U32() }

// SMTPEnvelopeSubmit adds an envelope, in envelope.Marshal's text form,
// to a message being received.
type SMTPEnvelopeSubmit struct {
	MsgID    uint32
	Envelope []byte
}

func (*SMTPEnvelopeSubmit) Type() Type { return TypeSMTPEnvelopeSubmit }
func (m *SMTPEnvelopeSubmit) Encode(w *Writer) {
	w.U32(m.MsgID)
	w.Bytes(m.Envelope)
}
func (m *SMTPEnvelopeSubmit) Decode(r *Reader) { m.MsgID, m.Envelope = r.U32(), r.Bytes() }

// SMTPMessageCommit asks queue to make a message durable; smtp answers
// 250 only after QueueMessageCommitted.
type SMTPMessageCommit struct {
	MsgID uint32
	// Quarantine, if set, is why the message is kept out of delivery
	// (a milter's quarantine): it is committed to the quarantine.
	Quarantine string
}

func (*SMTPMessageCommit) Type() Type { return TypeSMTPMessageCommit }
func (m *SMTPMessageCommit) Encode(w *Writer) {
	w.U32(m.MsgID)
	w.String(m.Quarantine)
}
func (m *SMTPMessageCommit) Decode(r *Reader) { m.MsgID, m.Quarantine = r.U32(), r.String() }

// QueueMessageCommitted says a message is on disk for good.
type QueueMessageCommitted struct{ MsgID uint32 }

func (*QueueMessageCommitted) Type() Type         { return TypeQueueMessageCommitted }
func (m *QueueMessageCommitted) Encode(w *Writer) { w.U32(m.MsgID) }
func (m *QueueMessageCommitted) Decode(r *Reader) { m.MsgID = r.U32() }

// SMTPMessageRollback drops a message that will not be committed.
type SMTPMessageRollback struct{ MsgID uint32 }

func (*SMTPMessageRollback) Type() Type         { return TypeSMTPMessageRollback }
func (m *SMTPMessageRollback) Encode(w *Writer) { w.U32(m.MsgID) }
func (m *SMTPMessageRollback) Decode(r *Reader) { m.MsgID = r.U32() }

// QueueFailure answers a create or commit that failed; the client gets
// a temporary failure.
type QueueFailure struct {
	MsgID uint32
	Reply Reply
}

func (*QueueFailure) Type() Type { return TypeQueueFailure }
func (m *QueueFailure) Encode(w *Writer) {
	w.U32(m.MsgID)
	m.Reply.encode(w)
}
func (m *QueueFailure) Decode(r *Reader) {
	m.MsgID = r.U32()
	m.Reply.decode(r)
}

// envelopeBody is an envelope, in envelope.Marshal's text form, with
// its message open for reading as the descriptor.
type envelopeBody struct {
	fileField
	Envelope []byte
}

func (m *envelopeBody) Encode(w *Writer) { w.Bytes(m.Envelope) }
func (m *envelopeBody) Decode(r *Reader) { m.Envelope = r.Bytes() }

// QueueDeliverLocal asks the parent to deliver an envelope locally.
type QueueDeliverLocal struct{ envelopeBody }

// NewQueueDeliverLocal returns a QueueDeliverLocal carrying body.
func NewQueueDeliverLocal(evp []byte, body *os.File) *QueueDeliverLocal {
	return &QueueDeliverLocal{envelopeBody{fileField{body}, evp}}
}

func (*QueueDeliverLocal) Type() Type { return TypeQueueDeliverLocal }

// DeliveryResult is the outcome of one delivery attempt.
type DeliveryResult struct {
	EvpID  uint64
	Status Status
	Text   string
	// Retry is when the envelope is to be tried again: set with
	// StatusDeferred, and only then.
	Retry time.Time
}

func (d *DeliveryResult) encode(w *Writer) {
	w.U64(d.EvpID)
	w.U8(uint8(d.Status))
	w.String(d.Text)
	w.Time(d.Retry)
}

func (d *DeliveryResult) decode(r *Reader) {
	d.EvpID = r.U64()
	d.Status = enum8(r, StatusOK, StatusDeferred, "delivery status")
	d.Text = r.String()
	d.Retry = r.Time()
	if r.Err() == nil && (d.Status == StatusDeferred) == d.Retry.IsZero() {
		// a deferral without a time would leave the envelope to wait
		// for nothing, a time without a deferral is a confused sender
		r.Fail(fmt.Errorf("%w: delivery status %d with retry time %d", ErrBadFrame, d.Status, d.Retry.UnixNano()))
	}
}

// ParentDeliveryResult tells queue how a local delivery went.
type ParentDeliveryResult struct{ DeliveryResult }

func (*ParentDeliveryResult) Type() Type         { return TypeParentDeliveryResult }
func (m *ParentDeliveryResult) Encode(w *Writer) { m.encode(w) }
func (m *ParentDeliveryResult) Decode(r *Reader) { m.decode(r) }

// ParentMDADeliver hands an mda process one delivery with its message
// and the account it runs as, which the parent resolved.
type ParentMDADeliver struct {
	envelopeBody
	Account Account
}

// Account is a local user: a delivery runs as it, in its directory.
type Account struct {
	Name, Directory string
	UID, GID        uint32
}

func (a *Account) encode(w *Writer) {
	w.String(a.Name)
	w.String(a.Directory)
	w.U32(a.UID)
	w.U32(a.GID)
}

func (a *Account) decode(r *Reader) {
	*a = Account{Name: r.String(), Directory: r.String(), UID: r.U32(), GID: r.U32()}
}

// NewParentMDADeliver returns a ParentMDADeliver carrying body.
func NewParentMDADeliver(evp []byte, acct Account, body *os.File) *ParentMDADeliver {
	return &ParentMDADeliver{envelopeBody{fileField{body}, evp}, acct}
}

func (*ParentMDADeliver) Type() Type { return TypeParentMDADeliver }
func (m *ParentMDADeliver) Encode(w *Writer) {
	m.envelopeBody.Encode(w)
	m.Account.encode(w)
}
func (m *ParentMDADeliver) Decode(r *Reader) {
	m.envelopeBody.Decode(r)
	m.Account.decode(r)
}

// MDADeliveryResult is an mda process's outcome of one delivery.
type MDADeliveryResult struct{ DeliveryResult }

func (*MDADeliveryResult) Type() Type         { return TypeMDADeliveryResult }
func (m *MDADeliveryResult) Encode(w *Writer) { m.encode(w) }
func (m *MDADeliveryResult) Decode(r *Reader) { m.decode(r) }

// LookupForwardOpen asks the parent for a user's ~/.forward, which only
// the parent may open.
type LookupForwardOpen struct {
	User string
	UID  uint32
	Dir  string
}

func (*LookupForwardOpen) Type() Type { return TypeLookupForwardOpen }
func (m *LookupForwardOpen) Encode(w *Writer) {
	w.String(m.User)
	w.U32(m.UID)
	w.String(m.Dir)
}
func (m *LookupForwardOpen) Decode(r *Reader) { m.User, m.UID, m.Dir = r.String(), r.U32(), r.String() }

// ParentForwardFile answers LookupForwardOpen with the open file.
type ParentForwardFile struct{ fileField }

// NewParentForwardFile returns a ParentForwardFile carrying f.
func NewParentForwardFile(f *os.File) *ParentForwardFile { return &ParentForwardFile{fileField{f}} }

func (*ParentForwardFile) Type() Type     { return TypeParentForwardFile }
func (*ParentForwardFile) Encode(*Writer) {}
func (*ParentForwardFile) Decode(*Reader) {}

// ParentForwardNone answers LookupForwardOpen when there is no file to
// use: StatusOK means the user has none, StatusTempfail that it could
// not be read now.
type ParentForwardNone struct{ Outcome }

func (*ParentForwardNone) Type() Type         { return TypeParentForwardNone }
func (m *ParentForwardNone) Encode(w *Writer) { m.encode(w) }
func (m *ParentForwardNone) Decode(r *Reader) { m.decode(r) }

// ParentTablesReload asks lookup to read its file tables again; Name
// names one table, or is empty for all.
type ParentTablesReload struct{ Name string }

func (*ParentTablesReload) Type() Type         { return TypeParentTablesReload }
func (m *ParentTablesReload) Encode(w *Writer) { w.String(m.Name) }
func (m *ParentTablesReload) Decode(r *Reader) { m.Name = r.String() }

// TableKey says how a key is looked up in a table.
type TableKey uint8

// The kinds of key: a plain key (lowercased), an IP address matched
// against addresses and networks, a mail address matched whole, by
// domain or by the catch-all.
const (
	TableKeyPlain TableKey = iota + 1
	TableKeyIP
	TableKeyAddress
)

// MFATableQuery asks lookup whether Key is in the table Table (its
// index in the configuration): mfa holds no table contents itself.
type MFATableQuery struct {
	Table uint32
	Kind  TableKey
	Key   string
}

func (*MFATableQuery) Type() Type { return TypeMFATableQuery }
func (m *MFATableQuery) Encode(w *Writer) {
	w.U32(m.Table)
	w.U8(uint8(m.Kind))
	w.String(m.Key)
}
func (m *MFATableQuery) Decode(r *Reader) {
	m.Table, m.Kind, m.Key = r.U32(), enum8(r, TableKeyPlain, TableKeyAddress, "table key"), r.String()
}

// LookupTableResult answers MFATableQuery: StatusOK found, StatusPermfail
// not found, StatusTempfail the table cannot tell now (Text says why).
type LookupTableResult struct{ Outcome }

func (*LookupTableResult) Type() Type         { return TypeLookupTableResult }
func (m *LookupTableResult) Encode(w *Writer) { m.encode(w) }
func (m *LookupTableResult) Decode(r *Reader) { m.decode(r) }

// ParentAccountQuery asks lookup for the account a local delivery of
// action Action to user User runs as: the parent runs no rule engine
// and reads no table.
type ParentAccountQuery struct {
	Action, User string
}

func (*ParentAccountQuery) Type() Type { return TypeParentAccountQuery }
func (m *ParentAccountQuery) Encode(w *Writer) {
	w.String(m.Action)
	w.String(m.User)
}
func (m *ParentAccountQuery) Decode(r *Reader) { m.Action, m.User = r.String(), r.String() }

// LookupAccountResult answers ParentAccountQuery: with StatusOK the
// account; StatusPermfail, no such user; StatusTempfail, the userbase
// cannot tell now. Text says why.
type LookupAccountResult struct {
	Outcome
	Account Account
}

func (*LookupAccountResult) Type() Type { return TypeLookupAccountResult }
func (m *LookupAccountResult) Encode(w *Writer) {
	m.encode(w)
	m.Account.encode(w)
}
func (m *LookupAccountResult) Decode(r *Reader) {
	m.decode(r)
	m.Account.decode(r)
}
