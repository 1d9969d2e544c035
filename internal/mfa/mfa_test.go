package mfa

import (
	"errors"
	"testing"

	"smtpd/internal/config"
	"smtpd/internal/lookup"
	"smtpd/proto"
)

func TestDecide(t *testing.T) {
	cfg, err := config.Parse([]byte(`
filter "blocked-nets" {
  from = ["192.0.2.0/24", "2001:db8::1"]
}
filter "bad-helo" {
  helo_regex = "^(localhost|\\[)"
  action     = "disconnect"
}
filter "spam-senders" {
  sender  = ["@spam.example", "eve@example.net"]
  action  = "tempfail"
  message = "451 4.7.1 Slow down"
}
filter "admin" {
  rcpt_regex = "^admin@"
  message    = "550 5.7.1 No mail for admin"
}
filter "bulk" {
  sender_regex = "^bulk-"
  phase        = "data"
  message      = "554 5.7.1 No bulk mail"
}
`), "/etc/mail/smtpd.conf")
	if err != nil {
		t.Fatal(err)
	}
	resolver := lookup.NewResolver(cfg)
	ok := proto.Session{Remote: "198.51.100.7", Helo: "mail.example.org", Sender: "a@example.org"}
	tests := []struct {
		phase   proto.Phase
		sess    proto.Session
		rcpt    string
		verdict proto.Verdict
		code    uint32
	}{
		{proto.PhaseConnect, ok, "", proto.VerdictProceed, 0},
		{proto.PhaseConnect, proto.Session{Remote: "192.0.2.44"}, "", proto.VerdictReject, 550},
		{proto.PhaseConnect, proto.Session{Remote: "2001:db8::1"}, "", proto.VerdictReject, 550},
		{proto.PhaseConnect, proto.Session{Remote: "::ffff:192.0.2.1"}, "", proto.VerdictReject, 550},
		{proto.PhaseHelo, proto.Session{Remote: "198.51.100.7", Helo: "localhost"}, "", proto.VerdictDisconnect, 421},
		{proto.PhaseHelo, proto.Session{Remote: "198.51.100.7", Helo: "[1.2.3.4]"}, "", proto.VerdictDisconnect, 421},
		{proto.PhaseHelo, ok, "", proto.VerdictProceed, 0},
		{proto.PhaseMail, proto.Session{Sender: "x@SPAM.example"}, "", proto.VerdictTempfail, 451},
		{proto.PhaseMail, proto.Session{Sender: "eve@example.net"}, "", proto.VerdictTempfail, 451},
		{proto.PhaseMail, ok, "", proto.VerdictProceed, 0},
		{proto.PhaseRcpt, ok, "admin@example.org", proto.VerdictReject, 550},
		{proto.PhaseRcpt, ok, "bob@example.org", proto.VerdictProceed, 0},
		{proto.PhaseMail, proto.Session{Sender: "bulk-1@example.org"}, "", proto.VerdictProceed, 0},
		{proto.PhaseData, proto.Session{Sender: "bulk-1@example.org"}, "", proto.VerdictReject, 554},
	}
	for i, tt := range tests {
		v := Decide(cfg.Filters, resolver.TableHas, &proto.SMTPFilterQuery{Phase: tt.phase, Session: tt.sess, Param: tt.rcpt})
		if v.Verdict != tt.verdict || v.Reply.Code != tt.code {
			t.Errorf("%d: %+v", i, v)
		}
	}
}

// A table that cannot be read makes the verdict a temporary failure,
// never a refusal for good nor a pass.
func TestDecideTableFailure(t *testing.T) {
	cfg, err := config.Parse([]byte(`
filter "blocked" {
  from = ["192.0.2.0/24"]
}
`), "/etc/mail/smtpd.conf")
	if err != nil {
		t.Fatal(err)
	}
	broken := func(uint32, proto.TableKey, string) (bool, error) { return false, errors.New("table unreadable") }
	v := Decide(cfg.Filters, broken, &proto.SMTPFilterQuery{Phase: proto.PhaseConnect, Session: proto.Session{Remote: "192.0.2.1"}})
	if v.Verdict != proto.VerdictTempfail || v.Reply.Code != 451 {
		t.Errorf("verdict %+v, want a 451 tempfail", v)
	}
}
