package proto

import (
	"os"
	"time"
)

// SMTPFilterEvent tells mfa what happened in a session whose listener
// runs filter processes or milters: the report events of OpenSMTPD's
// filter protocol (link-connect ... link-disconnect), in session order.
// No answer. mfa keeps a session's state from its link-connect to its
// link-disconnect.
type SMTPFilterEvent struct {
	Session  uint64
	Listener uint32
	Time     time.Time
	// Event is the event's name in the filter protocol.
	Event string
	// Params are the event's fields after the session id.
	Params []string
}

func (*SMTPFilterEvent) Type() Type { return TypeSMTPFilterEvent }
func (m *SMTPFilterEvent) Encode(w *Writer) {
	w.U64(m.Session)
	w.U32(m.Listener)
	w.Time(m.Time)
	w.String(m.Event)
	w.Strings(m.Params)
}
func (m *SMTPFilterEvent) Decode(r *Reader) {
	m.Session, m.Listener, m.Time, m.Event = r.U64(), r.U32(), r.Time(), r.String()
	m.Params = r.Strings("params")
}

// SMTPFilterMessage hands mfa a received message (its body file, read
// from offset 0, Size octets) to pass through the data-line filters and
// milters of the session's chain before it is committed.
type SMTPFilterMessage struct {
	fileField
	Session  uint64
	Listener uint32
	MsgID    uint32
	Size     int64
	// Sign are the DKIM keys (by their place in the configuration)
	// that sign the message once filtered, Seal those that add an ARC
	// set: those of the actions of its recipients.
	Sign, Seal []uint32
}

// NewSMTPFilterMessage returns an SMTPFilterMessage carrying f.
func NewSMTPFilterMessage(f *os.File, session uint64, listener, msgid uint32, size int64, sign, seal []uint32) *SMTPFilterMessage {
	return &SMTPFilterMessage{fileField{f}, session, listener, msgid, size, sign, seal}
}

func (*SMTPFilterMessage) Type() Type { return TypeSMTPFilterMessage }
func (m *SMTPFilterMessage) Encode(w *Writer) {
	w.U64(m.Session)
	w.U32(m.Listener)
	w.U32(m.MsgID)
	w.I64(m.Size)
	for _, keys := range [][]uint32{m.Sign, m.Seal} {
		w.U32(uint32(len(keys)))
		for _, k := range keys {
			w.U32(k)
		}
	}
}
func (m *SMTPFilterMessage) Decode(r *Reader) {
	m.Session, m.Listener, m.MsgID, m.Size = r.U64(), r.U32(), r.U32(), r.I64()
	for _, keys := range []*[]uint32{&m.Sign, &m.Seal} {
		if n := r.Count(4, "keys"); n > 0 {
			*keys = make([]uint32, n)
			for i := range *keys {
				(*keys)[i] = r.U32()
			}
		}
	}
}

// MessageFate is what the filters decided for a message they let
// pass: dropped after the 250 (a milter's discard), or kept out of
// delivery (a milter's quarantine, with its reason).
type MessageFate struct {
	Discard    bool
	Quarantine string
	// Auth sums up the checks of the message for its log line, such
	// as "spf=pass dkim=pass dmarc=pass".
	Auth string
}

func (f *MessageFate) encode(w *Writer) {
	w.Bool(f.Discard)
	w.String(f.Quarantine)
	w.String(f.Auth)
}

func (f *MessageFate) decode(r *Reader) {
	f.Discard, f.Quarantine, f.Auth = r.Bool(), r.String(), r.String()
}

// MFAMessageVerdict answers SMTPFilterMessage when the message is to
// be kept as it is, or refused.
type MFAMessageVerdict struct {
	Verdict Verdict
	Reply   Reply
	Fate    MessageFate
}

func (*MFAMessageVerdict) Type() Type { return TypeMFAMessageVerdict }
func (m *MFAMessageVerdict) Encode(w *Writer) {
	w.U8(uint8(m.Verdict))
	m.Reply.encode(w)
	m.Fate.encode(w)
}
func (m *MFAMessageVerdict) Decode(r *Reader) {
	m.Verdict = enum8(r, VerdictProceed, VerdictDisconnect, "verdict")
	m.Reply.decode(r)
	m.Fate.decode(r)
}

// MFAMessageRewritten answers SMTPFilterMessage when the filters
// changed the message: the file (read from offset 0, Size octets)
// replaces it.
type MFAMessageRewritten struct {
	fileField
	Size int64
	Fate MessageFate
}

// NewMFAMessageRewritten returns an MFAMessageRewritten carrying f.
func NewMFAMessageRewritten(f *os.File, size int64, fate MessageFate) *MFAMessageRewritten {
	return &MFAMessageRewritten{fileField{f}, size, fate}
}

func (*MFAMessageRewritten) Type() Type { return TypeMFAMessageRewritten }
func (m *MFAMessageRewritten) Encode(w *Writer) {
	w.I64(m.Size)
	m.Fate.encode(w)
}
func (m *MFAMessageRewritten) Decode(r *Reader) {
	m.Size = r.I64()
	m.Fate.decode(r)
}

// ParentFilterProcess hands mfa its end of a new filter process's
// standard input and output. Generation counts the starts of the
// filter, so that mfa's report of a broken one names which.
type ParentFilterProcess struct {
	fileField
	Filter     uint32
	Generation uint32
}

// NewParentFilterProcess returns a ParentFilterProcess carrying f.
func NewParentFilterProcess(f *os.File, filter, generation uint32) *ParentFilterProcess {
	return &ParentFilterProcess{fileField{f}, filter, generation}
}

func (*ParentFilterProcess) Type() Type { return TypeParentFilterProcess }
func (m *ParentFilterProcess) Encode(w *Writer) {
	w.U32(m.Filter)
	w.U32(m.Generation)
}
func (m *ParentFilterProcess) Decode(r *Reader) { m.Filter, m.Generation = r.U32(), r.U32() }

// MFAFilterBroken tells the parent that a filter process broke the
// protocol or stopped answering: the parent kills it and starts another
// after a backoff.
type MFAFilterBroken struct {
	Filter     uint32
	Generation uint32
	Reason     string
}

func (*MFAFilterBroken) Type() Type { return TypeMFAFilterBroken }
func (m *MFAFilterBroken) Encode(w *Writer) {
	w.U32(m.Filter)
	w.U32(m.Generation)
	w.String(m.Reason)
}
func (m *MFAFilterBroken) Decode(r *Reader) {
	m.Filter, m.Generation, m.Reason = r.U32(), r.U32(), r.String()
}

// ParentFilterExited tells mfa that a filter process ended (Reason says
// how) and when the next start is due.
type ParentFilterExited struct {
	Filter     uint32
	Generation uint32
	Reason     string
	Restart    time.Time
}

func (*ParentFilterExited) Type() Type { return TypeParentFilterExited }
func (m *ParentFilterExited) Encode(w *Writer) {
	w.U32(m.Filter)
	w.U32(m.Generation)
	w.String(m.Reason)
	w.Time(m.Restart)
}
func (m *ParentFilterExited) Decode(r *Reader) {
	m.Filter, m.Generation, m.Reason, m.Restart = r.U32(), r.U32(), r.String(), r.Time()
}

// ControlShowFilters asks for the state of every filter (smtpctl show
// filters); ControlFiltersQuery passes it on to mfa, which answers with
// MFAFilterLines.
type ControlShowFilters struct{}

func (*ControlShowFilters) Type() Type     { return TypeControlShowFilters }
func (*ControlShowFilters) Encode(*Writer) {}
func (*ControlShowFilters) Decode(*Reader) {}

// ControlFiltersQuery passes ControlShowFilters on to mfa.
type ControlFiltersQuery struct{}

func (*ControlFiltersQuery) Type() Type     { return TypeControlFiltersQuery }
func (*ControlFiltersQuery) Encode(*Writer) {}
func (*ControlFiltersQuery) Decode(*Reader) {}

// MFAFilterLines is mfa's account of its filters, one line each.
type MFAFilterLines struct{ TextLines }

func (*MFAFilterLines) Type() Type         { return TypeMFAFilterLines }
func (m *MFAFilterLines) Encode(w *Writer) { m.encode(w) }
func (m *MFAFilterLines) Decode(r *Reader) { m.decode(r) }

// QueueOverload tells smtp and control that the queue engaged or left
// overload mode: new mail from unauthenticated clients is refused.
type QueueOverload struct {
	On     bool
	Reason string
}

func (*QueueOverload) Type() Type { return TypeQueueOverload }
func (m *QueueOverload) Encode(w *Writer) {
	w.Bool(m.On)
	w.String(m.Reason)
}
func (m *QueueOverload) Decode(r *Reader) { m.On, m.Reason = r.Bool(), r.String() }

// MFAMilterConnect asks the parent to connect to the unix socket of a
// milter, which the chrooted mfa cannot reach; the parent answers with
// ParentMilterSocket or ParentMilterRefused.
type MFAMilterConnect struct{ Filter uint32 }

func (*MFAMilterConnect) Type() Type         { return TypeMFAMilterConnect }
func (m *MFAMilterConnect) Encode(w *Writer) { w.U32(m.Filter) }
func (m *MFAMilterConnect) Decode(r *Reader) { m.Filter = r.U32() }

// ParentMilterSocket is a connection to a milter's unix socket.
type ParentMilterSocket struct{ fileField }

// NewParentMilterSocket returns a ParentMilterSocket carrying f.
func NewParentMilterSocket(f *os.File) *ParentMilterSocket { return &ParentMilterSocket{fileField{f}} }

func (*ParentMilterSocket) Type() Type     { return TypeParentMilterSocket }
func (*ParentMilterSocket) Encode(*Writer) {}
func (*ParentMilterSocket) Decode(*Reader) {}

// ParentMilterRefused says why the parent could not connect to a
// milter.
type ParentMilterRefused struct{ Text string }

func (*ParentMilterRefused) Type() Type         { return TypeParentMilterRefused }
func (m *ParentMilterRefused) Encode(w *Writer) { w.String(m.Text) }
func (m *ParentMilterRefused) Decode(r *Reader) { m.Text = r.String() }

// ControlShowTable asks lookup for one lookup in a table (smtpctl show
// table NAME [SERVICE] KEY); ControlTableLookup passes it on to lookup,
// which answers with LookupTableLines.
type ControlShowTable struct{ Name, Service, Key string }

func (*ControlShowTable) Type() Type { return TypeControlShowTable }
func (m *ControlShowTable) Encode(w *Writer) {
	w.String(m.Name)
	w.String(m.Service)
	w.String(m.Key)
}
func (m *ControlShowTable) Decode(r *Reader) {
	m.Name, m.Service, m.Key = r.String(), r.String(), r.String()
}

// ControlTableLookup passes ControlShowTable on to lookup.
type ControlTableLookup struct{ ControlShowTable }

func (*ControlTableLookup) Type() Type { return TypeControlTableLookup }
