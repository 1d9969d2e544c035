package procfilter

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for zero Options fields.
const (
	// DefaultSessionTimeout is OpenSMTPD's SMTPD_SESSION_TIMEOUT.
	DefaultSessionTimeout = 300 * time.Second
	// DefaultTimeout bounds each exchange. OpenSMTPD itself waits
	// forever; we would rather restart a hung filter.
	DefaultTimeout = 30 * time.Second
)

// Options configure one filter process's connection.
type Options struct {
	Name           string        // the filter's name in the config, for errors
	SMTPDVersion   string        // sent as config|smtpd-version|... (e.g. "7.8.0": filters check it)
	SessionTimeout time.Duration // config|smtp-session-timeout|<seconds>; 0 means 300s
	Admd           string        // config|admd|...; empty means os.Hostname()
	Timeout        time.Duration // per request (filter-result, each data-line exchange); 0 means 30s
	// Now gives the time stamped on lines when the caller passes a zero
	// time. Timeouts use the real clock whatever Now says.
	Now func() time.Time
}

// Conn is the daemon's side of one filter process. Its methods may be
// called from many goroutines at once.
type Conn struct {
	name    string
	timeout time.Duration
	now     func() time.Time
	rw      io.ReadWriteCloser

	// Set by the reader during the handshake, read-only once ready is
	// closed (Start returns only then).
	phases uint32
	events uint32
	ready  chan struct{}

	wmu sync.Mutex // serialises whole lines on w
	w   *bufio.Writer

	mu        sync.Mutex
	pending   map[uint64]*request // by token
	nextToken uint64
	err       error
	closeErr  error
	done      chan struct{}

	onReport atomic.Pointer[func(sid uint64, text string)]
}

// request is one filter request, or one data-line stream, waiting for
// the filter. It stays pending until the filter answers or the timeout
// breaks the Conn, even if the caller gave up: a late answer must find
// its request, and one that never comes is a hung filter.
type request struct {
	sid, token uint64
	phase      string
	data       bool
	timer      *time.Timer

	result chan Result // filter: capacity 1, the reader never blocks

	lines   chan dataItem // data-line: the filter's lines, in order
	gone    chan struct{} // closed when the caller stops reading lines
	goneMu  sync.Once
	sentEnd atomic.Bool  // our "." is (being) written
	last    atomic.Int64 // data-line: UnixNano of the last line either way
	busy    atomic.Int32 // data-line: >0 while the wait is on our side
}

type dataItem struct {
	line []byte // unstuffed, without newline
	end  bool   // the filter's final "."
}

func (r *request) abandon() { r.goneMu.Do(func() { close(r.gone) }) }

func (r *request) touch() { r.last.Store(time.Now().UnixNano()) }

// Start writes the config lines and reads register lines until
// register|ready (bounded by Timeout); anything else is an error. It
// then starts a reader goroutine. On error rw has been closed.
func Start(rw io.ReadWriteCloser, o Options) (*Conn, error) {
	if o.SessionTimeout <= 0 {
		o.SessionTimeout = DefaultSessionTimeout
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Admd == "" {
		// lka_proc_config sends the host name when no admd is set
		o.Admd, _ = os.Hostname()
	}
	c := &Conn{
		name:    o.Name,
		timeout: o.Timeout,
		now:     o.Now,
		rw:      rw,
		ready:   make(chan struct{}),
		w:       bufio.NewWriterSize(rw, 64<<10),
		pending: make(map[uint64]*request),
		done:    make(chan struct{}),
	}
	var b []byte
	b = append(b, "config|smtpd-version"...)
	b = appendParams(b, []string{o.SMTPDVersion})
	b = append(b, "\nconfig|protocol|"+ProtocolVersion+"\n"...)
	b = append(b, "config|smtp-session-timeout|"...)
	b = strconv.AppendInt(b, int64(o.SessionTimeout/time.Second), 10)
	b = append(b, "\nconfig|subsystem|smtp-in\nconfig|admd"...)
	b = appendParams(b, []string{o.Admd})
	b = append(b, "\nconfig|ready\n"...)

	// the reader runs before we write: a filter may well register
	// before it has read its config, and net.Pipe writes block until
	// the other side reads
	go c.readLoop()
	if err := c.write(b, true); err != nil {
		return nil, err
	}
	t := time.NewTimer(c.timeout)
	defer t.Stop()
	select {
	case <-c.ready:
		return c, nil
	case <-c.done:
		return nil, c.Err()
	case <-t.C:
		c.fail(fmt.Errorf("procfilter %q: no register|ready within %v: %w", c.name, c.timeout, ErrTimeout))
		return nil, c.Err()
	}
}

// Phases returns the filter phases registered, in protocol order.
func (c *Conn) Phases() []string {
	var out []string
	for _, p := range allPhases() {
		if c.HasPhase(p) {
			out = append(out, p)
		}
	}
	return out
}

// HasPhase tells whether the filter registered the filter phase p.
func (c *Conn) HasPhase(p string) bool {
	bit, ok := phaseBit(p)
	return ok && c.phases&bit != 0
}

// HasEvent tells whether the filter registered the smtp-in report event e.
func (c *Conn) HasEvent(e string) bool {
	bit, _, _, ok := eventInfo(e)
	return ok && c.events&bit != 0
}

// OnReport sets the function that receives the reports the filter
// sends itself (report|<time>|smtp-in|<sid>|<text>), for the caller to
// broadcast as filter-report events. It runs on the reader goroutine:
// it must not block, nor call Filter or DataLines (Report is fine).
func (c *Conn) OnReport(f func(sid uint64, text string)) {
	if f == nil {
		c.onReport.Store(nil)
		return
	}
	c.onReport.Store(&f)
}

// Done is closed once the Conn is broken or closed.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err says why the Conn is broken, or nil while it works.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close breaks the Conn and closes the underlying pipe. Waiting calls
// return an error wrapping ErrBroken.
func (c *Conn) Close() error {
	c.fail(fmt.Errorf("procfilter %q: closed: %w", c.name, ErrBroken))
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeErr
}

// fail breaks the Conn with err, unless it is already broken: the first
// reason is the one worth reporting. Closing rw unblocks a pending
// write and the reader.
func (c *Conn) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	close(c.done)
	for _, r := range c.pending {
		r.timer.Stop()
	}
	c.mu.Unlock()
	cerr := c.rw.Close()
	c.mu.Lock()
	c.closeErr = cerr
	c.mu.Unlock()
}

// brokenf makes an error that breaks the Conn.
func (c *Conn) brokenf(format string, args ...any) error {
	return fmt.Errorf("procfilter %q: %s: %w", c.name, fmt.Sprintf(format, args...), ErrBroken)
}

// quote shows a line from the filter in an error, cut short.
func quote(line []byte) string {
	const max = 200
	if len(line) > max {
		return strconv.Quote(string(line[:max])) + "... (" + strconv.Itoa(len(line)) + " bytes)"
	}
	return strconv.Quote(string(line))
}

// write writes whole lines, flushing if asked. A write that blocks for
// longer than the timeout means the filter stopped reading: break.
func (c *Conn) write(b []byte, flush bool) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.Err(); err != nil {
		return err
	}
	watchdog := time.AfterFunc(c.timeout, func() {
		c.fail(fmt.Errorf("procfilter %q: writing blocked for %v: %w", c.name, c.timeout, ErrTimeout))
	})
	defer watchdog.Stop()
	return c.writeLocked(b, flush)
}

// writeLocked is write without the watchdog, for callers holding wmu
// and watching the time themselves.
func (c *Conn) writeLocked(b []byte, flush bool) error {
	_, err := c.w.Write(b)
	if err == nil && flush {
		err = c.w.Flush()
	}
	if err != nil {
		c.fail(c.brokenf("write: %v", err))
		return c.Err()
	}
	return nil
}

// register makes a pending request with a fresh token, its timer armed.
func (c *Conn) register(sid uint64, phase string, data bool) (*request, error) {
	r := &request{sid: sid, phase: phase, data: data}
	if data {
		r.lines = make(chan dataItem, 64)
		r.gone = make(chan struct{})
		r.touch()
	} else {
		r.result = make(chan Result, 1)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return nil, c.err
	}
	c.nextToken++
	r.token = c.nextToken
	c.pending[r.token] = r
	r.timer = time.AfterFunc(c.timeout, func() { c.expire(r) })
	return r, nil
}

// expire runs when r's timer fires. A filter request has had its time.
// A data-line stream times out only after Timeout of silence both
// ways, not counting time spent waiting on our side (reading the
// message, writing the filter's lines out).
func (c *Conn) expire(r *request) {
	c.mu.Lock()
	if c.err != nil || c.pending[r.token] != r {
		c.mu.Unlock()
		return
	}
	if r.data {
		idle := time.Since(time.Unix(0, r.last.Load()))
		if r.busy.Load() > 0 {
			r.timer.Reset(c.timeout)
			c.mu.Unlock()
			return
		}
		if idle < c.timeout {
			r.timer.Reset(c.timeout - idle)
			c.mu.Unlock()
			return
		}
	}
	c.mu.Unlock()
	what := "no filter-result for " + r.phase
	if r.data {
		what = "data-line stream silent"
	}
	c.fail(fmt.Errorf("procfilter %q: %s (session %016x) for %v: %w", c.name, what, r.sid, c.timeout, ErrTimeout))
}

// find returns the pending request of a token, checking it belongs to
// sid. No request means the filter answered something nobody asked:
// since requests stay pending until answered, that is a protocol error.
func (c *Conn) find(token, sid uint64) (*request, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.pending[token]
	if r == nil || r.sid != sid {
		return nil, fmt.Errorf("no request of session %016x with token %016x", sid, token)
	}
	return r, nil
}

// remove ends a pending request: answered, or never sent.
func (c *Conn) remove(r *request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pending, r.token)
	r.timer.Stop()
}

// readLoop reads the filter's lines until the pipe breaks.
func (c *Conn) readLoop() {
	br := bufio.NewReaderSize(c.rw, maxLine)
	registered := false
	for {
		b, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			c.fail(c.brokenf("line longer than %d bytes: %s", maxLine, quote(b)))
			return
		}
		if err != nil {
			if len(b) > 0 {
				c.fail(c.brokenf("output ends within a line (%v): %s", err, quote(b)))
			} else {
				c.fail(c.brokenf("reading output: %v", err))
			}
			return
		}
		line := b[:len(b)-1]
		m, err := parseLine(string(line))
		if err != nil {
			c.fail(c.brokenf("%v: %s", err, quote(line)))
			return
		}
		if !registered {
			registered, err = c.handshake(m)
		} else {
			err = c.dispatch(m)
		}
		if err != nil {
			c.fail(c.brokenf("%v: %s", err, quote(line)))
			return
		}
	}
}

// handshake takes one line before register|ready.
func (c *Conn) handshake(m message) (ready bool, err error) {
	switch m.kind {
	case msgRegisterReady:
		close(c.ready)
		return true, nil
	case msgRegisterFilter:
		bit, _ := phaseBit(m.name)
		c.phases |= bit
	case msgRegisterReport:
		if m.subsystem != "smtp-in" {
			break // smtp-out: we have no such reports to give
		}
		if m.name == "*" {
			c.events = allEvents
		} else {
			bit, _, _, _ := eventInfo(m.name)
			c.events |= bit
		}
	default:
		// processor_io: "Non-register message before register|ready"
		return false, errors.New("not a register line before register|ready")
	}
	return false, nil
}

// dispatch takes one line after register|ready.
func (c *Conn) dispatch(m message) error {
	switch m.kind {
	case msgResult:
		r, err := c.find(m.token, m.sid)
		if err != nil {
			return err
		}
		if r.data {
			// lka_filter_process_response: "filter-result in
			// dataline phase" is fatal
			return errors.New("filter-result during a data-line stream")
		}
		res, err := result(r.phase, m)
		if err != nil {
			return err
		}
		c.remove(r)
		r.result <- res
		return nil
	case msgDataline:
		r, err := c.find(m.token, m.sid)
		if err != nil {
			return err
		}
		if !r.data {
			return errors.New("filter-dataline answering a filter request")
		}
		if m.param == "." {
			if !r.sentEnd.Load() {
				return errors.New("filter ended the message before we did")
			}
			c.remove(r)
			c.deliver(r, dataItem{end: true})
			return nil
		}
		r.touch()
		line := []byte(m.param)
		if len(line) > 0 && line[0] == '.' {
			// the filter's output is dot-stuffed like its input:
			// OpenSMTPD feeds it to smtp_tx_dataline, which drops
			// one leading dot
			line = line[1:]
		}
		c.deliver(r, dataItem{line: line})
		return nil
	case msgReport:
		if f := c.onReport.Load(); f != nil {
			(*f)(m.sid, m.param)
		}
		return nil
	}
	// processor_register would accept more registrations, but the
	// filter chains are built at register|ready: a late one is a bug
	return errors.New("register line after register|ready")
}

// deliver hands a line to a DataLines call, or drops it if the call is
// gone. Blocking here (the caller writes slower than the filter) keeps
// memory bounded; the other sessions wait, as they would for the pipe.
func (c *Conn) deliver(r *request, it dataItem) {
	select {
	case r.lines <- it:
	case <-r.gone:
	case <-c.done:
	}
}

// Report writes report|0.7|<time>|smtp-in|<event>|<sid>|params... if the
// filter registered the event, and nothing otherwise. An unknown event,
// a wrong number of parameters or a "|" outside the last parameter is
// an error (the Conn stays usable); CR, LF and NUL become spaces.
func (c *Conn) Report(t time.Time, event string, sid uint64, params ...string) error {
	_, min, max, ok := eventInfo(event)
	if !ok {
		return fmt.Errorf("procfilter %q: unknown report event %q", c.name, event)
	}
	if len(params) < min || len(params) > max {
		return fmt.Errorf("procfilter %q: report %s takes %d to %d parameters, not %d", c.name, event, min, max, len(params))
	}
	if err := c.Err(); err != nil {
		return err
	}
	if !c.HasEvent(event) {
		return nil
	}
	if err := checkParams(params); err != nil {
		return fmt.Errorf("procfilter %q: report %s: %w", c.name, event, err)
	}
	b := appendParams(c.header(nil, "report", t, event, sid), params)
	if len(b) >= maxLine {
		return fmt.Errorf("procfilter %q: report %s: line of %d bytes is too long", c.name, event, len(b))
	}
	b = append(b, '\n')
	return c.write(b, true)
}

// header appends "<stream>|0.7|<time>|smtp-in|<name>|<sid>".
func (c *Conn) header(b []byte, stream string, t time.Time, name string, sid uint64) []byte {
	if t.IsZero() {
		t = c.now()
	}
	b = append(b, stream...)
	b = append(b, "|"+ProtocolVersion+"|"...)
	b = appendTime(b, t)
	b = append(b, "|smtp-in|"...)
	b = append(b, name...)
	b = append(b, '|')
	return appendHex(b, sid)
}

// Filter sends one filter request (fresh token, %016x) and waits for
// its filter-result, at most Timeout or ctx. A phase the filter did not
// register gets Proceed without asking, as OpenSMTPD skips it in the
// chain. connect takes rdns and source; helo, ehlo, auth, mail-from and
// rcpt-to take one parameter; the others none. data-line is DataLines'.
//
// When ctx ends first the request stays pending, so that the filter's
// late answer is recognised and dropped; the timeout still applies to
// it. When the timeout passes the Conn is broken: the error wraps
// ErrTimeout and ErrBroken.
func (c *Conn) Filter(ctx context.Context, t time.Time, phase string, sid uint64, params ...string) (Result, error) {
	if _, ok := phaseBit(phase); !ok {
		return Result{}, fmt.Errorf("procfilter %q: unknown filter phase %q", c.name, phase)
	}
	if phase == "data-line" {
		return Result{}, fmt.Errorf("procfilter %q: data-line goes through DataLines", c.name)
	}
	min, max := phaseParams(phase)
	if len(params) < min || len(params) > max {
		return Result{}, fmt.Errorf("procfilter %q: phase %s takes %d to %d parameters, not %d", c.name, phase, min, max, len(params))
	}
	if err := c.Err(); err != nil {
		return Result{}, err
	}
	if !c.HasPhase(phase) {
		return Result{Action: Proceed}, nil
	}
	if len(params) == 0 {
		// OpenSMTPD always ends the line with the (empty) parameter
		params = []string{""}
	}
	if err := checkParams(params); err != nil {
		return Result{}, fmt.Errorf("procfilter %q: filter %s: %w", c.name, phase, err)
	}
	if t.IsZero() {
		t = c.now()
	}
	r, err := c.register(sid, phase, false)
	if err != nil {
		return Result{}, err
	}
	b := c.header(nil, "filter", t, phase, sid)
	b = appendHex(append(b, '|'), r.token)
	b = appendParams(b, params)
	if len(b) >= maxLine {
		c.remove(r)
		return Result{}, fmt.Errorf("procfilter %q: filter %s: line of %d bytes is too long", c.name, phase, len(b))
	}
	b = append(b, '\n')
	if err := c.write(b, true); err != nil {
		return Result{}, err
	}
	select {
	case res := <-r.result:
		return res, nil
	case <-c.done:
		select {
		case res := <-r.result: // answered just before the break
			return res, nil
		default:
		}
		return Result{}, c.Err()
	case <-ctx.Done():
		return Result{}, fmt.Errorf("procfilter %q: filter %s of session %016x: %w", c.name, phase, sid, ctx.Err())
	}
}
