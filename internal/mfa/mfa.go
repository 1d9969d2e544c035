// Package mfa is the mail filter process: smtp asks it at each phase of
// a session (connect, helo, mail, rcpt, data, commit) whether the
// session may proceed, and it answers proceed, reject, tempfail or
// disconnect.
package mfa

import (
	"fmt"

	"smtpd/internal/privsep"
	"smtpd/proto"
)

// phaseNames are the stat keys of the phases.
var phaseNames = map[proto.Phase]string{
	proto.PhaseConnect: "connect", proto.PhaseHelo: "helo", proto.PhaseMail: "mail",
	proto.PhaseRcpt: "rcpt", proto.PhaseData: "data", proto.PhaseCommit: "commit",
}

// Run runs the mfa process on c.
func Run(c *privsep.Child) {
	if err := c.Ready(); err != nil {
		c.Log.Fatalf("%v", err)
	}
	c.Serve(func(ch *proto.Channel, env *proto.Envelope) error {
		q, ok := env.Msg.(*proto.SMTPFilterQuery)
		if !ok {
			return fmt.Errorf("unexpected %s", env.Type)
		}
		v := Decide(q)
		c.Stats.Increment("mfa."+phaseNames[q.Phase], 1)
		return c.Send(ch, v, env.PeerID)
	})
}

// Decide is the verdict for a query. The built-in policy lets every
// phase proceed; the query carries all a rule needs.
func Decide(q *proto.SMTPFilterQuery) *proto.MFAFilterVerdict {
	return &proto.MFAFilterVerdict{Verdict: proto.VerdictProceed}
}
