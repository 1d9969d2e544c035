// Package mfa is the mail filter process: smtp asks it at each phase of
// a session (connect, helo, mail, rcpt, data, commit) whether the
// session may proceed, and it answers proceed, reject, tempfail or
// disconnect, from the filter blocks of the configuration.
package mfa

import (
	"fmt"
	"time"

	"smtpd/internal/config"
	"smtpd/internal/privsep"
	"smtpd/proto"
)

// Run runs the mfa process on c.
func Run(c *privsep.Child) {
	if err := c.Ready(); err != nil {
		c.Log.Fatalf("%v", err)
	}
	lookup := c.Peers[proto.ProcLookup]
	// mfa holds no table contents: lookup answers for the filter tables
	has := func(id uint32, kind proto.TableKey, key string) (bool, error) {
		frames, err := c.Requests.Ask(lookup, &proto.MFATableQuery{Table: id, Kind: kind, Key: key}, tableTimeout)
		if err != nil {
			return false, err
		}
		a, ok := frames[0].Msg.(*proto.LookupTableResult)
		switch {
		case !ok:
			return false, fmt.Errorf("lookup answered %s", frames[0].Type)
		case a.Status == proto.StatusTempfail:
			return false, fmt.Errorf("table %d: %s", id, a.Text)
		}
		return a.Status == proto.StatusOK, nil
	}
	c.Serve(func(ch *proto.Channel, env *proto.Frame) error {
		if _, ok := env.Msg.(*proto.LookupTableResult); ok {
			if !c.Requests.Deliver(env) {
				return fmt.Errorf("answer to request %d that nobody asked", env.PeerID)
			}
			return nil
		}
		q, ok := env.Msg.(*proto.SMTPFilterQuery)
		if !ok {
			return fmt.Errorf("unexpected %s", env.Type)
		}
		// a verdict may wait for lookup: decide out of order
		go func() {
			v := Decide(c.Config.Filters, has, q)
			c.Stats.Increment("mfa."+q.Phase.String(), 1)
			if v.Verdict != proto.VerdictProceed {
				c.Stats.Increment("mfa."+q.Phase.String()+".refused", 1)
				c.Log.Infof("%016x: %s refused for [%s] helo %q from <%s> to <%s>: %d %s",
					q.Session.ID, q.Phase.String(), q.Session.Remote, q.Session.Helo, q.Session.Sender, q.Rcpt, v.Reply.Code, v.Reply.Text)
			}
			if err := c.Send(ch, v, env.PeerID); err != nil {
				c.Log.Fatalf("%v", err)
			}
		}()
		return nil
	})
}

// tableTimeout bounds the wait for lookup's answer about a table.
const tableTimeout = time.Minute

// TableCheck reports whether key is in the table numbered id, looked up
// as kind says; an error means the table cannot tell now.
type TableCheck func(id uint32, kind proto.TableKey, key string) (bool, error)

// tableFailure is the verdict when a filter's table cannot be read: a
// temporary failure, never a refusal for good (the client retries).
var tableFailure = proto.Reply{Code: 451, Enhanced: "4.3.0", Text: "Temporary failure of a filter table, try again later"}

// Decide is the verdict for a query: that of the first filter of the
// query's phase whose conditions all hold, else proceed. Tables are
// asked through has.
func Decide(filters []*config.Filter, has TableCheck, q *proto.SMTPFilterQuery) *proto.MFAFilterVerdict {
	phase := q.Phase.String()
	for _, f := range filters {
		if f.Phase != phase {
			continue
		}
		ok, err := matches(f, has, q)
		if err != nil {
			return &proto.MFAFilterVerdict{Verdict: proto.VerdictTempfail, Reply: tableFailure}
		}
		if !ok {
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

// matches reports whether all conditions of f hold for q: the regular
// expressions first, which cost no request to lookup.
func matches(f *config.Filter, has TableCheck, q *proto.SMTPFilterQuery) (bool, error) {
	s := q.Session
	if !(f.HeloRegex == nil || f.HeloRegex.MatchString(s.Helo)) ||
		!(f.SenderRegex == nil || f.SenderRegex.MatchString(s.Sender)) ||
		!(f.RcptRegex == nil || f.RcptRegex.MatchString(q.Rcpt)) {
		return false, nil
	}
	for _, c := range []struct {
		table *config.Table
		kind  proto.TableKey
		key   string
	}{
		{f.From, proto.TableKeyIP, s.Remote},
		{f.Helo, proto.TableKeyPlain, s.Helo},
		{f.Sender, proto.TableKeyAddress, s.Sender},
		{f.Rcpt, proto.TableKeyAddress, q.Rcpt},
	} {
		if c.table == nil {
			continue
		}
		ok, err := has(uint32(c.table.ID), c.kind, c.key)
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}
