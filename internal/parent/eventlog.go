package parent

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"smtpd/internal/envelope"
	"smtpd/internal/logging"
	"smtpd/proto"
)

// mdaDeliveryLine is the event line of a local delivery, in OpenSMTPD's
// format (see logging.Event), as its mda_log writes it: the delivery's
// id, the envelope, the account the delivery ran as, the time since the
// message came, and the outcome: "result=Ok stat=Delivered", or
// TempFail or PermFail with why. A deferral, not tried, has no line.
func mdaDeliveryLine(id uint64, e *envelope.Envelope, res proto.DeliveryResult, now time.Time) (string, bool) {
	var result, stat string
	switch res.Status {
	case proto.StatusOK:
		result, stat = "Ok", "Delivered"
	case proto.StatusTempfail:
		result, stat = "TempFail", cmp.Or(res.Text, "Error")
	case proto.StatusPermfail:
		result, stat = "PermFail", cmp.Or(res.Text, "Error")
	default:
		return "", false
	}
	rcpt := ""
	if e.Rcpt != "" {
		rcpt = "rcpt=<" + logging.Clean(e.Rcpt) + "> "
	}
	user := e.User
	if user == "" {
		user, _, _ = strings.Cut(e.Dest, "@")
	}
	return fmt.Sprintf("%016x mda delivery evpid=%016x from=<%s> to=<%s> %suser=%s delay=%s result=%s stat=%s",
		id, e.ID, logging.Clean(e.Sender), logging.Clean(e.Dest), rcpt, logging.Token(user),
		logging.Duration(now.Sub(e.Created)), result, logging.Clean(stat)), true
}

// logLocalDelivery writes the event line of a local delivery, under an
// id of its own.
func (p *Parent) logLocalDelivery(e *envelope.Envelope, res proto.DeliveryResult) {
	if line, ok := mdaDeliveryLine(rand.Uint64(), e, res, time.Now()); ok {
		p.log.Event("%s", line)
	}
}
