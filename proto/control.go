package proto

import "os"

// SMTPAuthQuery asks lookup about an authenticated user of a listener:
// whether Value is the user's password (What "password"), or a sender
// address the user may use in MAIL FROM (What "sender"); or about a
// client: whether the client address Value may use ETRN (What "etrn",
// no User), by the listener's etrn table.
type SMTPAuthQuery struct {
	What, Listener, User, Value string
}

func (*SMTPAuthQuery) Type() Type { return TypeSMTPAuthQuery }
func (m *SMTPAuthQuery) Encode(w *Writer) {
	w.String(m.What)
	w.String(m.Listener)
	w.String(m.User)
	w.String(m.Value)
}
func (m *SMTPAuthQuery) Decode(r *Reader) {
	m.What, m.Listener, m.User, m.Value = r.String(), r.String(), r.String(), r.String()
}

// LookupAuthResult answers SMTPAuthQuery: StatusOK yes, StatusPermfail
// no, StatusTempfail the tables could not tell (Text says why).
type LookupAuthResult struct{ Outcome }

func (*LookupAuthResult) Type() Type         { return TypeLookupAuthResult }
func (m *LookupAuthResult) Encode(w *Writer) { m.encode(w) }
func (m *LookupAuthResult) Decode(r *Reader) { m.decode(r) }

// ControlEnqueue is a local client (sendmail) asking for an SMTP session
// to submit mail in. User is the name the client gives for itself;
// control adds the user id, which it takes from the socket.
type ControlEnqueue struct{ User string }

func (*ControlEnqueue) Type() Type         { return TypeControlEnqueue }
func (m *ControlEnqueue) Encode(w *Writer) { w.String(m.User) }
func (m *ControlEnqueue) Decode(r *Reader) { m.User = r.String() }

// ControlSMTPSession asks smtp for a session for the local user User
// (UID), to be handed to a client.
type ControlSMTPSession struct {
	UID  uint32
	User string
}

func (*ControlSMTPSession) Type() Type { return TypeControlSMTPSession }
func (m *ControlSMTPSession) Encode(w *Writer) {
	w.U32(m.UID)
	w.String(m.User)
}
func (m *ControlSMTPSession) Decode(r *Reader) { m.UID, m.User = r.U32(), r.String() }

// SMTPSessionFile answers ControlSMTPSession with the client's end of a
// socket on which smtp serves the session.
type SMTPSessionFile struct{ fileField }

// NewSMTPSessionFile returns an SMTPSessionFile carrying f.
func NewSMTPSessionFile(f *os.File) *SMTPSessionFile { return &SMTPSessionFile{fileField{f}} }

func (*SMTPSessionFile) Type() Type       { return TypeSMTPSessionFile }
func (*SMTPSessionFile) Encode(w *Writer) {}
func (*SMTPSessionFile) Decode(r *Reader) {}

// ControlFile hands a client a descriptor: an SMTP session socket
// (ControlEnqueue) or a message file (show message).
type ControlFile struct{ fileField }

// NewControlFile returns a ControlFile carrying f.
func NewControlFile(f *os.File) *ControlFile { return &ControlFile{fileField{f}} }

func (*ControlFile) Type() Type       { return TypeControlFile }
func (*ControlFile) Encode(w *Writer) {}
func (*ControlFile) Decode(r *Reader) {}

// LogSetting is a change of what the processes log: What "verbose"
// turns debug lines on or off, any other What is a trace subsystem.
type LogSetting struct {
	What string
	On   bool
}

func (l *LogSetting) encode(w *Writer) {
	w.String(l.What)
	w.Bool(l.On)
}

func (l *LogSetting) decode(r *Reader) { l.What, l.On = r.String(), r.Bool() }

// ControlLog is a client's `log brief|verbose` or `trace|untrace`.
type ControlLog struct{ LogSetting }

func (*ControlLog) Type() Type         { return TypeControlLog }
func (m *ControlLog) Encode(w *Writer) { m.encode(w) }
func (m *ControlLog) Decode(r *Reader) { m.decode(r) }

// ControlLogLevel passes a ControlLog on to every other process.
type ControlLogLevel struct{ LogSetting }

func (*ControlLogLevel) Type() Type         { return TypeControlLogLevel }
func (m *ControlLogLevel) Encode(w *Writer) { m.encode(w) }
func (m *ControlLogLevel) Decode(r *Reader) { m.decode(r) }

// QueueMessageFile answers a ControlQueueForward "message" with the
// message file, open for reading.
type QueueMessageFile struct{ fileField }

// NewQueueMessageFile returns a QueueMessageFile carrying f.
func NewQueueMessageFile(f *os.File) *QueueMessageFile { return &QueueMessageFile{fileField{f}} }

func (*QueueMessageFile) Type() Type       { return TypeQueueMessageFile }
func (*QueueMessageFile) Encode(w *Writer) {}
func (*QueueMessageFile) Decode(r *Reader) {}
