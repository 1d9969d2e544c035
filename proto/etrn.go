package proto

// The messages of remote queue starting (ETRN, RFC 1985): a client the
// listener's etrn table allows asks for the mail waiting for its domain,
// and so may the administrator (smtpctl schedule domain).

// DomainTarget names the mail of a domain (RFC 1985 §5, "ETRN domain"),
// and with Subdomains that of the domains below it too ("ETRN
// @domain").
type DomainTarget struct {
	Domain     string
	Subdomains bool
}

func (d *DomainTarget) encode(w *Writer) {
	w.String(d.Domain)
	w.Bool(d.Subdomains)
}
func (d *DomainTarget) decode(r *Reader) { d.Domain, d.Subdomains = r.String(), r.Bool() }

// SMTPDomainSchedule asks queue to try at once the relayed envelopes
// waiting for its target. Queue answers with QueueDomainScheduled.
type SMTPDomainSchedule struct{ DomainTarget }

func (*SMTPDomainSchedule) Type() Type         { return TypeSMTPDomainSchedule }
func (m *SMTPDomainSchedule) Encode(w *Writer) { m.encode(w) }
func (m *SMTPDomainSchedule) Decode(r *Reader) { m.decode(r) }

// QueueDomainScheduled answers SMTPDomainSchedule: how many messages,
// and envelopes of them, were made due; none is RFC 1985's 251.
type QueueDomainScheduled struct {
	Messages, Envelopes uint32
}

func (*QueueDomainScheduled) Type() Type { return TypeQueueDomainScheduled }
func (m *QueueDomainScheduled) Encode(w *Writer) {
	w.U32(m.Messages)
	w.U32(m.Envelopes)
}
func (m *QueueDomainScheduled) Decode(r *Reader) { m.Messages, m.Envelopes = r.U32(), r.U32() }

// QueueDomainFlush tells mta, before the envelopes of a domain
// scheduled at a client's or the administrator's request come, to
// forget what it learnt from the failures of the domain's exchangers:
// their routes' penalties and the domain's MX list. A site that asks
// for its mail is up now, perhaps at a new address; a penalty of up to
// an hour would otherwise hold its mail back (RFC 1985 §5: the server
// forces its queues to start sending to the site).
type QueueDomainFlush struct{ DomainTarget }

func (*QueueDomainFlush) Type() Type         { return TypeQueueDomainFlush }
func (m *QueueDomainFlush) Encode(w *Writer) { m.encode(w) }
func (m *QueueDomainFlush) Decode(r *Reader) { m.decode(r) }
