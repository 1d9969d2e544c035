package proto

import (
	"os"
)

// Type identifies a message. Names say sender, noun and verb.
type Type uint32

// The message types.
const (
	TypeSetupPeer Type = iota + 1
	TypeSetupListener
	TypeSetupControl
	TypeSetupDone
	TypeSetupReady
	TypeStatUpdate
	TypeControlShowStats
	TypeControlStats
	TypeControlError
	TypeSMTPFilterQuery
	TypeMFAFilterVerdict
	TypeSMTPExpandRcpt
	TypeLookupExpandResult
	TypeSMTPMessageCreate
	TypeQueueMessageCreated
	TypeSMTPEnvelopeSubmit
	TypeSMTPMessageCommit
	TypeQueueMessageCommitted
	TypeSMTPMessageRollback
	TypeQueueFailure
	TypeQueueDeliverLocal
	TypeParentDeliveryResult
	TypeParentMDADeliver
	TypeMDADeliveryResult
	TypeQueueExpandRcpt
	TypeLookupForwardOpen
	TypeParentForwardFile
	TypeParentForwardNone
	TypeParentTablesReload
	TypeQueueTransfer
	TypeMTADeliveryResult
	TypeMTAResolveMX
	TypeLookupMXResult
	TypeMTAResolvePTR
	TypeLookupPTRResult
	TypeControlShowMTA
	TypeControlMTAQuery
	TypeMTAObjects
	TypeControlText
	TypeControlQueue
	TypeControlQueueForward
	TypeQueueLines
	TypeControlUpdateTable
	TypeControlTableReload
	TypeLookupTableLines
	TypeControlPauseSMTP
	TypeControlSMTPPause
	TypeSMTPAuthQuery
	TypeLookupAuthResult
	TypeControlEnqueue
	TypeControlSMTPSession
	TypeSMTPSessionFile
	TypeControlFile
	TypeControlLog
	TypeControlLogLevel
	TypeQueueMessageFile
	TypeMTACredentialsQuery
	TypeLookupCredentials
	TypeLookupTablesReloaded
	TypeMFATableQuery
	TypeLookupTableResult
	TypeParentAccountQuery
	TypeLookupAccountResult
	TypeSMTPFilterEvent
	TypeSMTPFilterMessage
	TypeMFAMessageVerdict
	TypeMFAMessageRewritten
	TypeParentFilterProcess
	TypeMFAFilterBroken
	TypeParentFilterExited
	TypeControlShowFilters
	TypeControlFiltersQuery
	TypeMFAFilterLines
	TypeQueueOverload
	TypeMFAMilterConnect
	TypeParentMilterSocket
	TypeParentMilterRefused
	TypeControlShowTable
	TypeControlTableLookup
	TypeMTAResolveDNS
	TypeLookupDNSResult
	TypeMTAReportSubmit
	TypeQueueReportQueued
	TypeSMTPDomainSchedule
	TypeQueueDomainScheduled
	TypeQueueDomainFlush
	TypeParentListenerCertificate
	TypeParentDrain
	TypeSMTPDrained
	typeEnd
)

// Message is one typed message. Encode must write exactly what Decode
// reads; Decode reports errors through the Reader.
type Message interface {
	Type() Type
	Encode(w *Writer)
	Decode(r *Reader)
}

// FileMessage is a message that carries one file descriptor with it.
type FileMessage interface {
	Message
	File() *os.File
	setFile(f *os.File)
}

// fileField implements FileMessage for the structs that embed it.
type fileField struct{ fd *os.File }

// File returns the descriptor carried by the message.
func (f *fileField) File() *os.File      { return f.fd }
func (f *fileField) setFile(fd *os.File) { f.fd = fd }

// SetupPeer hands a child its end of a channel to another child.
type SetupPeer struct {
	fileField
	Peer Proc
}

// NewSetupPeer returns a SetupPeer carrying fd.
func NewSetupPeer(peer Proc, fd *os.File) *SetupPeer {
	return &SetupPeer{fileField{fd}, peer}
}

func (*SetupPeer) Type() Type         { return TypeSetupPeer }
func (m *SetupPeer) Encode(w *Writer) { w.U32(uint32(m.Peer)) }
func (m *SetupPeer) Decode(r *Reader) {
	m.Peer = enum32(r, ProcSMTP, ProcControl, "peer")
}

// SetupListener hands smtp a listening socket bound by the parent.
type SetupListener struct {
	fileField
	Name string
}

// NewSetupListener returns a SetupListener carrying fd.
func NewSetupListener(name string, fd *os.File) *SetupListener {
	return &SetupListener{fileField{fd}, name}
}

func (*SetupListener) Type() Type         { return TypeSetupListener }
func (m *SetupListener) Encode(w *Writer) { w.String(m.Name) }
func (m *SetupListener) Decode(r *Reader) { m.Name = r.String() }

// SetupControl hands control the listening control socket.
type SetupControl struct{ fileField }

// NewSetupControl returns a SetupControl carrying fd.
func NewSetupControl(fd *os.File) *SetupControl { return &SetupControl{fileField{fd}} }

func (*SetupControl) Type() Type     { return TypeSetupControl }
func (*SetupControl) Encode(*Writer) {}
func (*SetupControl) Decode(*Reader) {}

// SetupDone tells a child that all its peers and sockets were sent.
type SetupDone struct{}

func (*SetupDone) Type() Type     { return TypeSetupDone }
func (*SetupDone) Encode(*Writer) {}
func (*SetupDone) Decode(*Reader) {}

// SetupReady tells the parent that a child finished its setup, dropped
// its privileges and serves.
type SetupReady struct{}

func (*SetupReady) Type() Type     { return TypeSetupReady }
func (*SetupReady) Encode(*Writer) {}
func (*SetupReady) Decode(*Reader) {}

// StatOp says how a StatChange applies to a counter.
type StatOp uint8

// The stat operations, as OpenSMTPD's increment, decrement and set.
const (
	StatIncrement StatOp = iota + 1
	StatDecrement
	StatSet
)

// StatChange is one change to one named counter.
type StatChange struct {
	Key   string
	Op    StatOp
	Value int64
}

// StatUpdate carries a batch of counter changes to control.
type StatUpdate struct{ Changes []StatChange }

func (*StatUpdate) Type() Type { return TypeStatUpdate }
func (m *StatUpdate) Encode(w *Writer) {
	w.U32(uint32(len(m.Changes)))
	for _, c := range m.Changes {
		w.String(c.Key)
		w.U8(uint8(c.Op))
		w.I64(c.Value)
	}
}
func (m *StatUpdate) Decode(r *Reader) {
	n := r.Count(13, "stat changes")
	m.Changes = make([]StatChange, 0, n)
	for range n {
		m.Changes = append(m.Changes, StatChange{Key: r.String(), Op: enum8(r, StatIncrement, StatSet, "stat op"), Value: r.I64()})
	}
}

// ControlShowStats asks control for all counters.
type ControlShowStats struct{}

func (*ControlShowStats) Type() Type     { return TypeControlShowStats }
func (*ControlShowStats) Encode(*Writer) {}
func (*ControlShowStats) Decode(*Reader) {}

// StatValue is the current value of one counter.
type StatValue struct {
	Key   string
	Value int64
}

// ControlStats answers ControlShowStats, possibly in several frames; the
// last one has Last set.
type ControlStats struct {
	Values []StatValue
	Last   bool
}

func (*ControlStats) Type() Type { return TypeControlStats }
func (m *ControlStats) Encode(w *Writer) {
	w.Bool(m.Last)
	w.U32(uint32(len(m.Values)))
	for _, v := range m.Values {
		w.String(v.Key)
		w.I64(v.Value)
	}
}
func (m *ControlStats) Decode(r *Reader) {
	m.Last = r.Bool()
	n := r.Count(12, "stat values")
	m.Values = make([]StatValue, 0, n)
	for range n {
		m.Values = append(m.Values, StatValue{Key: r.String(), Value: r.I64()})
	}
}

// ControlError answers a control request that failed.
type ControlError struct{ Text string }

func (*ControlError) Type() Type         { return TypeControlError }
func (m *ControlError) Encode(w *Writer) { w.String(m.Text) }
func (m *ControlError) Decode(r *Reader) { m.Text = r.String() }

// ControlShowMTA asks for the mta's live objects: "hosts", "relays" or
// "routes".
type ControlShowMTA struct{ What string }

func (*ControlShowMTA) Type() Type         { return TypeControlShowMTA }
func (m *ControlShowMTA) Encode(w *Writer) { w.String(m.What) }
func (m *ControlShowMTA) Decode(r *Reader) { m.What = r.String() }

// ControlMTAQuery passes a ControlShowMTA on to mta.
type ControlMTAQuery struct{ What string }

func (*ControlMTAQuery) Type() Type         { return TypeControlMTAQuery }
func (m *ControlMTAQuery) Encode(w *Writer) { w.String(m.What) }
func (m *ControlMTAQuery) Decode(r *Reader) { m.What = r.String() }

// TextLines are lines of text sent in several frames; the last has Last
// set.
type TextLines struct {
	Lines []string
	Last  bool
}

func (t *TextLines) encode(w *Writer) {
	w.Bool(t.Last)
	w.Strings(t.Lines)
}

func (t *TextLines) decode(r *Reader) {
	t.Last = r.Bool()
	t.Lines = r.Strings("lines")
}

// MTAObjects answers ControlMTAQuery.
type MTAObjects struct{ TextLines }

func (*MTAObjects) Type() Type         { return TypeMTAObjects }
func (m *MTAObjects) Encode(w *Writer) { m.encode(w) }
func (m *MTAObjects) Decode(r *Reader) { m.decode(r) }

// ControlText answers a control request with lines of text.
type ControlText struct{ TextLines }

func (*ControlText) Type() Type         { return TypeControlText }
func (m *ControlText) Encode(w *Writer) { m.encode(w) }
func (m *ControlText) Decode(r *Reader) { m.decode(r) }

// SendLines sends lines in as many frames as they need, made by mk.
func SendLines(ch *Channel, id uint32, lines []string, mk func(lines []string, last bool) Message) error {
	for {
		n, size := 0, 0
		for n < len(lines) && size+len(lines[n])+4 < MaxPayload-64 {
			size += len(lines[n]) + 4
			n++
		}
		if err := ch.Send(mk(lines[:n], n == len(lines)), id); err != nil {
			return err
		}
		lines = lines[n:]
		if len(lines) == 0 {
			return nil
		}
	}
}

// QueueOp is a request about the queue: Op is "show", "schedule" or
// "remove"; Target is "all", a message id or an envelope id (hex).
type QueueOp struct {
	Op, Target string
}

func (q *QueueOp) encode(w *Writer) {
	w.String(q.Op)
	w.String(q.Target)
}

func (q *QueueOp) decode(r *Reader) { q.Op, q.Target = r.String(), r.String() }

// ControlQueue is a client's request about the queue.
type ControlQueue struct{ QueueOp }

func (*ControlQueue) Type() Type         { return TypeControlQueue }
func (m *ControlQueue) Encode(w *Writer) { m.encode(w) }
func (m *ControlQueue) Decode(r *Reader) { m.decode(r) }

// ControlQueueForward passes a ControlQueue on to queue.
type ControlQueueForward struct{ QueueOp }

func (*ControlQueueForward) Type() Type         { return TypeControlQueueForward }
func (m *ControlQueueForward) Encode(w *Writer) { m.encode(w) }
func (m *ControlQueueForward) Decode(r *Reader) { m.decode(r) }

// QueueLines answers ControlQueueForward.
type QueueLines struct{ TextLines }

func (*QueueLines) Type() Type         { return TypeQueueLines }
func (m *QueueLines) Encode(w *Writer) { m.encode(w) }
func (m *QueueLines) Decode(r *Reader) { m.decode(r) }

// ControlUpdateTable is a client asking to read a table file again.
type ControlUpdateTable struct{ Name string }

func (*ControlUpdateTable) Type() Type         { return TypeControlUpdateTable }
func (m *ControlUpdateTable) Encode(w *Writer) { w.String(m.Name) }
func (m *ControlUpdateTable) Decode(r *Reader) { m.Name = r.String() }

// ControlTableReload passes a ControlUpdateTable on to lookup.
type ControlTableReload struct{ Name string }

func (*ControlTableReload) Type() Type         { return TypeControlTableReload }
func (m *ControlTableReload) Encode(w *Writer) { w.String(m.Name) }
func (m *ControlTableReload) Decode(r *Reader) { m.Name = r.String() }

// LookupTableLines answers ControlTableReload and ControlTableLookup: the
// outcome or the answer, in lines; for a reload, the problem in
// the lines if the table could not be read.
type LookupTableLines struct{ TextLines }

func (*LookupTableLines) Type() Type         { return TypeLookupTableLines }
func (m *LookupTableLines) Encode(w *Writer) { m.encode(w) }
func (m *LookupTableLines) Decode(r *Reader) { m.decode(r) }

// ControlPauseSMTP is a client pausing (Paused set) or resuming smtp.
type ControlPauseSMTP struct{ Paused bool }

func (*ControlPauseSMTP) Type() Type         { return TypeControlPauseSMTP }
func (m *ControlPauseSMTP) Encode(w *Writer) { w.Bool(m.Paused) }
func (m *ControlPauseSMTP) Decode(r *Reader) { m.Paused = r.Bool() }

// ControlSMTPPause tells smtp to stop or start taking sessions.
type ControlSMTPPause struct{ Paused bool }

func (*ControlSMTPPause) Type() Type         { return TypeControlSMTPPause }
func (m *ControlSMTPPause) Encode(w *Writer) { w.Bool(m.Paused) }
func (m *ControlSMTPPause) Decode(r *Reader) { m.Paused = r.Bool() }
