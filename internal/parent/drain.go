package parent

import (
	"fmt"
	"time"

	"smtpd/proto"
)

// drainMargin is how long past the drain time the parent waits for
// smtp's SMTPDrained before it stops the daemon all the same. smtp cuts
// its last sessions when the drain time is up and answers at once: only
// a smtp that hangs needs the margin.
const drainMargin = 2 * time.Second

// startDrain begins a graceful stop: smtp closes its listeners, sends
// its idle sessions away and lets those receiving a message finish it,
// for at most drain_timeout. It returns when to stop waiting for smtp,
// or nil to stop at once (drain_timeout 0). The children are signalled
// only once the drain is over, so that the StopTimeout given to them
// is not spent on it. The error is a lost child.
func (p *Parent) startDrain() (<-chan time.Time, error) {
	timeout := p.cfg.Limits.DrainTimeout
	if timeout <= 0 {
		return nil, nil
	}
	if err := p.children[proto.ProcSMTP].ch.Send(&proto.ParentDrain{Timeout: timeout}, 0); err != nil {
		return nil, fmt.Errorf("lost child: smtp: %w", err)
	}
	p.log.Infof("draining the sessions for at most %v; another SIGTERM or SIGINT stops at once", timeout)
	return time.After(timeout + drainMargin), nil
}
