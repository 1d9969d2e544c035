// Package mfa is the mail filter process: smtp asks it at each phase of
// a session (connect, helo, mail, rcpt, data, commit) whether the
// session may proceed, and it answers proceed, reject, tempfail or
// disconnect, from the filter blocks of the configuration.
package mfa

import (
	"fmt"
	"net/netip"
	"strings"

	"smtpd/internal/config"
	"smtpd/internal/privsep"
	"smtpd/proto"
)

// Run runs the mfa process on c.
func Run(c *privsep.Child) {
	if err := c.Ready(); err != nil {
		c.Log.Fatalf("%v", err)
	}
	c.Serve(func(ch *proto.Channel, env *proto.Frame) error {
		q, ok := env.Msg.(*proto.SMTPFilterQuery)
		if !ok {
			return fmt.Errorf("unexpected %s", env.Type)
		}
		v := Decide(c.Config.Filters, q)
		c.Stats.Increment("mfa."+q.Phase.String(), 1)
		if v.Verdict != proto.VerdictProceed {
			c.Stats.Increment("mfa."+q.Phase.String()+".refused", 1)
			c.Log.Infof("%016x: %s refused for [%s] helo %q from <%s> to <%s>: %d %s",
				q.Session.ID, q.Phase.String(), q.Session.Remote, q.Session.Helo, q.Session.Sender, q.Rcpt, v.Reply.Code, v.Reply.Text)
		}
		return c.Send(ch, v, env.PeerID)
	})
}

// Decide is the verdict for a query: that of the first filter of the
// query's phase whose conditions all hold, else proceed.
func Decide(filters []*config.Filter, q *proto.SMTPFilterQuery) *proto.MFAFilterVerdict {
	phase := q.Phase.String()
	for _, f := range filters {
		if f.Phase != phase || !matches(f, q) {
			continue
		}
		v := &proto.MFAFilterVerdict{
			Verdict: proto.VerdictReject,
			Reply:   proto.Reply{Code: uint32(f.Code), Enhanced: f.Enhanced, Text: f.Text},
		}
		switch f.Action {
		case "tempfail":
			v.Verdict = proto.VerdictTempfail
		case "disconnect":
			v.Verdict = proto.VerdictDisconnect
		}
		return v
	}
	return &proto.MFAFilterVerdict{Verdict: proto.VerdictProceed}
}

func matches(f *config.Filter, q *proto.SMTPFilterQuery) bool {
	s := q.Session
	if f.From != nil {
		ip, err := netip.ParseAddr(s.Remote)
		if err != nil || !f.From.Data.HasIP(ip) {
			return false
		}
	}
	helo := strings.ToLower(s.Helo)
	if f.Helo != nil {
		if _, ok := f.Helo.Data.Lookup(helo); !ok {
			return false
		}
	}
	if f.Sender != nil && !f.Sender.Data.HasAddress(s.Sender) {
		return false
	}
	if f.Rcpt != nil && !f.Rcpt.Data.HasAddress(q.Rcpt) {
		return false
	}
	return (f.HeloRegex == nil || f.HeloRegex.MatchString(s.Helo)) &&
		(f.SenderRegex == nil || f.SenderRegex.MatchString(s.Sender)) &&
		(f.RcptRegex == nil || f.RcptRegex.MatchString(q.Rcpt))
}
