// Package mda is the local delivery process: the parent starts it as
// the recipient's user (`smtpd -x mda`) and hands it deliveries with
// the message's descriptor; it writes maildirs and answers with the
// outcome of each.
package mda

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"smtpd/internal/address"
	"smtpd/internal/config"
	"smtpd/internal/envelope"
	"smtpd/internal/monkey"
	"smtpd/internal/privsep"
	"smtpd/proto"
)

// agent is the delivery agent of one user: it takes many deliveries at
// once, each with its own message descriptor, and deliveries into one
// maildir share their directory fsyncs.
type agent struct {
	cfg      *config.Config
	maildirs maildirs
	// logf logs what is worth a line per delivery attempt: each try
	// of an external.
	logf func(string, ...any)
}

// Run serves deliveries from the parent until it closes the channel,
// each as it comes, answering each under its request id.
func Run(c *privsep.Child) {
	a := &agent{cfg: c.Config, logf: c.Log.Infof}
	var running sync.WaitGroup
	for {
		env, err := c.Parent.Recv()
		if err == io.EOF {
			// the parent closes an idle agent; finish what runs anyway
			running.Wait()
			os.Exit(0)
		}
		if err != nil {
			c.Log.Fatalf("%v", err)
		}
		m, ok := env.Msg.(*proto.ParentMDADeliver)
		if !ok {
			c.Log.Fatalf("unexpected %s", env.Type)
		}
		running.Add(1)
		go func() {
			defer running.Done()
			res := a.deliver(m.Account, m.Envelope, m.File())
			m.File().Close()
			if res.Status == proto.StatusOK {
				monkey.Crash("mda.after-deliver")
			}
			if err := c.Parent.Send(&proto.MDADeliveryResult{DeliveryResult: res}, env.PeerID); err != nil {
				c.Log.Fatalf("%v", err)
			}
		}()
	}
}

// tempError is a failure worth retrying: I/O, missing directories.
type tempError struct{ err error }

func (t tempError) Error() string { return t.err.Error() }
func (t tempError) Unwrap() error { return t.err }

func (a *agent) deliver(acct proto.Account, data []byte, body *os.File) proto.DeliveryResult {
	e, err := envelope.Unmarshal(data)
	if err != nil {
		return proto.DeliveryResult{Status: proto.StatusTempfail, Text: err.Error()}
	}
	res := proto.DeliveryResult{EvpID: e.ID, Status: proto.StatusOK}
	if err := a.deliverEnvelope(acct, e, body); err != nil {
		res.Status, res.Text = proto.StatusPermfail, err.Error()
		var t tempError
		if errors.As(err, &t) {
			res.Status = proto.StatusTempfail
		}
	}
	return res
}

// deliverEnvelope delivers as acct, the account the parent resolved and
// started this process as.
func (a *agent) deliverEnvelope(acct proto.Account, e *envelope.Envelope, body *os.File) error {
	cfg := a.cfg
	if err := monkey.Fail("mda.tempfail"); err != nil {
		return tempError{err}
	}
	act := cfg.Action(e.Action)
	if act == nil {
		return tempError{fmt.Errorf("mda: no action %q in the configuration", e.Action)}
	}
	vars := config.TemplateVars{
		Dest:   address.Split(e.Dest),
		Rcpt:   address.Split(e.Rcpt),
		Sender: address.Split(e.Sender),
		User:   acct,
	}
	switch t := e.Target; {
	case strings.HasPrefix(t, "|"):
		argv, err := config.SplitWords(t[1:])
		if err != nil || len(argv) == 0 {
			return fmt.Errorf("mda: bad command %q", t)
		}
		return deliverCommand(argv, commandEnv(e, acct), e, body)
	case strings.HasPrefix(t, "/"):
		return deliverMbox(t, e, body)
	case t != "":
		return fmt.Errorf("mda: bad delivery target %q", t)
	}
	if act.Method == config.Externals {
		dir := "/"
		if fi, err := os.Stat(acct.Directory); err == nil && fi.IsDir() {
			dir = acct.Directory
		}
		return deliverExternals(act, vars, commandEnv(e, acct), dir, e, body, a.logf)
	}
	if act.Method == config.MDA {
		argv, err := act.Target.Argv(vars)
		if err != nil {
			return tempError{err}
		}
		return deliverCommand(argv, commandEnv(e, acct), e, body)
	}
	target, err := act.Target.Eval(vars)
	if err != nil {
		return tempError{err}
	}
	switch act.Method {
	case config.Maildir:
		return a.maildirs.deliver(target, cfg.Hostname, e, body)
	case config.Mbox:
		return deliverMbox(target, e, body)
	case config.LMTP:
		return deliverLMTP(target, cfg.Hostname, e, body)
	}
	return tempError{fmt.Errorf("mda: %s delivery is not available", act.Method)}
}

// commandEnv is the environment of an mda command, as OpenSMTPD sets it.
func commandEnv(e *envelope.Envelope, acct proto.Account) []string {
	dest := address.Split(e.Dest)
	local, _, _ := strings.Cut(dest.User, address.SubAddressDelimiter)
	_, ext, _ := strings.Cut(address.Split(e.Rcpt).User, address.SubAddressDelimiter)
	return []string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"SHELL=/bin/sh",
		"USER=" + acct.Name,
		"LOGNAME=" + acct.Name,
		"HOME=" + acct.Directory,
		"RECIPIENT=" + e.Dest,
		"ORIGINAL_RECIPIENT=" + e.Rcpt,
		"SENDER=" + e.Sender,
		"LOCAL=" + local,
		"EXTENSION=" + ext,
		"DOMAIN=" + dest.Domain,
	}
}
