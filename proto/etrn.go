package proto

// The messages of remote queue starting (ETRN, RFC 1985): a client the
// listener's etrn table allows asks for the mail waiting for its domain,
// and so may the administrator (smtpctl schedule domain).

// SMTPDomainSchedule asks queue to try at once the relayed envelopes
// waiting for Domain (RFC 1985 §5, "ETRN domain"), and with Subdomains
// also those for the domains below it ("ETRN @domain"). Queue answers
// with QueueDomainScheduled.
type SMTPDomainSchedule struct {
	Domain     string
	Subdomains bool
}

func (*SMTPDomainSchedule) Type() Type { return TypeSMTPDomainSchedule }
func (m *SMTPDomainSchedule) Encode(w *Writer) {
	w.String(m.Domain)
	w.Bool(m.Subdomains)
}
func (m *SMTPDomainSchedule) Decode(r *Reader) { m.Domain, m.Subdomains = r.String(), r.Bool() }

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
type QueueDomainFlush struct {
	Domain     string
	Subdomains bool
}

func (*QueueDomainFlush) Type() Type { return TypeQueueDomainFlush }
func (m *QueueDomainFlush) Encode(w *Writer) {
	w.String(m.Domain)
	w.Bool(m.Subdomains)
}
func (m *QueueDomainFlush) Decode(r *Reader) { m.Domain, m.Subdomains = r.String(), r.Bool() }
