package mfa

import (
	"slices"

	"smtpd/internal/config"
	"smtpd/proto"
)

// TableCheck reports whether key is in the table numbered id, looked up
// as kind says; an error means the table cannot tell now.
type TableCheck func(id uint32, kind proto.TableKey, key string) (bool, error)

// tableFailure is the verdict when a filter's table cannot be read: a
// temporary failure, never a refusal for good (the client retries).
var tableFailure = proto.Reply{Code: 451, Enhanced: "4.3.0", Text: "Temporary failure of a filter table, try again later"}

// builtinPhase reports whether a built-in filter of phase (as the
// configuration writes it) acts at p. HELO and EHLO are one phase to
// it.
func builtinPhase(phase string, p proto.Phase) bool {
	if p == proto.PhaseEhlo {
		p = proto.PhaseHelo
	}
	want, ok := proto.ParsePhase(phase)
	return ok && want == p
}

// Decide is the verdict of the built-in filters of a chain for a
// query: that of the first filter of the query's phase whose conditions
// all hold, else proceed. Tables are asked through has.
func Decide(chain []*config.Filter, has TableCheck, q *proto.SMTPFilterQuery) *proto.MFAFilterVerdict {
	verdict := &proto.MFAFilterVerdict{Verdict: proto.VerdictProceed}
	for _, f := range chain {
		v := decideBuiltin(f, has, q, nil)
		switch {
		case v == nil:
		case v.Verdict == proto.VerdictProceed:
			verdict.Junk = verdict.Junk || v.Junk
		default:
			return v
		}
	}
	return verdict
}

// ResultOf gives the result of a check of the session ("" when not
// made), for filters that test them.
type ResultOf func(check string) string

// decideBuiltin is the verdict of one built-in filter, or nil if it
// lets the query pass.
func decideBuiltin(f *config.Filter, has TableCheck, q *proto.SMTPFilterQuery, result ResultOf) *proto.MFAFilterVerdict {
	if f.Kind != config.FilterBuiltin || !builtinPhase(f.Phase, q.Phase) {
		return nil
	}
	for check, want := range f.Results {
		if result == nil || !slices.Contains(want, result(check)) {
			return nil
		}
	}
	ok, err := matches(f, has, q)
	if err != nil {
		return &proto.MFAFilterVerdict{Verdict: proto.VerdictTempfail, Reply: tableFailure}
	}
	if !ok {
		return nil
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
	case "junk":
		// proceed, marked; the filters after it still run
		return &proto.MFAFilterVerdict{Verdict: proto.VerdictProceed, Junk: true}
	}
	return v
}

// matches reports whether all conditions of f hold for q: the regular
// expressions first, which cost no request to lookup.
func matches(f *config.Filter, has TableCheck, q *proto.SMTPFilterQuery) (bool, error) {
	s := q.Session
	var rcpt string
	if q.Phase == proto.PhaseRcpt {
		rcpt = q.Param
	}
	if !(f.HeloRegex == nil || f.HeloRegex.MatchString(s.Helo)) ||
		!(f.SenderRegex == nil || f.SenderRegex.MatchString(s.Sender)) ||
		!(f.RcptRegex == nil || f.RcptRegex.MatchString(rcpt)) {
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
		{f.Rcpt, proto.TableKeyAddress, rcpt},
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
