package smtp

import (
	"sync"
	"sync/atomic"

	"smtpd/proto"
)

// requests matches answers from mfa, lookup and queue to the sessions
// that asked, by request id, so that all sessions share one channel to
// each process.
type requests struct {
	next    atomic.Uint32
	mu      sync.Mutex
	waiting map[uint32]chan *proto.Envelope
}

func newRequests() *requests {
	return &requests{waiting: map[uint32]chan *proto.Envelope{}}
}

// open registers a new request and returns its id and where its
// answers arrive.
func (r *requests) open() (uint32, chan *proto.Envelope) {
	id := r.next.Add(1)
	if id == 0 {
		id = r.next.Add(1)
	}
	ch := make(chan *proto.Envelope, 4)
	r.mu.Lock()
	r.waiting[id] = ch
	r.mu.Unlock()
	return id, ch
}

// close forgets a request.
func (r *requests) close(id uint32) {
	r.mu.Lock()
	delete(r.waiting, id)
	r.mu.Unlock()
}

// deliver hands an answer to its request; it reports false for an
// answer nobody asked for.
func (r *requests) deliver(env *proto.Envelope) bool {
	r.mu.Lock()
	ch, ok := r.waiting[env.PeerID]
	r.mu.Unlock()
	if ok {
		ch <- env
	}
	return ok
}
