package proto

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNoAnswer is the error of a request whose answer did not come in
// time; it is wrapped with the peer and the request.
var ErrNoAnswer = errors.New("proto: no answer")

// Continued is implemented by answers that may take several frames:
// Continues reports whether more frames of the same answer follow.
type Continued interface{ Continues() bool }

// Continues reports whether more lines follow.
func (t *TextLines) Continues() bool { return !t.Last }

// Continues reports whether more values follow.
func (m *ControlStats) Continues() bool { return !m.Last }

// Continues reports whether more destinations follow.
func (m *LookupExpandResult) Continues() bool { return m.More }

// continues reports whether f is a frame of an answer that goes on.
func continues(f *Frame) bool {
	c, ok := f.Msg.(Continued)
	return ok && c.Continues()
}

// Requests matches answers to the requests that asked for them, by
// request id (the PeerID of the header), so that many sessions share one
// channel. It is the one way a process asks another and waits: Ask.
type Requests struct {
	// send sends a request; a child counts its frames through it.
	send func(ch *Channel, m Message, id uint32) error

	next atomic.Uint32
	mu   sync.Mutex
	// waiting are the requests whose answers someone waits for;
	// abandoned, those whose asker gave up, so that a late answer is
	// dropped instead of being taken for one nobody asked.
	waiting   map[uint32]*request
	abandoned map[uint32]bool
	// broken is closed by Fail: no answer will come any more
	broken    chan struct{}
	brokenErr error
}

type request struct {
	answers chan *Frame
	gone    chan struct{}
}

// NewRequests returns an empty request table whose requests go out
// through send (Channel.Send if nil).
func NewRequests(send func(ch *Channel, m Message, id uint32) error) *Requests {
	if send == nil {
		send = func(ch *Channel, m Message, id uint32) error { return ch.Send(m, id) }
	}
	return &Requests{send: send, waiting: map[uint32]*request{}, abandoned: map[uint32]bool{}, broken: make(chan struct{})}
}

// Fail ends every wait, now and later, with err: the channel the
// answers come on is gone (a delivery agent that died).
func (r *Requests) Fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.broken:
	default:
		r.brokenErr = err
		close(r.broken)
	}
}

// Ask sends m to ch under a new request id and waits for the answer:
// one frame, or for an answer type that is Continued, every frame until
// the last. Each frame must come within timeout, or Ask returns an
// error wrapping ErrNoAnswer. Descriptors carried by the frames belong
// to the caller.
func (r *Requests) Ask(ch *Channel, m Message, timeout time.Duration) ([]*Frame, error) {
	var frames []*Frame
	err := r.Stream(ch, m, timeout, func(f *Frame) error {
		frames = append(frames, f)
		return nil
	})
	return frames, err
}

// Stream is Ask for answers too long to hold: each frame goes to each
// as it arrives. An error from each ends the wait and is returned.
func (r *Requests) Stream(ch *Channel, m Message, timeout time.Duration, each func(*Frame) error) error {
	id, req := r.open()
	done := false
	defer func() { r.close(id, done) }()
	if err := r.send(ch, m, id); err != nil {
		done = true
		return err
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case f := <-req.answers:
			more := continues(f)
			done = !more
			if err := each(f); err != nil {
				return err
			}
			if !more {
				return nil
			}
			timer.Reset(timeout)
		case <-timer.C:
			return fmt.Errorf("%w from %s to %s (request %d) within %s", ErrNoAnswer, ch.Remote, m.Type(), id, timeout)
		case <-r.broken:
			r.mu.Lock()
			err := r.brokenErr
			r.mu.Unlock()
			return err
		}
	}
}

func (r *Requests) open() (uint32, *request) {
	id := r.next.Add(1)
	if id == 0 {
		id = r.next.Add(1)
	}
	req := &request{answers: make(chan *Frame, 4), gone: make(chan struct{})}
	r.mu.Lock()
	r.waiting[id] = req
	r.mu.Unlock()
	return id, req
}

// close forgets a request; one whose answer is not complete is
// remembered as abandoned.
func (r *Requests) close(id uint32, complete bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	close(r.waiting[id].gone)
	delete(r.waiting, id)
	if !complete {
		r.abandoned[id] = true
	}
}

// Deliver hands an answer to its request. It reports false for an
// answer to a request that was never made or already fully answered,
// which the receiving process treats as a broken peer. The answer to an
// abandoned request is dropped, its descriptor closed.
func (r *Requests) Deliver(f *Frame) bool {
	r.mu.Lock()
	req, ok := r.waiting[f.PeerID]
	if !ok {
		late := r.abandoned[f.PeerID]
		if late && !continues(f) {
			delete(r.abandoned, f.PeerID)
		}
		r.mu.Unlock()
		if fm, isFile := f.Msg.(FileMessage); late && isFile {
			fm.File().Close()
		}
		return late
	}
	r.mu.Unlock()
	select {
	case req.answers <- f:
	case <-req.gone:
		if fm, isFile := f.Msg.(FileMessage); isFile {
			fm.File().Close()
		}
		if !continues(f) {
			r.mu.Lock()
			delete(r.abandoned, f.PeerID)
			r.mu.Unlock()
		}
	}
	return true
}
