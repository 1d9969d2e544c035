package mta

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"smtpd/proto"
)

// errHostsBusy is why a session finds no exchanger when some have all
// the sessions they may (SessionsPerHost).
var errHostsBusy = errors.New("all are busy or disabled after failures")

// deliveryError is a failed delivery, classified once, where the
// failure happens: the reply code says temporary (4xx) or permanent
// (5xx), the enhanced status code (RFC 3463) what failed. Its text,
// "451 4.4.2 what: cause", is what queue records, and queue takes a
// bounce's Status field from it.
type deliveryError struct {
	code   int
	status smtp.EnhancedCode
	msg    string
	cause  error
	// retry, if set, is when the delivery, not tried, should be: it
	// was put off (proto.StatusDeferred), which is no failure.
	retry time.Time
}

func (e *deliveryError) Error() string {
	s := fmt.Sprintf("%d %d.%d.%d", e.code, e.status[0], e.status[1], e.status[2])
	if e.msg != "" {
		s += " " + e.msg
	}
	switch {
	case e.cause != nil && e.msg != "":
		s += ": " + e.cause.Error()
	case e.cause != nil:
		s += " " + e.cause.Error()
	}
	return s
}

func (e *deliveryError) Unwrap() error { return e.cause }

// Temporary reports a failure worth retrying.
func (e *deliveryError) Temporary() bool { return e.code/100 == 4 }

// tempfail is a temporary failure on our side or of the connection:
// 451, "local error in processing" (RFC 5321 §4.2.3), with status
// saying which.
func tempfail(status smtp.EnhancedCode, cause error, format string, args ...any) *deliveryError {
	return &deliveryError{code: 451, status: status, msg: fmt.Sprintf(format, args...), cause: cause}
}

// deferral is a delivery not tried now, to be tried at the time retry:
// the queue puts its envelope off without counting a failure. Its code
// is that of a temporary failure, for the logs.
func deferral(retry time.Time, status smtp.EnhancedCode, format string, args ...any) *deliveryError {
	de := tempfail(status, nil, format, args...)
	de.retry = retry
	return de
}

// permfail is a failure that will not change on retry.
func permfail(code int, status smtp.EnhancedCode, format string, args ...any) *deliveryError {
	return &deliveryError{code: code, status: status, msg: fmt.Sprintf(format, args...)}
}

// replyError classifies the reply of a server that refused a step:
// its codes are kept, a missing enhanced code is X.0.0 of the reply's
// class (RFC 3463 §3), and a reply that is neither 4xx nor 5xx where
// one of those was due is a temporary protocol error (X.5.0). step, if
// set, says where the reply came.
func replyError(se *smtp.SMTPError, step string) *deliveryError {
	text := strings.ReplaceAll(se.Message, "\n", " ")
	if step != "" {
		text += " (at " + step + ")"
	}
	class := se.Code / 100
	if class != 4 && class != 5 {
		return tempfail(smtp.EnhancedCode{4, 5, 0}, nil, "unexpected reply %03d %s", se.Code, text)
	}
	status := se.EnhancedCode
	if status[0] != class || status[1] < 0 || status[2] < 0 {
		status = smtp.EnhancedCode{class, 0, 0}
	}
	return &deliveryError{code: se.Code, status: status, msg: text}
}

// mxError classifies lookup's failure to find the exchangers of a
// domain: NXDOMAIN and the like are permanent (550 5.1.2), a null MX
// too, with the codes RFC 7505 §3 asks for (556 5.1.10), anything else
// temporary (451 4.4.3).
func mxError(res *proto.LookupMXResult) *deliveryError {
	switch {
	case res.Status != proto.StatusPermfail:
		return tempfail(smtp.EnhancedCode{4, 4, 3}, nil, "%s", res.Text)
	case res.NullMX:
		return permfail(556, smtp.EnhancedCode{5, 1, 10}, "%s", res.Text)
	}
	return permfail(550, smtp.EnhancedCode{5, 1, 2}, "%s", res.Text)
}

// outcome is what queue records for one envelope, all but its id:
// delivered, with the remote host's reply, when err is nil; put off to
// a time for a deferral; otherwise the failure with its class. An error
// that was not classified where it happened is a temporary local
// failure (451 4.3.0), never a reason to bounce.
func outcome(reply string, err error) proto.DeliveryResult {
	if err == nil {
		return proto.DeliveryResult{Status: proto.StatusOK, Text: reply}
	}
	var de *deliveryError
	if !errors.As(err, &de) {
		de = tempfail(smtp.EnhancedCode{4, 3, 0}, err, "")
	}
	switch {
	case !de.retry.IsZero():
		return proto.DeliveryResult{Status: proto.StatusDeferred, Text: de.Error(), Retry: de.retry}
	case de.Temporary():
		return proto.DeliveryResult{Status: proto.StatusTempfail, Text: de.Error()}
	}
	return proto.DeliveryResult{Status: proto.StatusPermfail, Text: de.Error()}
}
