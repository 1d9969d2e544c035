package proto

import (
	"os"
)

// QueueTransfer hands mta an envelope to relay.
type QueueTransfer struct{ envelopeBody }

// NewQueueTransfer returns a QueueTransfer carrying body.
func NewQueueTransfer(evp []byte, body *os.File) *QueueTransfer {
	return &QueueTransfer{envelopeBody{fileField{body}, evp}}
}

func (*QueueTransfer) Type() Type { return TypeQueueTransfer }

// MTADeliveryResult tells queue how relaying an envelope went.
type MTADeliveryResult struct{ DeliveryResult }

func (*MTADeliveryResult) Type() Type         { return TypeMTADeliveryResult }
func (m *MTADeliveryResult) Encode(w *Writer) { m.encode(w) }
func (m *MTADeliveryResult) Decode(r *Reader) { m.decode(r) }

// MTAResolveMX asks lookup for the mail exchangers of a domain with
// their addresses; with HostOnly, for the addresses of one host (a
// smarthost) as a single exchanger.
type MTAResolveMX struct {
	Domain   string
	HostOnly bool
}

func (*MTAResolveMX) Type() Type { return TypeMTAResolveMX }
func (m *MTAResolveMX) Encode(w *Writer) {
	w.String(m.Domain)
	w.Bool(m.HostOnly)
}
func (m *MTAResolveMX) Decode(r *Reader) { m.Domain, m.HostOnly = r.String(), r.Bool() }

// MXHost is one exchanger of a LookupMXResult. Secure says a
// validating resolver authenticated the MX records and the host's
// addresses, so that its TLSA records apply (RFC 7672 §2.2).
type MXHost struct {
	Preference uint32
	Host       string
	Addrs      []string
	Secure     bool
}

// LookupMXResult answers MTAResolveMX. Text says why when Status is not
// StatusOK; StatusPermfail is a domain that cannot receive mail, and
// NullMX says it published that it accepts none (RFC 7505).
type LookupMXResult struct {
	Outcome
	NullMX bool
	MXs    []MXHost
}

func (*LookupMXResult) Type() Type { return TypeLookupMXResult }
func (m *LookupMXResult) Encode(w *Writer) {
	m.encode(w)
	w.Bool(m.NullMX)
	w.U32(uint32(len(m.MXs)))
	for _, mx := range m.MXs {
		w.U32(mx.Preference)
		w.String(mx.Host)
		w.Strings(mx.Addrs)
		w.Bool(mx.Secure)
	}
}
func (m *LookupMXResult) Decode(r *Reader) {
	m.decode(r)
	m.NullMX = r.Bool()
	n := r.Count(12, "exchangers")
	m.MXs = make([]MXHost, 0, n)
	for range n {
		mx := MXHost{Preference: r.U32(), Host: r.String(), Addrs: r.Strings("addresses")}
		mx.Secure = r.Bool()
		m.MXs = append(m.MXs, mx)
	}
}

// MTAResolvePTR asks lookup for the name of an address.
type MTAResolvePTR struct{ Addr string }

func (*MTAResolvePTR) Type() Type         { return TypeMTAResolvePTR }
func (m *MTAResolvePTR) Encode(w *Writer) { w.String(m.Addr) }
func (m *MTAResolvePTR) Decode(r *Reader) { m.Addr = r.String() }

// LookupPTRResult answers MTAResolvePTR; Name is empty if there is none.
type LookupPTRResult struct{ Name string }

func (*LookupPTRResult) Type() Type         { return TypeLookupPTRResult }
func (m *LookupPTRResult) Encode(w *Writer) { w.String(m.Name) }
func (m *LookupPTRResult) Decode(r *Reader) { m.Name = r.String() }

// MTACredentialsQuery asks lookup for the credentials of a relay: the
// entry Label of the table Table (its index in the configuration). mta
// asks once per relay and keeps the answer only as long as the relay.
type MTACredentialsQuery struct {
	Table uint32
	Label string
}

func (*MTACredentialsQuery) Type() Type { return TypeMTACredentialsQuery }
func (m *MTACredentialsQuery) Encode(w *Writer) {
	w.U32(m.Table)
	w.String(m.Label)
}
func (m *MTACredentialsQuery) Decode(r *Reader) { m.Table, m.Label = r.U32(), r.String() }

// LookupCredentials answers MTACredentialsQuery: with StatusOK, the
// user name and password to authenticate with; otherwise Text says why
// there are none (StatusPermfail: no such entry, StatusTempfail: the
// table cannot tell now).
type LookupCredentials struct {
	Outcome
	User, Password string
}

func (*LookupCredentials) Type() Type { return TypeLookupCredentials }
func (m *LookupCredentials) Encode(w *Writer) {
	m.encode(w)
	w.String(m.User)
	w.String(m.Password)
}
func (m *LookupCredentials) Decode(r *Reader) {
	m.decode(r)
	m.User, m.Password = r.String(), r.String()
}

// LookupTablesReloaded tells mta and the parent that lookup read tables
// again, so that they drop the answers they keep (relay credentials,
// accounts).
type LookupTablesReloaded struct{}

func (*LookupTablesReloaded) Type() Type     { return TypeLookupTablesReloaded }
func (*LookupTablesReloaded) Encode(*Writer) {}
func (*LookupTablesReloaded) Decode(*Reader) {}

// MTAResolveDNS asks lookup for the records of one name and type, as
// the outbound TLS policies need them: TLSA (RFC 7672), the TXT records
// of MTA-STS and TLS-RPT, the addresses of a policy host.
type MTAResolveDNS struct {
	Name  string
	Qtype uint16
}

func (*MTAResolveDNS) Type() Type { return TypeMTAResolveDNS }
func (m *MTAResolveDNS) Encode(w *Writer) {
	w.String(m.Name)
	w.U32(uint32(m.Qtype))
}
func (m *MTAResolveDNS) Decode(r *Reader) {
	m.Name = r.String()
	m.Qtype = uint16(r.U32())
}

// LookupDNSResult answers MTAResolveDNS: with StatusOK the records,
// TXT records as their joined strings and others in zone file syntax
// (none for a name without such records), Secure when
// a validating resolver authenticated them; StatusPermfail for a name
// that does not exist, StatusTempfail for a failure, which is what a
// validating resolver answers for bogus data.
type LookupDNSResult struct {
	Outcome
	Secure  bool
	Records []string
}

func (*LookupDNSResult) Type() Type { return TypeLookupDNSResult }
func (m *LookupDNSResult) Encode(w *Writer) {
	m.encode(w)
	w.Bool(m.Secure)
	w.Strings(m.Records)
}
func (m *LookupDNSResult) Decode(r *Reader) {
	m.decode(r)
	m.Secure = r.Bool()
	m.Records = r.Strings("records")
}

// MTAReportSubmit hands queue a message mta wrote (a TLS report, RFC
// 8460 §5.3) to send like any other: from Sender to Rcpts. Queue
// answers QueueReportQueued once it is committed.
type MTAReportSubmit struct {
	fileField
	Sender string
	Rcpts  []string
}

// NewMTAReportSubmit returns an MTAReportSubmit carrying the message.
func NewMTAReportSubmit(sender string, rcpts []string, body *os.File) *MTAReportSubmit {
	return &MTAReportSubmit{fileField{body}, sender, rcpts}
}

func (*MTAReportSubmit) Type() Type { return TypeMTAReportSubmit }
func (m *MTAReportSubmit) Encode(w *Writer) {
	w.String(m.Sender)
	w.Strings(m.Rcpts)
}
func (m *MTAReportSubmit) Decode(r *Reader) {
	m.Sender = r.String()
	m.Rcpts = r.Strings("recipients")
}

// QueueReportQueued answers MTAReportSubmit: StatusOK once the message
// is committed, else Text says why it is not.
type QueueReportQueued struct{ Outcome }

func (*QueueReportQueued) Type() Type         { return TypeQueueReportQueued }
func (m *QueueReportQueued) Encode(w *Writer) { m.encode(w) }
func (m *QueueReportQueued) Decode(r *Reader) { m.decode(r) }
