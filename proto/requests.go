package proto

import (
	"sync"
	"sync/atomic"
)

// Requests matches answers to the requests that asked for them, by
// request id (the PeerID of the header), so that many sessions share one
// channel.
type Requests struct {
	next    atomic.Uint32
	mu      sync.Mutex
	waiting map[uint32]chan *Envelope
}

// NewRequests returns an empty request table.
func NewRequests() *Requests {
	return &Requests{waiting: map[uint32]chan *Envelope{}}
}

// Open registers a new request and returns its id and where its
// answers arrive.
func (r *Requests) Open() (uint32, chan *Envelope) {
	id := r.next.Add(1)
	if id == 0 {
		id = r.next.Add(1)
	}
	ch := make(chan *Envelope, 4)
	r.mu.Lock()
	r.waiting[id] = ch
	r.mu.Unlock()
	return id, ch
}

// Close forgets a request.
func (r *Requests) Close(id uint32) {
	r.mu.Lock()
	delete(r.waiting, id)
	r.mu.Unlock()
}

// Deliver hands an answer to its request; it reports false for an
// answer nobody asked for.
func (r *Requests) Deliver(env *Envelope) bool {
	r.mu.Lock()
	ch, ok := r.waiting[env.PeerID]
	r.mu.Unlock()
	if ok {
		ch <- env
	}
	return ok
}
