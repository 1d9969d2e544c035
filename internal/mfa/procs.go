package mfa

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"smtpd/internal/config"
	"smtpd/internal/mfa/procfilter"
	"smtpd/proto"
)

// Filter states, as smtpctl show filters prints them.
const (
	stateStarting   = "starting"
	stateRunning    = "running"
	stateRestarting = "restarting"
)

// errFilterDown is the error of a filter that is not running now.
var errFilterDown = errors.New("filter not running")

// procSlot is one filter process as mfa sees it: the connection to the
// current process (nil while there is none), which start of the filter
// it is, and what happened to the ones before. The parent starts the
// processes; mfa speaks to them and reports those that break.
type procSlot struct {
	m      *MFA
	filter *config.Filter

	mu    sync.Mutex
	conn  *procfilter.Conn
	gen   uint32
	state string
	since time.Time
	// ready is closed when a start completes its handshake or fails
	ready   chan struct{}
	lastErr string
	restart time.Time
}

func newProcSlot(m *MFA, f *config.Filter) *procSlot {
	return &procSlot{m: m, filter: f, state: stateStarting, since: time.Now(), ready: make(chan struct{})}
}

// started takes the filter's new process: its handshake runs here, and
// a watcher reports the process to the parent once it breaks.
func (p *procSlot) started(f *os.File, gen uint32) {
	conn, err := net.FileConn(f)
	f.Close()
	p.mu.Lock()
	if gen < p.gen {
		p.mu.Unlock()
		if conn != nil {
			conn.Close()
		}
		return
	}
	if p.state != stateStarting {
		p.ready = make(chan struct{})
	}
	p.gen, p.state, p.since, p.conn = gen, stateStarting, time.Now(), nil
	p.mu.Unlock()
	var pc *procfilter.Conn
	if err == nil {
		pc, err = procfilter.Start(conn, procfilter.Options{
			Name:           p.filter.Name,
			SMTPDVersion:   FilterProtocolVersion,
			SessionTimeout: p.m.cfg.Limits.CommandTimeout,
			Admd:           p.m.cfg.Hostname,
			Timeout:        p.filter.Timeout,
		})
	}
	if err != nil {
		if conn != nil {
			conn.Close()
		}
		p.broken(gen, fmt.Errorf("handshake: %w", err))
		return
	}
	pc.OnReport(func(sid uint64, text string) {
		p.m.log.Infof("%016x: filter %s reports: %s", sid, p.filter.Name, sanitizeLog(text))
		if s := p.m.sessionOf(sid, 0, false); s != nil {
			s.enqueue(func() { s.report(time.Now(), "filter-report", "proc", p.filter.Name, text) })
		}
	})
	p.mu.Lock()
	if gen != p.gen {
		p.mu.Unlock()
		pc.Close()
		return
	}
	p.conn, p.state, p.since = pc, stateRunning, time.Now()
	close(p.ready)
	p.mu.Unlock()
	p.m.log.Infof("filter %s running (start %d), phases %v", p.filter.Name, gen, pc.Phases())
	go func() {
		<-pc.Done()
		p.broken(gen, pc.Err())
	}()
}

// broken takes a process out of use and asks the parent to end it; the
// parent starts the next one after a backoff.
func (p *procSlot) broken(gen uint32, err error) {
	p.mu.Lock()
	if gen != p.gen || (p.state != stateRunning && p.state != stateStarting) {
		p.mu.Unlock()
		return
	}
	if p.conn != nil {
		p.conn.Close()
	}
	if p.state == stateStarting {
		close(p.ready)
	}
	p.conn, p.state, p.since, p.lastErr = nil, stateRestarting, time.Now(), err.Error()
	p.mu.Unlock()
	name := "mfa.filter." + p.filter.Name
	if errors.Is(err, procfilter.ErrTimeout) {
		p.m.stats.Increment(name+".timeouts", 1)
	} else {
		p.m.stats.Increment(name+".errors", 1)
	}
	p.m.log.Warnf("filter %s (start %d) broken: %v", p.filter.Name, gen, err)
	if err := p.m.child.Send(p.m.child.Parent, &proto.MFAFilterBroken{Filter: uint32(p.filter.ID), Generation: gen, Reason: err.Error()}, 0); err != nil {
		p.m.log.Fatalf("%v", err)
	}
}

// exited records the end of a process and when the parent starts the
// next.
func (p *procSlot) exited(m *proto.ParentFilterExited) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if m.Generation < p.gen {
		return
	}
	if p.conn != nil {
		p.conn.Close()
		p.conn = nil
	}
	if p.state == stateStarting {
		close(p.ready)
	}
	if p.state != stateRestarting {
		p.since = time.Now()
	}
	p.gen, p.state, p.restart = m.Generation, stateRestarting, m.Restart
	if p.lastErr == "" || m.Reason != "" {
		p.lastErr = m.Reason
	}
	p.m.stats.Increment("mfa.filter."+p.filter.Name+".restarts", 1)
}

// acquire returns the running process and its generation, waiting
// while one is starting (at most the filter's timeout).
func (p *procSlot) acquire(ctx context.Context) (*procfilter.Conn, uint32, error) {
	p.mu.Lock()
	state, ready := p.state, p.ready
	p.mu.Unlock()
	if state == stateStarting {
		ctx, cancel := context.WithTimeout(ctx, p.filter.Timeout)
		defer cancel()
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, 0, fmt.Errorf("filter %s still starting: %w", p.filter.Name, procfilter.ErrTimeout)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != stateRunning {
		return nil, 0, fmt.Errorf("filter %s %s since %s (%s): %w", p.filter.Name, p.state, p.since.Format(time.RFC3339), p.lastErr, errFilterDown)
	}
	return p.conn, p.gen, nil
}

// current returns the process of generation gen if it still runs.
func (p *procSlot) current(gen uint32) *procfilter.Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gen != gen || p.state != stateRunning {
		return nil
	}
	return p.conn
}

// line is the filter's line in smtpctl show filters.
func (p *procSlot) line() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := fmt.Sprintf("%s\tcommand\t%s since %s\tstart %d", p.filter.Name, p.state, p.since.UTC().Format(time.RFC3339), p.gen)
	if p.state == stateRestarting && !p.restart.IsZero() {
		s += "\tnext start " + p.restart.UTC().Format(time.RFC3339)
	}
	if p.lastErr != "" {
		s += "\tlast error: " + p.lastErr
	}
	return s
}
