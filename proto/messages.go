package proto

import (
	"fmt"
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
	TypeLookupTableReloaded
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
	typeEnd
)

var typeNames = [...]string{
	TypeSetupPeer:        "SetupPeer",
	TypeSetupListener:    "SetupListener",
	TypeSetupControl:     "SetupControl",
	TypeSetupDone:        "SetupDone",
	TypeSetupReady:       "SetupReady",
	TypeStatUpdate:       "StatUpdate",
	TypeControlShowStats: "ControlShowStats",
	TypeControlStats:     "ControlStats",
	TypeControlError:     "ControlError",

	TypeSMTPFilterQuery:       "SMTPFilterQuery",
	TypeMFAFilterVerdict:      "MFAFilterVerdict",
	TypeSMTPExpandRcpt:        "SMTPExpandRcpt",
	TypeLookupExpandResult:    "LookupExpandResult",
	TypeSMTPMessageCreate:     "SMTPMessageCreate",
	TypeQueueMessageCreated:   "QueueMessageCreated",
	TypeSMTPEnvelopeSubmit:    "SMTPEnvelopeSubmit",
	TypeSMTPMessageCommit:     "SMTPMessageCommit",
	TypeQueueMessageCommitted: "QueueMessageCommitted",
	TypeSMTPMessageRollback:   "SMTPMessageRollback",
	TypeQueueFailure:          "QueueFailure",
	TypeQueueDeliverLocal:     "QueueDeliverLocal",
	TypeParentDeliveryResult:  "ParentDeliveryResult",
	TypeParentMDADeliver:      "ParentMDADeliver",
	TypeMDADeliveryResult:     "MDADeliveryResult",
	TypeQueueExpandRcpt:       "QueueExpandRcpt",
	TypeLookupForwardOpen:     "LookupForwardOpen",
	TypeParentForwardFile:     "ParentForwardFile",
	TypeParentForwardNone:     "ParentForwardNone",
	TypeParentTablesReload:    "ParentTablesReload",
	TypeQueueTransfer:         "QueueTransfer",
	TypeMTADeliveryResult:     "MTADeliveryResult",
	TypeMTAResolveMX:          "MTAResolveMX",
	TypeLookupMXResult:        "LookupMXResult",
	TypeMTAResolvePTR:         "MTAResolvePTR",
	TypeLookupPTRResult:       "LookupPTRResult",
	TypeControlShowMTA:        "ControlShowMTA",
	TypeControlMTAQuery:       "ControlMTAQuery",
	TypeMTAObjects:            "MTAObjects",
	TypeControlText:           "ControlText",
	TypeControlQueue:          "ControlQueue",
	TypeControlQueueForward:   "ControlQueueForward",
	TypeQueueLines:            "QueueLines",
	TypeControlUpdateTable:    "ControlUpdateTable",
	TypeControlTableReload:    "ControlTableReload",
	TypeLookupTableReloaded:   "LookupTableReloaded",
	TypeControlPauseSMTP:      "ControlPauseSMTP",
	TypeControlSMTPPause:      "ControlSMTPPause",
	TypeSMTPAuthQuery:         "SMTPAuthQuery",
	TypeLookupAuthResult:      "LookupAuthResult",
	TypeControlEnqueue:        "ControlEnqueue",
	TypeControlSMTPSession:    "ControlSMTPSession",
	TypeSMTPSessionFile:       "SMTPSessionFile",
	TypeControlFile:           "ControlFile",
	TypeControlLog:            "ControlLog",
	TypeControlLogLevel:       "ControlLogLevel",
	TypeQueueMessageFile:      "QueueMessageFile",
}

func (t Type) String() string {
	if t > 0 && t < typeEnd {
		return typeNames[t]
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

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

// New returns an empty message of type t, or false for an unknown type.
func New(t Type) (Message, bool) {
	switch t {
	case TypeSetupPeer:
		return &SetupPeer{}, true
	case TypeSetupListener:
		return &SetupListener{}, true
	case TypeSetupControl:
		return &SetupControl{}, true
	case TypeSetupDone:
		return &SetupDone{}, true
	case TypeSetupReady:
		return &SetupReady{}, true
	case TypeStatUpdate:
		return &StatUpdate{}, true
	case TypeControlShowStats:
		return &ControlShowStats{}, true
	case TypeControlStats:
		return &ControlStats{}, true
	case TypeControlError:
		return &ControlError{}, true
	case TypeSMTPFilterQuery:
		return &SMTPFilterQuery{}, true
	case TypeMFAFilterVerdict:
		return &MFAFilterVerdict{}, true
	case TypeSMTPExpandRcpt:
		return &SMTPExpandRcpt{}, true
	case TypeLookupExpandResult:
		return &LookupExpandResult{}, true
	case TypeSMTPMessageCreate:
		return &SMTPMessageCreate{}, true
	case TypeQueueMessageCreated:
		return &QueueMessageCreated{}, true
	case TypeSMTPEnvelopeSubmit:
		return &SMTPEnvelopeSubmit{}, true
	case TypeSMTPMessageCommit:
		return &SMTPMessageCommit{}, true
	case TypeQueueMessageCommitted:
		return &QueueMessageCommitted{}, true
	case TypeSMTPMessageRollback:
		return &SMTPMessageRollback{}, true
	case TypeQueueFailure:
		return &QueueFailure{}, true
	case TypeQueueDeliverLocal:
		return &QueueDeliverLocal{}, true
	case TypeParentDeliveryResult:
		return &ParentDeliveryResult{}, true
	case TypeParentMDADeliver:
		return &ParentMDADeliver{}, true
	case TypeMDADeliveryResult:
		return &MDADeliveryResult{}, true
	case TypeQueueExpandRcpt:
		return &QueueExpandRcpt{}, true
	case TypeLookupForwardOpen:
		return &LookupForwardOpen{}, true
	case TypeParentForwardFile:
		return &ParentForwardFile{}, true
	case TypeParentForwardNone:
		return &ParentForwardNone{}, true
	case TypeParentTablesReload:
		return &ParentTablesReload{}, true
	case TypeQueueTransfer:
		return &QueueTransfer{}, true
	case TypeMTADeliveryResult:
		return &MTADeliveryResult{}, true
	case TypeMTAResolveMX:
		return &MTAResolveMX{}, true
	case TypeLookupMXResult:
		return &LookupMXResult{}, true
	case TypeMTAResolvePTR:
		return &MTAResolvePTR{}, true
	case TypeLookupPTRResult:
		return &LookupPTRResult{}, true
	case TypeControlShowMTA:
		return &ControlShowMTA{}, true
	case TypeControlMTAQuery:
		return &ControlMTAQuery{}, true
	case TypeMTAObjects:
		return &MTAObjects{}, true
	case TypeControlText:
		return &ControlText{}, true
	case TypeControlQueue:
		return &ControlQueue{}, true
	case TypeControlQueueForward:
		return &ControlQueueForward{}, true
	case TypeQueueLines:
		return &QueueLines{}, true
	case TypeControlUpdateTable:
		return &ControlUpdateTable{}, true
	case TypeControlTableReload:
		return &ControlTableReload{}, true
	case TypeLookupTableReloaded:
		return &LookupTableReloaded{}, true
	case TypeControlPauseSMTP:
		return &ControlPauseSMTP{}, true
	case TypeControlSMTPPause:
		return &ControlSMTPPause{}, true
	case TypeSMTPAuthQuery:
		return &SMTPAuthQuery{}, true
	case TypeLookupAuthResult:
		return &LookupAuthResult{}, true
	case TypeControlEnqueue:
		return &ControlEnqueue{}, true
	case TypeControlSMTPSession:
		return &ControlSMTPSession{}, true
	case TypeSMTPSessionFile:
		return &SMTPSessionFile{}, true
	case TypeControlFile:
		return &ControlFile{}, true
	case TypeControlLog:
		return &ControlLog{}, true
	case TypeControlLogLevel:
		return &ControlLogLevel{}, true
	case TypeQueueMessageFile:
		return &QueueMessageFile{}, true
	}
	return nil, false
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
	m.Peer = Proc(r.U32())
	if m.Peer < ProcSMTP || m.Peer > ProcControl {
		r.Fail(fmt.Errorf("%w: bad peer %d", ErrBadFrame, m.Peer))
	}
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
	n := r.U32()
	// each change takes at least 13 bytes: refuse counts the payload cannot hold
	if n > MaxPayload/13 {
		r.Fail(fmt.Errorf("%w: %d stat changes", ErrBadFrame, n))
		return
	}
	m.Changes = make([]StatChange, 0, n)
	for range n {
		c := StatChange{Key: r.String(), Op: StatOp(r.U8()), Value: r.I64()}
		if c.Op < StatIncrement || c.Op > StatSet {
			r.Fail(fmt.Errorf("%w: bad stat op %d", ErrBadFrame, c.Op))
			return
		}
		m.Changes = append(m.Changes, c)
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
	n := r.U32()
	if n > MaxPayload/12 {
		r.Fail(fmt.Errorf("%w: %d stat values", ErrBadFrame, n))
		return
	}
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
	w.U32(uint32(len(t.Lines)))
	for _, l := range t.Lines {
		w.String(l)
	}
}

func (t *TextLines) decode(r *Reader) {
	t.Last = r.Bool()
	n := r.U32()
	if n > MaxPayload/4 {
		r.Fail(fmt.Errorf("%w: %d lines", ErrBadFrame, n))
		return
	}
	t.Lines = make([]string, 0, n)
	for range n {
		t.Lines = append(t.Lines, r.String())
	}
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

// LookupTableReloaded answers ControlTableReload, with the problem in
// the lines if the table could not be read.
type LookupTableReloaded struct{ TextLines }

func (*LookupTableReloaded) Type() Type         { return TypeLookupTableReloaded }
func (m *LookupTableReloaded) Encode(w *Writer) { m.encode(w) }
func (m *LookupTableReloaded) Decode(r *Reader) { m.decode(r) }

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
