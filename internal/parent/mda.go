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
	p.logLocalDelivery(e, res)
	if err := p.children[proto.ProcQueue].ch.Send(&proto.ParentDeliveryResult{DeliveryResult: res}, 0); err != nil {
		p.fatal <- err
	}
}

// accountTimeout bounds the wait for lookup's answer about an account.
const accountTimeout = time.Minute

// accountTTL is how long the parent keeps an account lookup found: a
// burst of deliveries to one user asks lookup once, not once a message,
// which cost two messages between processes per delivery and a twentieth
// of the daemon's CPU in the catch-all benchmark.
const accountTTL = 5 * time.Second

// accountCacheMax bounds the accounts kept; past it the cache starts
// afresh.
const accountCacheMax = 1024

// accountCache keeps the accounts lookup found, for accountTTL. A reload
// empties it.
type accountCache struct {
	mu sync.Mutex
	m  map[accountKey]cachedAccount
}

type accountKey struct{ action, user string }

type cachedAccount struct {
	acct  proto.Account
	until time.Time
}

func (c *accountCache) get(k accountKey, now time.Time) (proto.Account, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a, ok := c.m[k]
	if !ok || now.After(a.until) {
		return proto.Account{}, false
	}
	return a.acct, true
}

func (c *accountCache) put(k accountKey, acct proto.Account, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= accountCacheMax {
		c.m = map[accountKey]cachedAccount{}
	}
	c.m[k] = cachedAccount{acct, now.Add(accountTTL)}
}

func (c *accountCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m = nil
}

// account asks lookup which account a delivery runs as: the parent runs
// no rule engine and reads no table, so that a table's content never
// steers code running as root. A failure is the delivery's result.
func (p *Parent) account(e *envelope.Envelope) (proto.Account, *proto.DeliveryResult) {
	key, now := accountKey{e.Action, e.User}, time.Now()
	if acct, ok := p.accounts.get(key, now); ok {
		return acct, nil
	}
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
	p.accounts.put(key, a.Account, now)
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
	defer p.mdas.put(w)
	res, err := w.deliver(evp, acct, body, p.mdaTimeout(e))
	if err != nil {
		// a worker that does not answer is of no use to anyone: every
		// delivery it holds ends with a temporary failure
		p.mdas.kill(w, err)
		return proto.DeliveryResult{Status: proto.StatusTempfail, Text: fmt.Sprintf("mda: no result (%v)", err)}
	}
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
		// the fault injection settings reach deliveries too; each agent
		// draws its own sequence, or one that injects a failure first
		// would inject it at every start, for as long as a retry lasts
		for _, v := range os.Environ() {
			if strings.HasPrefix(v, "SMTPD_") {
				cmd.Env = append(cmd.Env, v)
			}
		}
		cmd.Env = append(cmd.Env, fmt.Sprintf("%s=%d", monkey.StreamEnv, p.mdaStarts.Add(1)))
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
	w := &mdaWorker{key: mdaKey(acct), cmd: cmd, ch: ch, reqs: proto.NewRequests(nil), exited: make(chan error, 1)}
	go func() { w.exited <- cmd.Wait() }()
	go w.read()
	p.stats.Increment("mda.process", 1)
	return w, nil
}

// MDAIdle is how long an idle mda process waits for another delivery
// to the same user before it is stopped.
const MDAIdle = 10 * time.Second

// MDAConcurrent bounds the deliveries one mda process runs at once;
// past it, a user's burst gets another process.
const MDAConcurrent = 32

// mdaWorker is the delivery agent of one user: an mda process running
// as that user, taking up to MDAConcurrent deliveries at once over
// its channel, each with its message's descriptor, so that a burst of
// mail for a user costs one process, not one per message.
type mdaWorker struct {
	key    string
	cmd    *exec.Cmd
	ch     *proto.Channel
	reqs   *proto.Requests
	exited chan error

	// busy is the number of deliveries under way, idle the timer that
	// stops the worker once it has had none for MDAIdle; dead is set
	// once it was killed. All three under the pool's lock.
	busy int
	idle *time.Timer
	dead bool
}

func mdaKey(a proto.Account) string { return fmt.Sprintf("%d:%d:%s", a.UID, a.GID, a.Directory) }

// read hands the worker's answers to the deliveries that wait for
// them; when the channel breaks, they all fail at once.
func (w *mdaWorker) read() {
	for {
		f, err := w.ch.Recv()
		if err == nil && !w.reqs.Deliver(f) {
			err = fmt.Errorf("answer to request %d that nobody asked", f.PeerID)
		}
		if err != nil {
			w.reqs.Fail(fmt.Errorf("mda process: %w", err))
			return
		}
	}
}

// mdaTimeout is how long a delivery may take: MDATimeout, or for an
// externals action the time its longest list of externals may take
// with some slack, so that the mda reports the externals' own timeouts
// rather than being killed by the parent first.
func (p *Parent) mdaTimeout(e *envelope.Envelope) time.Duration {
	if act := p.cfg.Action(e.Action); act != nil {
		return max(MDATimeout, act.ExternalsTimeout()+time.Minute)
	}
	return MDATimeout
}

// deliver hands one delivery to the worker and waits up to timeout for
// its result.
func (w *mdaWorker) deliver(evp []byte, acct proto.Account, body *os.File, timeout time.Duration) (proto.DeliveryResult, error) {
	frames, err := w.reqs.Ask(w.ch, proto.NewParentMDADeliver(evp, acct, body), timeout)
	if err != nil {
		return proto.DeliveryResult{}, err
	}
	m, ok := frames[0].Msg.(*proto.MDADeliveryResult)
	if !ok || m.Status == 0 {
		return proto.DeliveryResult{}, fmt.Errorf("mda process answered %s", frames[0].Type)
	}
	return m.DeliveryResult, nil
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

// kill ends a broken worker; the deliveries it holds fail with err,
// and no new one goes to it.
func (pool *mdaPool) kill(w *mdaWorker, err error) {
	pool.mu.Lock()
	w.dead = true
	pool.mu.Unlock()
	w.reqs.Fail(err)
	w.ch.Close()
	w.cmd.Process.Kill()
}

// mdaPool keeps the delivery agents by user: a delivery goes to an
// agent of its user with room for one more, or starts one.
type mdaPool struct {
	mu      sync.Mutex
	workers map[string][]*mdaWorker
}

func newMDAPool() *mdaPool { return &mdaPool{workers: map[string][]*mdaWorker{}} }

// get returns a worker for acct with room for one more delivery, which
// it counts, or starts one.
func (pool *mdaPool) get(acct proto.Account, start func(proto.Account) (*mdaWorker, error)) (*mdaWorker, error) {
	key := mdaKey(acct)
	pool.mu.Lock()
	for _, w := range pool.workers[key] {
		if !w.dead && w.busy < MDAConcurrent {
			w.busy++
			if w.idle != nil {
				w.idle.Stop()
				w.idle = nil
			}
			pool.mu.Unlock()
			return w, nil
		}
	}
	pool.mu.Unlock()
	w, err := start(acct)
	if err != nil {
		return nil, err
	}
	pool.mu.Lock()
	w.busy = 1
	pool.workers[key] = append(pool.workers[key], w)
	pool.mu.Unlock()
	return w, nil
}

// put ends one delivery of w; a worker left without any stops after
// MDAIdle, and a dead one leaves the pool once its last delivery ends.
func (pool *mdaPool) put(w *mdaWorker) {
	pool.mu.Lock()
	defer pool.mu.Unlock()
	if w.busy--; w.busy > 0 {
		return
	}
	if w.dead {
		pool.remove(w)
		return
	}
	w.idle = time.AfterFunc(MDAIdle, func() {
		pool.mu.Lock()
		defer pool.mu.Unlock()
		if w.busy > 0 || w.idle == nil {
			return
		}
		pool.remove(w)
		w.stop()
	})
}

// remove drops w from the pool; the pool's lock is held.
func (pool *mdaPool) remove(w *mdaWorker) {
	list := pool.workers[w.key]
	for i, x := range list {
		if x == w {
			pool.workers[w.key] = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(pool.workers[w.key]) == 0 {
		delete(pool.workers, w.key)
	}
}

// close stops every worker.
func (pool *mdaPool) close() {
	pool.mu.Lock()
	defer pool.mu.Unlock()
	for key, list := range pool.workers {
		for _, w := range list {
			if w.idle != nil {
				w.idle.Stop()
			}
			w.stop()
		}
		delete(pool.workers, key)
	}
}
