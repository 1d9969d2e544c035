package parent

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"smtpd/internal/envelope"
	"smtpd/internal/lookup"
	"smtpd/internal/privsep"
	"smtpd/proto"
)

// MDATimeout bounds one local delivery.
const MDATimeout = 10 * time.Minute

// deliverLocal runs one local delivery in an mda process started as the
// recipient's user, and tells queue how it went.
func (p *Parent) deliverLocal(m *proto.QueueDeliverLocal) {
	body := m.File()
	defer body.Close()
	e, err := envelope.Unmarshal(m.Envelope)
	if err != nil {
		p.log.Warnf("lost child: queue: bad envelope to deliver: %v", err)
		p.fatal <- err
		return
	}
	p.stats.Increment("mda.envelope", 1)
	p.stats.Increment("mda.running", 1)
	res := p.runMDA(e, m.Envelope, body)
	p.stats.Decrement("mda.running", 1)
	res.EvpID = e.ID
	if err := p.children[proto.ProcQueue].ch.Send(&proto.ParentDeliveryResult{DeliveryResult: res}, 0); err != nil {
		p.fatal <- err
	}
}

func (p *Parent) runMDA(e *envelope.Envelope, evp []byte, body *os.File) proto.DeliveryResult {
	acct, err := p.resolver.Account(e.Action, e.User)
	if err != nil {
		if errors.Is(err, lookup.ErrNoAccount) {
			return proto.DeliveryResult{Status: proto.StatusPermfail, Text: err.Error()}
		}
		return proto.DeliveryResult{Status: proto.StatusTempfail, Text: err.Error()}
	}
	mine, theirs, err := proto.Socketpair()
	if err != nil {
		return proto.DeliveryResult{Status: proto.StatusTempfail, Text: err.Error()}
	}
	ch, err := proto.NewChannel(mine, proto.ProcParent, proto.ProcMDA)
	mine.Close()
	if err != nil {
		theirs.Close()
		return proto.DeliveryResult{Status: proto.StatusTempfail, Text: err.Error()}
	}
	defer ch.Close()
	args := []string{p.opts.Argv0, "-x", "mda", "-f", p.cfg.Path}
	if p.opts.Foreground {
		args = append(args, "-d")
	}
	if p.opts.Verbose {
		args = append(args, "-v")
	}
	cmd := &exec.Cmd{
		Path:        p.opts.Executable,
		Args:        args,
		Stdout:      os.Stderr,
		Stderr:      os.Stderr,
		ExtraFiles:  []*os.File{theirs},
		Dir:         "/",
		Env:         []string{"PATH=/usr/bin:/bin", "USER=" + acct.Name, "HOME=" + acct.Directory},
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	if privsep.Privileged() {
		// the delivery runs as the recipient, with no other groups
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(acct.UID), Gid: uint32(acct.GID), Groups: []uint32{}}
	}
	if fi, err := os.Stat(acct.Directory); err == nil && fi.IsDir() {
		cmd.Dir = acct.Directory
	}
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		return proto.DeliveryResult{Status: proto.StatusTempfail, Text: fmt.Sprintf("mda: %v", err)}
	}
	res := p.talkMDA(ch, evp, body)
	if res.Status == 0 {
		cmd.Process.Kill()
	}
	werr := cmd.Wait()
	if res.Status == 0 {
		res = proto.DeliveryResult{Status: proto.StatusTempfail, Text: fmt.Sprintf("mda: no result (%v)", werr)}
	}
	return res
}

// talkMDA hands the delivery to the mda process and waits for its
// result; a zero Status means none came.
func (p *Parent) talkMDA(ch *proto.Channel, evp []byte, body *os.File) proto.DeliveryResult {
	defer ch.Close()
	if err := ch.Send(proto.NewParentMDADeliver(evp, body), 1); err != nil {
		return proto.DeliveryResult{}
	}
	done := make(chan proto.DeliveryResult, 1)
	go func() {
		env, err := ch.Recv()
		if err != nil {
			done <- proto.DeliveryResult{}
			return
		}
		if m, ok := env.Msg.(*proto.MDADeliveryResult); ok {
			done <- m.DeliveryResult
			return
		}
		done <- proto.DeliveryResult{}
	}()
	select {
	case res := <-done:
		return res
	case <-time.After(MDATimeout):
		return proto.DeliveryResult{Status: proto.StatusTempfail, Text: "mda: timed out"}
	}
}
