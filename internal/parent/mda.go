package parent

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"smtpd/internal/envelope"
	"smtpd/internal/monkey"
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

// accountTimeout bounds the wait for lookup's answer about an account.
const accountTimeout = time.Minute

// account asks lookup which account a delivery runs as: the parent runs
// no rule engine and reads no table, so that a table's content never
// steers code running as root. A failure is the delivery's result.
func (p *Parent) account(e *envelope.Envelope) (proto.Account, *proto.DeliveryResult) {
	frames, err := p.requests.Ask(p.children[proto.ProcLookup].ch, &proto.ParentAccountQuery{Action: e.Action, User: e.User}, accountTimeout)
	if err != nil {
		return proto.Account{}, &proto.DeliveryResult{Status: proto.StatusTempfail, Text: err.Error()}
	}
	a, ok := frames[0].Msg.(*proto.LookupAccountResult)
	switch {
	case !ok:
		return proto.Account{}, &proto.DeliveryResult{Status: proto.StatusTempfail, Text: "lookup answered " + frames[0].Type.String()}
	case a.Status != proto.StatusOK:
		return proto.Account{}, &proto.DeliveryResult{Status: a.Status, Text: a.Text}
	}
	return a.Account, nil
}

func (p *Parent) runMDA(e *envelope.Envelope, evp []byte, body *os.File) proto.DeliveryResult {
	acct, failed := p.account(e)
	if failed != nil {
		return *failed
	}
	w, err := p.mdas.get(acct, p.startMDA)
	if err != nil {
		return proto.DeliveryResult{Status: proto.StatusTempfail, Text: fmt.Sprintf("mda: %v", err)}
	}
	res := w.deliver(evp, acct, body)
	if res.Status == 0 {
		werr := w.kill()
		return proto.DeliveryResult{Status: proto.StatusTempfail, Text: fmt.Sprintf("mda: no result (%v)", werr)}
	}
	p.mdas.put(w)
	return res
}

// startMDA starts an mda process as acct.
func (p *Parent) startMDA(acct proto.Account) (*mdaWorker, error) {
	mine, theirs, err := proto.Socketpair()
	if err != nil {
		return nil, err
	}
	defer theirs.Close()
	ch, err := proto.NewChannel(mine, proto.ProcParent, proto.ProcMDA)
	mine.Close()
	if err != nil {
		return nil, err
	}
	cmd := p.selfCommand("mda", theirs)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/bin:/bin", "USER=" + acct.Name, "HOME=" + acct.Directory}
	if monkey.Enabled {
		// the fault injection settings reach deliveries too
		for _, v := range os.Environ() {
			if strings.HasPrefix(v, "SMTPD_") {
				cmd.Env = append(cmd.Env, v)
			}
		}
	}
	if privsep.Privileged() {
		// the delivery runs as the recipient, with no other groups
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: acct.UID, Gid: acct.GID, Groups: []uint32{}}
	}
	if fi, err := os.Stat(acct.Directory); err == nil && fi.IsDir() {
		cmd.Dir = acct.Directory
	}
	if err := cmd.Start(); err != nil {
		ch.Close()
		return nil, err
	}
	w := &mdaWorker{key: mdaKey(acct), cmd: cmd, ch: ch, exited: make(chan error, 1)}
	go func() { w.exited <- cmd.Wait() }()
	p.stats.Increment("mda.process", 1)
	return w, nil
}

// MDAIdle is how long an idle mda process waits for another delivery
// to the same user before it is stopped.
const MDAIdle = 10 * time.Second

// mdaWorker is an mda process running as one user; it takes deliveries
// one at a time for as long as it is busy, so that a burst of mail for a
// user costs one process start, not one per message.
type mdaWorker struct {
	key    string
	cmd    *exec.Cmd
	ch     *proto.Channel
	exited chan error
	idle   *time.Timer
}

func mdaKey(a proto.Account) string { return fmt.Sprintf("%d:%d:%s", a.UID, a.GID, a.Directory) }

// deliver hands one delivery to the worker and waits for its result; a
// zero Status means none came and the worker is broken.
func (w *mdaWorker) deliver(evp []byte, acct proto.Account, body *os.File) proto.DeliveryResult {
	if err := w.ch.Send(proto.NewParentMDADeliver(evp, acct, body), 1); err != nil {
		return proto.DeliveryResult{}
	}
	done := make(chan proto.DeliveryResult, 1)
	go func() {
		env, err := w.ch.Recv()
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
		return proto.DeliveryResult{}
	}
}

// stop ends an idle worker: it exits when its channel closes.
func (w *mdaWorker) stop() {
	w.ch.Close()
	go func() {
		select {
		case <-w.exited:
		case <-time.After(5 * time.Second):
			w.cmd.Process.Kill()
		}
	}()
}

// kill ends a broken worker and returns how it exited.
func (w *mdaWorker) kill() error {
	w.ch.Close()
	w.cmd.Process.Kill()
	return <-w.exited
}

// mdaPool keeps idle mda processes by user.
type mdaPool struct {
	mu   sync.Mutex
	idle map[string][]*mdaWorker
}

func newMDAPool() *mdaPool { return &mdaPool{idle: map[string][]*mdaWorker{}} }

// get returns an idle worker for acct, or starts one.
func (pool *mdaPool) get(acct proto.Account, start func(proto.Account) (*mdaWorker, error)) (*mdaWorker, error) {
	key := mdaKey(acct)
	pool.mu.Lock()
	for n := len(pool.idle[key]); n > 0; n = len(pool.idle[key]) {
		w := pool.idle[key][n-1]
		pool.idle[key] = pool.idle[key][:n-1]
		if w.idle.Stop() {
			pool.mu.Unlock()
			return w, nil
		}
	}
	pool.mu.Unlock()
	return start(acct)
}

// put makes a worker idle; it stops after MDAIdle without work.
func (pool *mdaPool) put(w *mdaWorker) {
	pool.mu.Lock()
	defer pool.mu.Unlock()
	w.idle = time.AfterFunc(MDAIdle, func() {
		pool.mu.Lock()
		list := pool.idle[w.key]
		for i, x := range list {
			if x == w {
				pool.idle[w.key] = append(list[:i], list[i+1:]...)
				break
			}
		}
		pool.mu.Unlock()
		w.stop()
	})
	pool.idle[w.key] = append(pool.idle[w.key], w)
}

// close stops every idle worker.
func (pool *mdaPool) close() {
	pool.mu.Lock()
	defer pool.mu.Unlock()
	for key, list := range pool.idle {
		for _, w := range list {
			if w.idle.Stop() {
				w.stop()
			}
		}
		delete(pool.idle, key)
	}
}
