package mta

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"smtpd/internal/envelope"
	"smtpd/proto"
)

func TestDeliveryLine(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	e := &envelope.Envelope{ID: 0x5e2a7b01c0ffee00, Sender: "alice@example.org", Rcpt: "bob@example.net", Dest: "bob@example.net", Created: now.Add(-62 * time.Second)}
	bounce := &envelope.Envelope{ID: 0x5e2a7b01c0ffee01, Dest: "alice@example.org", Created: now.Add(-26 * time.Hour)}
	const id = 0x3a9c1d7e0b2f4c68
	for _, tc := range []struct {
		name           string
		e              *envelope.Envelope
		source, relay  string
		reply          string
		err            error
		want           string
		wantNoLineSent bool
	}{
		{name: "ok", e: e, source: "192.0.2.25", relay: relayText(netip.MustParseAddr("198.51.100.7"), "mx1.example.net"),
			reply: "250 2.0.0 5e2a7b01 Message accepted for delivery",
			want:  `3a9c1d7e0b2f4c68 mta delivery evpid=5e2a7b01c0ffee00 from=<alice@example.org> to=<bob@example.net> rcpt=<bob@example.net> source="192.0.2.25" relay="198.51.100.7 (mx1.example.net)" delay=1m2s result="Ok" stat="250 2.0.0 5e2a7b01 Message accepted for delivery"`},
		{name: "permfail", e: e, source: "192.0.2.25", relay: relayText(netip.MustParseAddr("2001:db8::25"), ""),
			err:  replyError(&smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: `<bob@example.net>: "bob" unknown`}, ""),
			want: `3a9c1d7e0b2f4c68 mta delivery evpid=5e2a7b01c0ffee00 from=<alice@example.org> to=<bob@example.net> rcpt=<bob@example.net> source="192.0.2.25" relay="[2001:db8::25]" delay=1m2s result="PermFail" stat="550 5.1.1 <bob@example.net>: \"bob\" unknown"`},
		{name: "tempfail without a session, bounce", e: bounce, relay: "example.org",
			err:  tempfail(smtp.EnhancedCode{4, 4, 1}, errors.New("connection refused"), "could not connect to any exchanger"),
			want: `3a9c1d7e0b2f4c68 mta delivery evpid=5e2a7b01c0ffee01 from=<> to=<alice@example.org> rcpt=<-> source="-" relay="example.org" delay=1d2h result="TempFail" stat="451 4.4.1 could not connect to any exchanger: connection refused"`},
		{name: "not tried", e: e, relay: "example.net",
			err: deferral(now.Add(time.Minute), smtp.EnhancedCode{4, 4, 5}, "rate limit"), wantNoLineSent: true},
	} {
		got, ok := deliveryLine(id, tc.e, tc.source, tc.relay, outcome(tc.reply, tc.err), now)
		if ok == tc.wantNoLineSent || got != tc.want {
			t.Errorf("%s: got %v\n%s\nwant\n%s", tc.name, ok, got, tc.want)
		}
	}
}

func TestDeliveryLineStatuses(t *testing.T) {
	e := &envelope.Envelope{ID: 1, Dest: "a@example.org"}
	for status, want := range map[proto.Status]string{proto.StatusOK: `result="Ok"`, proto.StatusTempfail: `result="TempFail"`, proto.StatusPermfail: `result="PermFail"`} {
		line, ok := deliveryLine(1, e, "", "example.org", proto.DeliveryResult{Status: status, Text: "x"}, e.Created)
		if !ok || !strings.Contains(line, want) {
			t.Errorf("%v: %s", status, line)
		}
	}
}
