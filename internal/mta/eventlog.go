package mta

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"

	"smtpd/internal/envelope"
	"smtpd/internal/logging"
	"smtpd/proto"
)

// The event lines of the mta, in OpenSMTPD's format (see
// logging.Event): one "mta delivery" line per envelope tried, with the
// session's id, and one "mta tls" line per session under TLS. The
// lines "EVPID: relayed to ..." keep the TLS policy of each delivery.

// deliveryLine is the event line of the outcome of one envelope, as
// OpenSMTPD's mta_log writes it: source is our address ("" if there was
// no connection), relay the server's ("IP (PTR)") or, without a
// connection, the domain. A deferral, not tried, has no line.
func deliveryLine(session uint64, e *envelope.Envelope, source, relay string, res proto.DeliveryResult, now time.Time) (string, bool) {
	result := map[proto.Status]string{proto.StatusOK: "Ok", proto.StatusTempfail: "TempFail", proto.StatusPermfail: "PermFail"}[res.Status]
	if result == "" {
		return "", false
	}
	rcpt := e.Rcpt
	if rcpt == "" {
		rcpt = "-"
	}
	if source == "" {
		source = "-"
	}
	return fmt.Sprintf("%016x mta delivery evpid=%016x from=<%s> to=<%s> rcpt=<%s> source=\"%s\" relay=\"%s\" delay=%s result=\"%s\" stat=\"%s\"",
		session, e.ID, logging.Clean(e.Sender), logging.Clean(e.Dest), logging.Clean(rcpt), logging.Quote(source), logging.Quote(relay),
		logging.Duration(now.Sub(e.Created)), result, logging.Quote(res.Text)), true
}

// relayText names a server as OpenSMTPD's delivery lines do: its
// address, and its PTR name in parentheses when it has one.
func relayText(addr netip.Addr, ptr string) string {
	if ptr == "" {
		return logging.AddrText(addr.String())
	}
	return logging.AddrText(addr.String()) + " (" + ptr + ")"
}

// logSessionDelivery writes the delivery line of an envelope tried in
// the session c with the server cd.
func (m *MTA) logSessionDelivery(e *envelope.Envelope, c *client, cd candidate, reply string, err error) {
	source := ""
	if a, ok := c.w.Conn.LocalAddr().(*net.TCPAddr); ok {
		source = logging.AddrText(a.IP.String())
	}
	m.mu.Lock()
	relay := relayText(cd.host.addr, cd.host.ptr)
	m.mu.Unlock()
	if line, ok := deliveryLine(c.id, e, source, relay, outcome(reply, err), time.Now()); ok {
		m.child.Log.Event("%s", line)
	}
}

// logFailures writes the delivery lines of envelopes that failed
// without a session to the domain's servers: one id for them all, as
// for one attempt.
func (m *MTA) logFailures(domain string, envs []*envelope.Envelope, err error, session uint64) {
	res := outcome("", err)
	for _, e := range envs {
		if line, ok := deliveryLine(session, e, "", domain, res, time.Now()); ok {
			m.child.Log.Event("%s", line)
		}
	}
}

// newSessionID is the id of a session's lines, or of those of an
// attempt that made no session.
func newSessionID() uint64 { return rand.Uint64() }
