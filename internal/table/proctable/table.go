package proctable

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"smtpd/internal/table"
)

// Defaults for zero Options fields, and the fixed policies.
const (
	// DefaultTimeout bounds each request when Options.Timeout is 0.
	// OpenSMTPD waits forever; a table that takes longer is broken,
	// and the client waiting on the SMTP side deserves a 4xx instead.
	DefaultTimeout = 10 * time.Second
	// DefaultSMTPDVersion is sent as config|smtpd-version when
	// Options.SMTPDVersion is empty: the OpenSMTPD release whose
	// protocol we speak, which programs may check.
	DefaultSMTPDVersion = "7.8.0"
	// minStartTimeout is the least time a start is given for the
	// handshake: programs connect to their database before
	// register|ready, which can take longer than one lookup.
	minStartTimeout = 30 * time.Second
)

// Errors. Every failure of the program (it exited, hung, or broke the
// protocol) wraps ErrBroken and restarts it; ErrTimeout and ErrProtocol
// wrap ErrBroken too, so callers can test either with errors.Is.
var (
	ErrBroken     = errors.New("table program broken")
	ErrTimeout    = fmt.Errorf("table program timed out: %w", ErrBroken)
	ErrProtocol   = fmt.Errorf("table program broke the protocol: %w", ErrBroken)
	ErrRestarting = errors.New("table program is restarting")
	ErrClosed     = errors.New("table closed")
	ErrKey        = errors.New("key refused")
	ErrService    = errors.New("service not provided")
	ErrFailure    = errors.New("table program answered error")
)

// Options configure a table program.
type Options struct {
	// Name is the table's name in the configuration, sent as
	// config|tablename and in every request. It may not contain "|",
	// CR, LF or NUL.
	Name string
	// Command is the program and its arguments, run without a shell.
	// A name without "/" is looked up in $PATH.
	Command []string
	// Credential, if not nil, is the user the program runs as when we
	// are root.
	Credential *syscall.Credential
	// Timeout bounds each request (write and answer); 0 means
	// DefaultTimeout.
	Timeout time.Duration
	// StartTimeout bounds a start up to register|ready; 0 means
	// Timeout, but at least 30s.
	StartTimeout time.Duration
	// Log receives the program's standard error, a line per call, and
	// the table's notes on failures and restarts. nil discards them.
	Log func(format string, args ...any)
	// SMTPDVersion is sent as config|smtpd-version; empty means
	// DefaultSMTPDVersion.
	SMTPDVersion string
}

// tuning holds the restart policy: the first restart comes after
// backoffMin, each next one waits twice as long up to backoffMax; a
// process that ran stable resets it. Close gives a program grace after
// SIGTERM. Fields, not constants, so that tests need not wait minutes.
type tuning struct {
	backoffMin, backoffMax, stable, grace time.Duration
}

// defaultTuning is the policy of the filter processes
// (internal/parent/filters.go).
func defaultTuning() tuning {
	return tuning{backoffMin: time.Second, backoffMax: time.Minute, stable: time.Minute, grace: 5 * time.Second}
}

// Table is a running table program. It implements table.Backend; its
// methods may be called from many goroutines at once.
type Table struct {
	o            Options
	startTimeout time.Duration
	tune         tuning

	// turn is held (a value sent) by the one request on the wire:
	// OpenSMTPD is synchronous with its table programs, and some
	// programs rely on it despite what smtpd-tables(7) says. A channel
	// rather than a mutex so that a caller can give up waiting.
	turn chan struct{}
	stop chan struct{} // closed by Close
	wg   sync.WaitGroup

	mu       sync.Mutex
	cur      *proc     // the running program; nil while it restarts
	down     error     // why cur is nil
	retryAt  time.Time // the next start, or zero if not yet known
	services uint16    // registered by the last program started
	nextID   uint32
	closed   bool
}

// Start starts the program and does the handshake. An error here
// (the program cannot run, exits, or registers nothing or an unknown
// service) is returned, for smtpd to refuse the configuration, as
// OpenSMTPD does. Later failures only restart the program.
func Start(o Options) (*Table, error) {
	return start(o, defaultTuning())
}

func start(o Options, tune tuning) (*Table, error) {
	if !validField(o.Name) {
		return nil, fmt.Errorf("proctable: invalid table name %q", o.Name)
	}
	if len(o.Command) == 0 || o.Command[0] == "" {
		return nil, fmt.Errorf("proctable %q: no command", o.Name)
	}
	o.Command = append([]string(nil), o.Command...)
	path, err := resolve(o.Command[0])
	if err != nil {
		return nil, fmt.Errorf("proctable %q: %w", o.Name, err)
	}
	o.Command[0] = path
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	startTimeout := o.StartTimeout
	if startTimeout <= 0 {
		startTimeout = max(o.Timeout, minStartTimeout)
	}
	if o.SMTPDVersion == "" {
		o.SMTPDVersion = DefaultSMTPDVersion
	}
	if !validKey(o.SMTPDVersion) {
		return nil, fmt.Errorf("proctable %q: invalid smtpd version %q", o.Name, o.SMTPDVersion)
	}
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	t := &Table{
		o:            o,
		startTimeout: startTimeout,
		tune:         tune,
		turn:         make(chan struct{}, 1),
		stop:         make(chan struct{}),
		nextID:       rand.Uint32(),
	}
	p, err := startProc(&t.o, t.startTimeout, nil)
	if err != nil {
		return nil, err
	}
	t.publish(p)
	t.wg.Add(1)
	go t.supervise(p)
	return t, nil
}

// resolve makes the program's path absolute: it runs in "/", where a
// relative path would mean something else than in the configuration.
func resolve(name string) (string, error) {
	if filepath.Base(name) == name {
		return exec.LookPath(name)
	}
	return filepath.Abs(name)
}

// Services returns the services the program registered (at its last
// start), including ones table.Service has no constant for (auth,
// relayhost, string, regex).
func (t *Table) Services() []table.Service {
	t.mu.Lock()
	bits := t.services
	t.mu.Unlock()
	var out []table.Service
	for _, s := range allServices() {
		if b, _ := serviceBit(s); bits&b != 0 {
			out = append(out, table.Service(s))
		}
	}
	return out
}

// Lookup asks the program for key: a check for the set-like services
// (domain, netaddr, source, mailaddr; found has an empty value), a
// lookup for the others (see serviceOp). The key is sent as given:
// OpenSMTPD lowercases it first, so callers should too. A key with CR,
// LF or NUL is refused unsent (ErrKey). A service the program did not
// register is ErrService.
//
// Calls take turns (see the package doc): waiting for the turn is
// bounded by ctx only, the exchange itself by Timeout.
//
// An error is never "not found": the program answered error
// (ErrFailure: it stays up), or failed (ErrBroken: it is killed and
// restarted after a backoff), or is restarting (ErrRestarting, at
// once), or ctx ended while waiting for the turn or the answer (the
// request is still answered, or times out, in the background).
func (t *Table) Lookup(ctx context.Context, service table.Service, key string) (string, bool, error) {
	op, ok := serviceOp(service)
	if !ok {
		return "", false, fmt.Errorf("proctable %q: unknown service %q: %w", t.o.Name, service, ErrService)
	}
	if !validKey(key) {
		// no key in the message: it may be a password (auth)
		return "", false, fmt.Errorf("proctable %q: %s %s: key contains CR, LF or NUL: %w", t.o.Name, op, service, ErrKey)
	}
	if len(key) > maxLine-1024 {
		return "", false, fmt.Errorf("proctable %q: %s %s: key of %d bytes is too long: %w", t.o.Name, op, service, len(key), ErrKey)
	}
	r, err := t.exchange(ctx, op, string(service), key)
	if err != nil {
		return "", false, err
	}
	switch r.kind {
	case replyFound:
		return r.text, true, nil
	case replyNotFound:
		return "", false, nil
	}
	return "", false, fmt.Errorf("proctable %q: %s %s: %q: %w", t.o.Name, op, service, r.text, ErrFailure)
}

// Update asks the program to reload its data (smtpctl update table).
// An error answer is ErrFailure and leaves the program running, as in
// OpenSMTPD; failures of the program are as for Lookup.
func (t *Table) Update(ctx context.Context) error {
	r, err := t.exchange(ctx, opUpdate, "", "")
	if err != nil {
		return err
	}
	if r.kind == replyError {
		return fmt.Errorf("proctable %q: update: %q: %w", t.o.Name, r.text, ErrFailure)
	}
	return nil
}

// Close stops the program: end of file on its input, SIGTERM to its
// process group, SIGKILL after a grace period. It returns once the
// program is reaped and the table's goroutines are done. Calls after
// Close fail with ErrClosed.
func (t *Table) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	p := t.cur
	t.cur = nil
	t.down = ErrClosed
	close(t.stop)
	t.mu.Unlock()
	if p != nil {
		p.stop(t.tune.grace, fmt.Errorf("proctable %q: %w", t.o.Name, ErrClosed))
	}
	t.wg.Wait()
	return nil
}

// result is the outcome of one exchange.
type result struct {
	r   reply
	err error
}

// exchange sends one request and waits for its answer. The exchange
// itself runs on its own goroutine, holding the turn, so that a caller
// whose ctx ends can leave while the program still gets its full
// Timeout; the next request waits for the turn rather than reading a
// stale answer.
func (t *Table) exchange(ctx context.Context, op, service, key string) (reply, error) {
	if err := ctx.Err(); err != nil {
		return reply{}, fmt.Errorf("proctable %q: %s: %w", t.o.Name, op, err)
	}
	select {
	case t.turn <- struct{}{}:
	case <-ctx.Done():
		return reply{}, fmt.Errorf("proctable %q: %s: waiting for the program: %w", t.o.Name, op, ctx.Err())
	}
	p, id, err := t.ready(op, service)
	if err != nil {
		<-t.turn
		return reply{}, err
	}
	done := make(chan result, 1)
	go func() {
		defer t.wg.Done()
		defer func() { <-t.turn }()
		r, err := t.roundTrip(p, op, service, id, key)
		done <- result{r, err}
	}()
	select {
	case res := <-done:
		return res.r, res.err
	case <-ctx.Done():
		return reply{}, fmt.Errorf("proctable %q: %s: waiting for the answer: %w", t.o.Name, op, ctx.Err())
	}
}

// ready returns the running program and a fresh request id, or why
// there is none; on success the caller's goroutine is counted in wg,
// so that Close waits for it.
func (t *Table) ready(op, service string) (*proc, string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, "", fmt.Errorf("proctable %q: %w", t.o.Name, ErrClosed)
	}
	p := t.cur
	if p == nil {
		return nil, "", t.restartingErr(t.down)
	}
	if why := p.failed(); why != nil {
		// it exited; the supervisor has not noticed yet
		return nil, "", t.restartingErr(why)
	}
	if op != opUpdate {
		if bit, _ := serviceBit(service); p.services&bit == 0 {
			return nil, "", fmt.Errorf("proctable %q: %s: the program did not register it: %w", t.o.Name, service, ErrService)
		}
	}
	t.nextID++
	t.wg.Add(1)
	return p, formatID(t.nextID), nil
}

// restartingErr says that the program is down, why, and when it starts
// again. The reason is text, not wrapped: this call did not see the
// program fail, it is only turned away.
func (t *Table) restartingErr(why error) error {
	if t.retryAt.IsZero() {
		return fmt.Errorf("proctable %q: %w after: %v", t.o.Name, ErrRestarting, why)
	}
	wait := max(time.Until(t.retryAt), 0).Round(time.Millisecond)
	return fmt.Errorf("proctable %q: %w (next start in %v) after: %v", t.o.Name, ErrRestarting, wait, why)
}

// roundTrip writes one request and reads its answer, within Timeout.
// Any failure ends the program's run.
func (t *Table) roundTrip(p *proc, op, service, id, key string) (reply, error) {
	what := op
	if service != "" {
		what += " " + service
	}
	p.conn.SetDeadline(time.Now().Add(t.o.Timeout))
	if _, err := p.conn.Write(appendRequest(nil, time.Now(), t.o.Name, op, service, id, key)); err != nil {
		return reply{}, t.broken(p, p.brokenf(err, what+": write"))
	}
	line, err := p.readLine()
	if err != nil {
		return reply{}, t.broken(p, p.brokenf(err, what+": no answer"))
	}
	r, err := parseReply(line, op, id)
	if err != nil {
		return reply{}, t.broken(p, fmt.Errorf("proctable %q: %s: %v: %s: %w", t.o.Name, what, err, quote(line), ErrProtocol))
	}
	return r, nil
}

// broken ends p's run because of err, which it returns. The supervisor
// sees the process go and starts the next after the backoff.
func (t *Table) broken(p *proc, err error) error {
	p.fail(err)
	t.mu.Lock()
	closed := t.closed
	if t.cur == p {
		t.cur = nil
		t.down = err
		t.retryAt = time.Time{}
	}
	t.mu.Unlock()
	if !closed {
		// a request cut short by Close is no news
		t.o.Log("table %s: %v; killed pid %d", t.o.Name, err, p.pid)
	}
	return err
}

// publish makes p the running program, unless the table is closed.
func (t *Table) publish(p *proc) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.cur = p
	t.services = p.services
	t.down = nil
	t.retryAt = time.Time{}
	t.o.Log("table %s: started %s as pid %d", t.o.Name, t.o.Command[0], p.pid)
	return true
}

// retire marks p gone, if it is still the running program, and sets
// the time of the next start.
func (t *Table) retire(p *proc, why error, next time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cur == p {
		t.cur = nil
	}
	t.down = why
	t.retryAt = next
}

// supervise starts the program again, with a backoff, whenever its
// run ends, until Close.
func (t *Table) supervise(p *proc) {
	defer t.wg.Done()
	// Close waits for us: what was the program last must be reaped
	// by then, even if a failure took it off t.cur before Close came
	defer func() { p.stop(t.tune.grace, fmt.Errorf("proctable %q: %w", t.o.Name, ErrClosed)) }()
	backoff := t.tune.backoffMin
	for {
		select {
		case <-p.exited:
		case <-t.stop:
			return
		}
		select {
		case <-t.stop:
			return // Close ended it: no restart to announce
		default:
		}
		p.conn.Close()
		why := p.failed()
		if p.waitErr != nil && !errors.Is(why, p.waitErr) {
			why = fmt.Errorf("%w (then %v)", why, p.waitErr)
		}
		if time.Since(p.started) >= t.tune.stable {
			backoff = t.tune.backoffMin
		}
		for {
			t.retire(p, why, time.Now().Add(backoff))
			t.o.Log("table %s: %v; starting it again in %v", t.o.Name, why, backoff)
			timer := time.NewTimer(backoff)
			select {
			case <-timer.C:
			case <-t.stop:
				timer.Stop()
				return
			}
			backoff = min(2*backoff, t.tune.backoffMax)
			np, err := startProc(&t.o, t.startTimeout, t.stop)
			if err != nil {
				why = err
				continue
			}
			if !t.publish(np) {
				np.stop(t.tune.grace, fmt.Errorf("proctable %q: %w", t.o.Name, ErrClosed))
				return
			}
			p = np
			break
		}
	}
}
