// Package queue is the queue process: it owns the spool, the durable
// store of every message the daemon has accepted.
package queue

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"smtpd/internal/envelope"
	"smtpd/internal/privsep"
	"smtpd/internal/stats"
	"smtpd/proto"
)

// pending is a message being received: its body file and envelopes.
type pending struct {
	body *os.File
	envs []*envelope.Envelope
}

// commit is a commit request waiting for the next batch; done is told
// the outcome once the message is durable, or is not.
type commit struct {
	id         uint32
	msg        *pending
	quarantine string
	done       func(error)
}

// Queue is the state of the queue process.
type Queue struct {
	store *Store
	sched *Scheduler
	stats *stats.Sender
	logf  func(string, ...any)
	warnf func(string, ...any)

	hostname string
	lookup   *proto.Channel
	reqs     *proto.Requests
	child    *privsep.Child

	mu      sync.Mutex
	pending map[uint32]*pending
	commits chan commit
	send    func(ch *proto.Channel, m proto.Message, id uint32) error
}

// Run runs the queue process on c. The spool is "/" when chrooted.
func Run(c *privsep.Child) {
	root := c.Config.SpoolDir
	if c.Chrooted {
		root = "/"
	}
	store, err := NewStore(root)
	if err != nil {
		c.Log.Fatalf("%v", err)
	}
	q := &Queue{
		store:   store,
		stats:   c.Stats,
		logf:    c.Log.Infof,
		warnf:   c.Log.Warnf,
		pending: map[uint32]*pending{},
		commits: make(chan commit, 1024),
		send:    c.Send,

		hostname: c.Config.Hostname,
		lookup:   c.Peers[proto.ProcLookup],
		reqs:     c.Requests,
		child:    c,
	}
	rec, err := store.Load()
	if err != nil {
		c.Log.Fatalf("%v", err)
	}
	for _, p := range rec.Problems {
		c.Log.Warnf("spool: %s", p)
	}
	if rec.Corrupt > 0 {
		c.Stats.Increment("queue.corrupt", int64(rec.Corrupt))
	}
	if rec.Recovered > 0 {
		c.Log.Infof("spool: %d committed messages moved on from incoming/", rec.Recovered)
	}
	if rec.Purged > 0 {
		c.Log.Infof("spool: purged %d uncommitted messages", rec.Purged)
	}
	q.sched = NewScheduler(store, c.Config.Limits, c.Stats, func(e *envelope.Envelope, body *os.File) error {
		data, err := e.Marshal()
		if err != nil {
			return err
		}
		if e.Kind == envelope.MTA {
			return c.Send(c.Peers[proto.ProcMTA], proto.NewQueueTransfer(data, body), 0)
		}
		return c.Send(c.Parent, proto.NewQueueDeliverLocal(data, body), 0)
	}, c.Log)
	q.sched.OnPermfail = q.bounce
	q.sched.OnDelay = q.warn
	// the gauge exists from the start, even when the spool is empty
	c.Stats.Set("scheduler.envelope", 0)
	for _, e := range rec.Envelopes {
		q.sched.Add(e, false)
	}
	c.Log.Infof("spool: %d envelopes queued", len(rec.Envelopes))
	go q.committer()
	go q.sched.Run()
	if c.Config.Overload.Enabled() {
		go q.watchOverload(c.Config.Overload)
	}
	if err := c.Ready(); err != nil {
		c.Log.Fatalf("%v", err)
	}
	c.Serve(q.handle)
}

func (q *Queue) handle(ch *proto.Channel, env *proto.Frame) error {
	switch m := env.Msg.(type) {
	case *proto.SMTPMessageCreate:
		id, f, err := q.store.Create()
		if err != nil {
			q.warnf("create: %v", err)
			return q.send(ch, &proto.QueueFailure{Reply: failureReply(err)}, env.PeerID)
		}
		q.mu.Lock()
		q.pending[id] = &pending{body: f}
		q.mu.Unlock()
		return q.send(ch, proto.NewQueueMessageCreated(id, f), env.PeerID)
	case *proto.SMTPEnvelopeSubmit:
		e, err := envelope.Unmarshal(m.Envelope)
		if err != nil {
			return fmt.Errorf("submit: %w", err)
		}
		q.mu.Lock()
		defer q.mu.Unlock()
		p := q.pending[m.MsgID]
		if p == nil || e.MsgID() != m.MsgID {
			return fmt.Errorf("submit for unknown message %s", envelope.FormatMsgID(m.MsgID))
		}
		p.envs = append(p.envs, e)
		return nil
	case *proto.SMTPMessageCommit:
		p := q.take(m.MsgID)
		if p == nil || len(p.envs) == 0 {
			return fmt.Errorf("commit of unknown or empty message %s", envelope.FormatMsgID(m.MsgID))
		}
		q.commits <- commit{id: m.MsgID, msg: p, quarantine: m.Quarantine, done: func(err error) {
			var reply proto.Message = &proto.QueueMessageCommitted{MsgID: m.MsgID}
			if err != nil {
				reply = &proto.QueueFailure{MsgID: m.MsgID, Reply: failureReply(err)}
			}
			q.fatalSend(ch, reply, env.PeerID)
		}}
		return nil
	case *proto.SMTPMessageRollback:
		if p := q.take(m.MsgID); p != nil {
			p.body.Close()
			q.store.Discard(m.MsgID)
		}
		return nil
	case *proto.SMTPDomainSchedule:
		envs, msgs, err := q.scheduleDomain(strings.ToLower(m.Domain), m.Subdomains)
		if err != nil {
			return err
		}
		return q.send(ch, &proto.QueueDomainScheduled{Messages: uint32(msgs), Envelopes: uint32(envs)}, env.PeerID)
	case *proto.ParentDeliveryResult:
		q.sched.Result(m.DeliveryResult)
		return nil
	case *proto.MTADeliveryResult:
		q.sched.Result(m.DeliveryResult)
		return nil
	case *proto.ControlQueueForward:
		var lines []string
		switch m.Op {
		case "show":
			lines = q.sched.Lines(m.Target)
		case "schedule":
			lines = []string{fmt.Sprintf("%d envelopes scheduled", q.sched.Schedule(m.Target))}
		case "schedule-domain":
			// smtpctl schedule domain [@]DOMAIN: what ETRN does
			domain, subdomains := strings.CutPrefix(strings.ToLower(m.Target), "@")
			envs, _, err := q.scheduleDomain(domain, subdomains)
			if err != nil {
				return err
			}
			lines = []string{fmt.Sprintf("%d envelopes scheduled", envs)}
		case "flush":
			// smtpctl flush: everything due now, and what to wait for
			lines = q.sched.Flush()
		case "tries":
			lines = q.sched.Tries()
		case "remove":
			lines = []string{fmt.Sprintf("%d envelopes removed", q.sched.Remove(m.Target))}
		case "pause":
			lines = []string{fmt.Sprintf("%d paused", q.sched.Pause(m.Target))}
		case "resume":
			lines = []string{fmt.Sprintf("%d resumed", q.sched.Resume(m.Target))}
		case "status":
			lines = q.sched.Status()
		case "envelope":
			var ok bool
			if lines, ok = q.sched.Envelope(m.Target); !ok {
				lines = []string{"no such envelope: " + m.Target}
			}
		case "message":
			return q.sendMessage(ch, env.PeerID, m.Target)
		default:
			lines = []string{"unknown queue operation " + m.Op}
		}
		return proto.SendLines(ch, env.PeerID, lines, func(l []string, last bool) proto.Message {
			return &proto.QueueLines{TextLines: proto.TextLines{Lines: l, Last: last}}
		})
	case *proto.MTAReportSubmit:
		// expanding the recipients asks lookup: not on this goroutine
		go func() {
			defer m.File().Close()
			reply := &proto.QueueReportQueued{Outcome: proto.Outcome{Status: proto.StatusOK}}
			err := q.commitLocal(m.Sender, m.Rcpts, false, func(f *os.File, _ uint32) error {
				if _, err := m.File().Seek(0, io.SeekStart); err != nil {
					return err
				}
				_, err := io.Copy(f, m.File())
				return err
			})
			if err != nil {
				reply.Status, reply.Text = proto.StatusTempfail, err.Error()
			} else {
				q.stats.Increment("queue.report", 1)
			}
			q.fatalSend(ch, reply, env.PeerID)
		}()
		return nil
	case *proto.LookupExpandResult:
		if !q.reqs.Deliver(env) {
			return fmt.Errorf("answer to request %d that nobody asked", env.PeerID)
		}
		return nil
	}
	return fmt.Errorf("unexpected %s", env.Type)
}

// scheduleDomain makes the relayed mail waiting for a domain (and with
// subdomains those below it) due now, at a client's request (ETRN, RFC
// 1985 §5) or the administrator's. mta is told first, on the channel
// the envelopes then take, to forget the failures of the domain's
// exchangers: the site asks because it is up now, and a route penalty
// of up to an hour would hold its mail back all the same. An error is
// a broken channel to mta.
func (q *Queue) scheduleDomain(domain string, subdomains bool) (envelopes, messages int, err error) {
	if domain == "" {
		return 0, 0, nil
	}
	if q.child != nil {
		if mta := q.child.Peers[proto.ProcMTA]; mta != nil {
			if err := q.send(mta, &proto.QueueDomainFlush{DomainTarget: proto.DomainTarget{Domain: domain, Subdomains: subdomains}}, 0); err != nil {
				return 0, 0, err
			}
		}
	}
	envelopes, messages = q.sched.ScheduleDomain(domain, subdomains)
	which := domain
	if subdomains {
		which = "@" + domain
	}
	q.logf("domain %s: %d messages (%d envelopes) scheduled", which, messages, envelopes)
	return envelopes, messages, nil
}

// sendMessage answers `smtpctl show message` with the message file of a
// queued message, or a line saying there is none.
func (q *Queue) sendMessage(ch *proto.Channel, id uint32, target string) error {
	msgid, _, err := envelope.ParseID(target)
	if err != nil || !q.sched.HasMessage(msgid) {
		return ch.Send(&proto.QueueLines{TextLines: proto.TextLines{Lines: []string{"no such message: " + target}, Last: true}}, id)
	}
	f, err := os.Open(q.store.BodyPath(msgid))
	if err != nil {
		return ch.Send(&proto.QueueLines{TextLines: proto.TextLines{Lines: []string{err.Error()}, Last: true}}, id)
	}
	defer f.Close()
	return ch.Send(proto.NewQueueMessageFile(f), id)
}

// take removes a message being received from the pending ones.
func (q *Queue) take(id uint32) *pending {
	q.mu.Lock()
	defer q.mu.Unlock()
	p := q.pending[id]
	delete(q.pending, id)
	return p
}

// failureReply is what a client is told when the queue fails: always a
// temporary failure, since nothing about the message is wrong.
func failureReply(err error) proto.Reply {
	if errors.Is(err, ErrNoSpace) {
		return proto.Reply{Code: 452, Enhanced: "4.3.1", Text: "Insufficient system storage"}
	}
	return proto.Reply{Code: 451, Enhanced: "4.3.0", Text: "Temporary queue failure"}
}

// committer makes messages durable in batches: every commit request
// that arrives while a batch is being written joins the next one, so
// that concurrent sessions share their syncs (group commit, see Store).
// No answer goes out before its message is durable.
func (q *Queue) committer() {
	for first := range q.commits {
		batch := []commit{first}
	more:
		for len(batch) < 256 {
			select {
			case c := <-q.commits:
				batch = append(batch, c)
			default:
				break more
			}
		}
		q.commitBatch(batch)
	}
}

// commitBatch commits a batch with Store.Commit, which decides what is
// synced when, and answers each message.
func (q *Queue) commitBatch(batch []commit) {
	msgs := make([]Message, len(batch))
	for i, c := range batch {
		c.msg.body.Close()
		msgs[i] = Message{ID: c.id, Envelopes: c.msg.envs, Quarantine: c.quarantine}
	}
	errs := q.store.Commit(msgs)
	for i, c := range batch {
		if err := errs[i]; err != nil {
			q.warnf("commit %s: %v", envelope.FormatMsgID(c.id), err)
			c.done(err)
			continue
		}
		c.done(nil)
		if c.quarantine != "" {
			q.stats.Increment("queue.quarantine", 1)
			q.logf("message %s quarantined: %s", envelope.FormatMsgID(c.id), c.quarantine)
			continue
		}
		q.stats.Increment("queue.message", 1)
		for _, e := range c.msg.envs {
			q.sched.Add(e, true)
		}
	}
	q.stats.Increment("queue.commit.batch", 1)
}

func (q *Queue) fatalSend(ch *proto.Channel, m proto.Message, id uint32) {
	if err := q.send(ch, m, id); err != nil {
		q.warnf("fatal: %v", err)
		os.Exit(1)
	}
}
