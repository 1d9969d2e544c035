package mta

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"smtpd/proto"
)

// TestClassification: every failure carries its class and enhanced
// status code from where it was made, and queue gets them as text.
func TestClassification(t *testing.T) {
	cause := errors.New("connection reset")
	cases := []struct {
		err    error
		status proto.Status
		text   string
	}{
		{tempfail(smtp.EnhancedCode{4, 4, 2}, cause, "connection lost at MAIL"), proto.StatusTempfail, "451 4.4.2 connection lost at MAIL: connection reset"},
		{tempfail(smtp.EnhancedCode{4, 3, 0}, cause, ""), proto.StatusTempfail, "451 4.3.0 connection reset"},
		{permfail(554, smtp.EnhancedCode{5, 4, 6}, "mail loop"), proto.StatusPermfail, "554 5.4.6 mail loop"},
		{replyError(&smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such\nuser"}, ""), proto.StatusPermfail, "550 5.1.1 no such user"},
		{replyError(&smtp.SMTPError{Code: 421, Message: "bye"}, "EHLO"), proto.StatusTempfail, "421 4.0.0 bye (at EHLO)"},
		{replyError(&smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{4, 1, 1}, Message: "mixed"}, ""), proto.StatusPermfail, "550 5.0.0 mixed"},
		{replyError(&smtp.SMTPError{Code: 250, Message: "ok?"}, "DATA"), proto.StatusTempfail, "451 4.5.0 unexpected reply 250 ok? (at DATA)"},
		{mxError(&proto.LookupMXResult{Outcome: proto.Outcome{Status: proto.StatusPermfail, Text: "dns: null.test: domain accepts no mail (null MX)"}, NullMX: true}), proto.StatusPermfail, "556 5.1.10 dns: null.test: domain accepts no mail (null MX)"},
		{mxError(&proto.LookupMXResult{Outcome: proto.Outcome{Status: proto.StatusPermfail, Text: "dns: nosuch.test: no such domain"}}), proto.StatusPermfail, "550 5.1.2 dns: nosuch.test: no such domain"},
		{mxError(&proto.LookupMXResult{Outcome: proto.Outcome{Status: proto.StatusTempfail, Text: "dns: flaky.test: SERVFAIL"}}), proto.StatusTempfail, "451 4.4.3 dns: flaky.test: SERVFAIL"},
		// wrapped, it keeps its class; unclassified is a local tempfail
		{fmt.Errorf("session: %w", permfail(553, smtp.EnhancedCode{5, 6, 7}, "no SMTPUTF8")), proto.StatusPermfail, "553 5.6.7 no SMTPUTF8"},
		{cause, proto.StatusTempfail, "451 4.3.0 connection reset"},
	}
	for _, c := range cases {
		r := outcome("", c.err)
		if r.Status != c.status || r.Text != c.text || !r.Retry.IsZero() {
			t.Errorf("%v: %v %q retry %v, want %v %q", c.err, r.Status, r.Text, r.Retry, c.status, c.text)
		}
	}
	// a deferral is no failure: it carries the time to try again, also
	// wrapped
	at := time.Now().Add(time.Minute)
	for _, err := range []error{
		deferral(at, smtp.EnhancedCode{4, 4, 5}, "rate limit"),
		fmt.Errorf("relay: %w", deferral(at, smtp.EnhancedCode{4, 4, 5}, "rate limit")),
	} {
		if r := outcome("", err); r.Status != proto.StatusDeferred || r.Text != "451 4.4.5 rate limit" || !r.Retry.Equal(at) {
			t.Errorf("%v: %+v, want deferred to %v", err, r, at)
		}
	}
	// an outer classification wins over the remote reply it wraps
	auth := tempfail(smtp.EnhancedCode{4, 7, 8}, replyError(&smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "bad credentials"}, ""), "authentication with 127.0.0.1 failed")
	var de *deliveryError
	if !errors.As(auth, &de) || !de.Temporary() || de.status != (smtp.EnhancedCode{4, 7, 8}) || de.Error() != "451 4.7.8 authentication with 127.0.0.1 failed: 535 5.7.8 bad credentials" {
		t.Errorf("%v", auth)
	}
	if r := outcome("250 2.0.0 queued", nil); r.Status != proto.StatusOK || r.Text != "250 2.0.0 queued" {
		t.Errorf("delivered: %v %q", r.Status, r.Text)
	}
}
