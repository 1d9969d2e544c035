package parent

import (
	"testing"
	"time"

	"smtpd/internal/envelope"
	"smtpd/proto"
)

func TestMDADeliveryLine(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	e := &envelope.Envelope{ID: 0x5e2a7b01c0ffee00, Sender: "alice@example.org", Rcpt: "postmaster@example.net", Dest: "bob@example.net", User: "bob", Created: now.Add(-3 * time.Second)}
	bounce := &envelope.Envelope{ID: 0x5e2a7b01c0ffee01, Dest: "alice@example.net", User: "vmail", Created: now.Add(-2 * time.Hour)}
	const id = 0x0badc0ffee15900d
	for _, tc := range []struct {
		name string
		e    *envelope.Envelope
		res  proto.DeliveryResult
		want string
	}{
		{"ok", e, proto.DeliveryResult{Status: proto.StatusOK},
			"0badc0ffee15900d mda delivery evpid=5e2a7b01c0ffee00 from=<alice@example.org> to=<bob@example.net> rcpt=<postmaster@example.net> user=bob delay=3s result=Ok stat=Delivered"},
		{"tempfail", e, proto.DeliveryResult{Status: proto.StatusTempfail, Text: "mda: maildir: no space left on device"},
			"0badc0ffee15900d mda delivery evpid=5e2a7b01c0ffee00 from=<alice@example.org> to=<bob@example.net> rcpt=<postmaster@example.net> user=bob delay=3s result=TempFail stat=mda: maildir: no space left on device"},
		{"permfail, bounce, no rcpt", bounce, proto.DeliveryResult{Status: proto.StatusPermfail, Text: "command exited 67\nsecond line"},
			`0badc0ffee15900d mda delivery evpid=5e2a7b01c0ffee01 from=<> to=<alice@example.net> user=vmail delay=2h result=PermFail stat=command exited 67\nsecond line`},
	} {
		got, ok := mdaDeliveryLine(id, tc.e, tc.res, now)
		if !ok || got != tc.want {
			t.Errorf("%s:\ngot  %s\nwant %s", tc.name, got, tc.want)
		}
	}
	if _, ok := mdaDeliveryLine(id, e, proto.DeliveryResult{Status: proto.StatusDeferred}, now); ok {
		t.Error("a deferral has a line")
	}
}
