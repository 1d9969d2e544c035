package queue

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"smtpd/internal/envelope"
	"smtpd/proto"
)

// notice is the kind of a delivery status notification.
type notice string

// The notices this queue sends (RFC 3464 §2.3.3 Action values).
const (
	noticeFailed  notice = "failed"
	noticeDelayed notice = "delayed"
)

// notify reports whether the sender asked to hear of this event: by
// default yes; with NOTIFY (RFC 3461 §4.1) only if it lists FAILURE,
// or DELAY for a delay.
func notify(e *envelope.Envelope, kind notice) bool {
	if e.Sender == "" {
		return false // never bounce a bounce (RFC 5321 §6.1)
	}
	if e.Notify == "" {
		return true
	}
	want := "FAILURE"
	if kind == noticeDelayed {
		want = "DELAY"
	}
	return strings.Contains(strings.ToUpper(e.Notify), want)
}

// bounce sends the sender of e a delivery status notification (RFC
// 3464) saying that delivery to e's recipient failed for reason.
func (q *Queue) bounce(e *envelope.Envelope, reason string) error {
	return q.sendNotice(e, noticeFailed, reason)
}

// warn tells the sender that delivery to e's recipient is delayed.
func (q *Queue) warn(e *envelope.Envelope, reason string) {
	if err := q.sendNotice(e, noticeDelayed, reason); err != nil {
		q.warnf("%s: no %s notice to <%s>: %v", envelope.FormatEvpID(e.ID), noticeDelayed, e.Sender, err)
	}
}

// sendNotice commits a notice to the sender of e, if one is due.
func (q *Queue) sendNotice(e *envelope.Envelope, kind notice, reason string) error {
	if !notify(e, kind) {
		return nil
	}
	err := q.commitNotice(e, kind, reason)
	var noRoute *noRouteError
	if errors.As(err, &noRoute) {
		// a notice that can never be delivered: there is nothing to
		// wait for
		q.warnf("%s: no %s notice to <%s>: %v", envelope.FormatEvpID(e.ID), kind, e.Sender, err)
		return nil
	}
	if err != nil {
		return err
	}
	q.stats.Increment("queue.bounce", 1)
	return nil
}

// noRouteError is a sender no notice can reach.
type noRouteError struct{ msg string }

func (e *noRouteError) Error() string { return e.msg }

func (q *Queue) commitNotice(e *envelope.Envelope, kind notice, reason string) error {
	return q.commitLocal("", []string{e.Sender}, e.RequireTLS, func(f *os.File, id uint32) error {
		return q.writeDSN(f, id, e, kind, reason)
	})
}

// commitLocal commits a message this host writes (a notice, a report)
// from sender to rcpts, routed as mail from this host: write fills its
// body file. It returns once the message is durable.
func (q *Queue) commitLocal(sender string, rcpts []string, requireTLS bool, write func(f *os.File, id uint32) error) error {
	type route struct {
		rcpt string
		dest proto.Destination
	}
	var routes []route
	for _, rcpt := range rcpts {
		dests, err := q.expand(rcpt)
		if err != nil {
			return err
		}
		for _, d := range dests {
			routes = append(routes, route{rcpt, d})
		}
	}
	id, f, err := q.store.Create()
	if err != nil {
		return err
	}
	if err := write(f, id); err != nil {
		f.Close()
		q.store.Discard(id)
		return err
	}
	now := time.Now()
	p := &pending{body: f}
	for _, r := range routes {
		d := r.dest
		p.envs = append(p.envs, &envelope.Envelope{
			ID:   envelope.NewEvpID(id),
			Kind: envelope.Kind(d.Kind), Rule: int(d.Rule), Action: d.Action,
			Sender: sender, Rcpt: r.rcpt, Dest: d.Dest, User: d.User,
			Helo: q.hostname, Created: now, Expire: now.Add(q.child.Config.Limits.QueueExpire),
			RequireTLS: requireTLS,
		})
	}
	done := make(chan error, 1)
	q.commits <- commit{id: id, msg: p, done: func(err error) { done <- err }}
	return <-done
}

// expand asks lookup where mail to addr goes, as mail from this host.
func (q *Queue) expand(addr string) ([]proto.Destination, error) {
	req := &proto.QueueExpandRcpt{SMTPExpandRcpt: proto.SMTPExpandRcpt{Session: proto.Session{Local: true, Helo: q.hostname}, Rcpt: addr}}
	frames, err := q.reqs.Ask(q.lookup, req, lookupTimeout)
	if err != nil {
		return nil, err
	}
	var dests []proto.Destination
	for _, env := range frames {
		res, ok := env.Msg.(*proto.LookupExpandResult)
		if !ok {
			return nil, fmt.Errorf("lookup answered %s", env.Type)
		}
		if res.Status == proto.StatusPermfail {
			return nil, &noRouteError{fmt.Sprintf("no route to the sender: %d %s", res.Reply.Code, res.Reply.Text)}
		}
		if res.Status != proto.StatusOK {
			return nil, fmt.Errorf("sender cannot be resolved now: %d %s", res.Reply.Code, res.Reply.Text)
		}
		dests = append(dests, res.Destinations...)
	}
	return dests, nil
}

// lookupTimeout bounds the wait for lookup's answer about a sender.
const lookupTimeout = 5 * time.Minute

// writeDSN writes the notification: a multipart/report with a human
// part, the machine-readable delivery-status, and the original header
// (RET=HDRS, the default) or the whole message (RET=FULL).
func (q *Queue) writeDSN(f *os.File, id uint32, e *envelope.Envelope, kind notice, reason string) error {
	w := bufio.NewWriter(f)
	now := time.Now()
	boundary := fmt.Sprintf("%s.%x/%s", envelope.FormatMsgID(id), rand.Uint64(), q.hostname)
	status, diag := dsnStatus(reason, kind)
	subject, human := "Delivery failure: returned mail", "The delivery will not be tried again."
	if kind == noticeDelayed {
		subject = "Delivery delayed: still trying"
		human = fmt.Sprintf("This is only a warning: delivery will be tried again until %s.", e.Expire.Format(time.RFC1123Z))
	}
	fmt.Fprintf(w, "Received: from localhost (smtpd) by %s id %s;\r\n\t%s\r\n", q.hostname, envelope.FormatMsgID(id), now.Format(time.RFC1123Z))
	fmt.Fprintf(w, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", q.hostname)
	fmt.Fprintf(w, "To: <%s>\r\n", e.Sender)
	fmt.Fprintf(w, "Subject: %s\r\n", subject)
	fmt.Fprintf(w, "Date: %s\r\n", now.Format(time.RFC1123Z))
	fmt.Fprintf(w, "Message-Id: <%d.%s.bounce@%s>\r\n", now.Unix(), envelope.FormatMsgID(id), q.hostname)
	fmt.Fprintf(w, "Auto-Submitted: auto-replied\r\n")
	fmt.Fprintf(w, "MIME-Version: 1.0\r\n")
	fmt.Fprintf(w, "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"%s\"\r\n\r\n", boundary)
	fmt.Fprintf(w, "This is a MIME-encapsulated message.\r\n\r\n--%s\r\n", boundary)
	fmt.Fprintf(w, "Content-Type: text/plain; charset=utf-8\r\n\r\n")
	fmt.Fprintf(w, "This is the mail system at %s.\r\n\r\n", q.hostname)
	fmt.Fprintf(w, "Your message could not be delivered to <%s>:\r\n\r\n    %s\r\n\r\n", e.Rcpt, reason)
	fmt.Fprintf(w, "%s The header of your message follows.\r\n\r\n", human)
	fmt.Fprintf(w, "--%s\r\nContent-Type: message/delivery-status\r\n\r\n", boundary)
	fmt.Fprintf(w, "Reporting-MTA: dns; %s\r\n", q.hostname)
	if e.EnvID != "" {
		fmt.Fprintf(w, "Original-Envelope-Id: %s\r\n", e.EnvID)
	}
	fmt.Fprintf(w, "Arrival-Date: %s\r\n\r\n", e.Created.Format(time.RFC1123Z))
	if e.ORcpt != "" {
		fmt.Fprintf(w, "Original-Recipient: %s\r\n", e.ORcpt)
	}
	fmt.Fprintf(w, "Final-Recipient: rfc822; %s\r\n", e.Rcpt)
	fmt.Fprintf(w, "Action: %s\r\nStatus: %s\r\n", kind, status)
	fmt.Fprintf(w, "Diagnostic-Code: %s\r\n", diag)
	fmt.Fprintf(w, "Last-Attempt-Date: %s\r\n", now.Format(time.RFC1123Z))
	if kind == noticeDelayed {
		fmt.Fprintf(w, "Will-Retry-Until: %s\r\n", e.Expire.Format(time.RFC1123Z))
	}
	fmt.Fprintf(w, "\r\n")
	// a REQUIRETLS message's content goes back only as its header
	// (RFC 8689 §5: the notice may travel a less protected path)
	full := strings.EqualFold(e.Ret, "FULL") && kind == noticeFailed && !e.RequireTLS
	part := "text/rfc822-headers"
	if full {
		part = "message/rfc822"
	}
	fmt.Fprintf(w, "--%s\r\nContent-Type: %s\r\n\r\n", boundary, part)
	if err := copyOriginal(w, q.store.BodyPath(e.MsgID()), full); err != nil {
		return err
	}
	fmt.Fprintf(w, "\r\n--%s--\r\n", boundary)
	return w.Flush()
}

// dsnStatus derives the Status and Diagnostic-Code fields from a
// failure text that may start with an SMTP reply ("550 5.1.1 ...").
func dsnStatus(reason string, kind notice) (status, diag string) {
	class := byte('5')
	if kind == noticeDelayed {
		class = '4'
	}
	f := strings.Fields(reason)
	if len(f) >= 2 && len(f[0]) == 3 && f[0][0] == class && strings.Count(f[1], ".") == 2 && f[1][0] == class {
		return f[1], "smtp; " + reason
	}
	return string(class) + ".0.0", "x-local; " + reason
}

// copyOriginal copies the original message's header, or all of it.
func copyOriginal(w *bufio.Writer, path string, full bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if full {
		_, err := io.Copy(w, f)
		return err
	}
	br := bufio.NewReader(f)
	for {
		line, err := br.ReadString('\n')
		if line == "\r\n" || line == "\n" {
			return nil
		}
		w.WriteString(line)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
