package proto

import (
	"fmt"
	"time"
)

// The messages of the daemon's life cycle past its start: a reload of
// the listeners' certificates (SIGHUP) and the drain of smtp's sessions
// before a stop (SIGTERM).

// ParentListenerCertificate hands smtp the certificate chain and key
// of a TLS listener, read again by the parent on SIGHUP, for the
// handshakes that follow. Keys go to smtp only, which holds them
// already (it reads them before it drops its privileges); the parent
// checked that the pair loads.
type ParentListenerCertificate struct {
	Listener        string
	CertPEM, KeyPEM []byte
}

func (*ParentListenerCertificate) Type() Type { return TypeParentListenerCertificate }
func (m *ParentListenerCertificate) Encode(w *Writer) {
	w.String(m.Listener)
	w.Bytes(m.CertPEM)
	w.Bytes(m.KeyPEM)
}
func (m *ParentListenerCertificate) Decode(r *Reader) {
	m.Listener, m.CertPEM, m.KeyPEM = r.String(), r.Bytes(), r.Bytes()
}

// ParentDrain tells smtp that the daemon stops: it closes its
// listeners, ends its idle sessions and lets those receiving a message
// finish, for at most Timeout, then answers SMTPDrained.
type ParentDrain struct{ Timeout time.Duration }

func (*ParentDrain) Type() Type         { return TypeParentDrain }
func (m *ParentDrain) Encode(w *Writer) { w.I64(int64(m.Timeout)) }
func (m *ParentDrain) Decode(r *Reader) {
	m.Timeout = time.Duration(r.I64())
	if r.Err() == nil && m.Timeout < 0 {
		r.Fail(fmt.Errorf("%w: negative drain time %v", ErrBadFrame, m.Timeout))
	}
}

// SMTPDrained answers ParentDrain once smtp serves no session any more;
// Cut is the number of sessions it had to close when the drain time ran
// out.
type SMTPDrained struct{ Cut uint32 }

func (*SMTPDrained) Type() Type         { return TypeSMTPDrained }
func (m *SMTPDrained) Encode(w *Writer) { w.U32(m.Cut) }
func (m *SMTPDrained) Decode(r *Reader) { m.Cut = r.U32() }
