package queue

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"smtpd/internal/envelope"
	"smtpd/proto"
)

// notify reports whether the sender asked to hear of this failure: by
// default yes; with NOTIFY (RFC 3461 §4.1) only if it lists FAILURE.
func notify(e *envelope.Envelope) bool {
	if e.Sender == "" {
		return false // never bounce a bounce (RFC 5321 §6.1)
	}
	if e.Notify == "" {
		return true
	}
	return strings.Contains(strings.ToUpper(e.Notify), "FAILURE")
}

// bounce sends the sender of e a delivery status notification (RFC
// 3464) saying that delivery to e's recipient failed for reason.
func (q *Queue) bounce(e *envelope.Envelope, reason string) {
	if !notify(e) {
		return
	}
	if err := q.sendBounce(e, reason); err != nil {
		q.warnf("%016x: no failure notice to <%s>: %v", e.ID, e.Sender, err)
		return
	}
	q.stats.Increment("queue.bounce", 1)
}

func (q *Queue) sendBounce(e *envelope.Envelope, reason string) error {
	dests, err := q.expand(e.Sender)
	if err != nil {
		return err
	}
	id, f, err := q.store.Create()
	if err != nil {
		return err
	}
	if err := q.writeDSN(f, id, e, reason); err != nil {
		f.Close()
		q.store.Discard(id)
		return err
	}
	now := time.Now()
	p := &pending{body: f}
	for _, d := range dests {
		p.envs = append(p.envs, &envelope.Envelope{
			ID:   uint64(id)<<32 | uint64(rand.Uint32()|1),
			Kind: envelope.Kind(d.Kind), Rule: int(d.Rule), Action: d.Action,
			Sender: "", Rcpt: e.Sender, Dest: d.Dest, User: d.User,
			Helo: q.hostname, Created: now, Expire: now.Add(q.child.Config.Limits.QueueExpire),
		})
	}
	done := make(chan error, 1)
	q.commits <- commit{id: id, msg: p, done: func(err error) { done <- err }}
	return <-done
}

// expand asks lookup where mail to addr goes, as mail from this host.
func (q *Queue) expand(addr string) ([]proto.Destination, error) {
	id, answers := q.reqs.Open()
	defer q.reqs.Close(id)
	req := &proto.QueueExpandRcpt{SMTPExpandRcpt: proto.SMTPExpandRcpt{Session: proto.Session{Local: true, Helo: q.hostname}, Rcpt: addr}}
	if err := q.send(q.lookup, req, id); err != nil {
		return nil, err
	}
	var dests []proto.Destination
	for {
		var env *proto.Envelope
		select {
		case env = <-answers:
		case <-time.After(5 * time.Minute):
			return nil, fmt.Errorf("no answer from lookup")
		}
		res, ok := env.Msg.(*proto.LookupExpandResult)
		if !ok {
			return nil, fmt.Errorf("lookup answered %s", env.Type)
		}
		if res.Status != proto.StatusOK {
			return nil, fmt.Errorf("no route to the sender: %d %s", res.Reply.Code, res.Reply.Text)
		}
		dests = append(dests, res.Destinations...)
		if !res.More {
			return dests, nil
		}
	}
}

// writeDSN writes the notification: a multipart/report with a human
// part, the machine-readable delivery-status, and the original header
// (RET=HDRS, the default) or the whole message (RET=FULL).
func (q *Queue) writeDSN(f *os.File, id uint32, e *envelope.Envelope, reason string) error {
	w := bufio.NewWriter(f)
	now := time.Now()
	boundary := fmt.Sprintf("%08x.%x/%s", id, rand.Uint64(), q.hostname)
	status, diag := dsnStatus(reason)
	fmt.Fprintf(w, "Received: from localhost (smtpd) by %s id %08x;\r\n\t%s\r\n", q.hostname, id, now.Format(time.RFC1123Z))
	fmt.Fprintf(w, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", q.hostname)
	fmt.Fprintf(w, "To: <%s>\r\n", e.Sender)
	fmt.Fprintf(w, "Subject: Delivery failure: returned mail\r\n")
	fmt.Fprintf(w, "Date: %s\r\n", now.Format(time.RFC1123Z))
	fmt.Fprintf(w, "Message-Id: <%d.%08x.bounce@%s>\r\n", now.Unix(), id, q.hostname)
	fmt.Fprintf(w, "Auto-Submitted: auto-replied\r\n")
	fmt.Fprintf(w, "MIME-Version: 1.0\r\n")
	fmt.Fprintf(w, "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"%s\"\r\n\r\n", boundary)
	fmt.Fprintf(w, "This is a MIME-encapsulated message.\r\n\r\n--%s\r\n", boundary)
	fmt.Fprintf(w, "Content-Type: text/plain; charset=utf-8\r\n\r\n")
	fmt.Fprintf(w, "This is the mail system at %s.\r\n\r\n", q.hostname)
	fmt.Fprintf(w, "Your message could not be delivered to <%s>:\r\n\r\n    %s\r\n\r\n", e.Rcpt, reason)
	fmt.Fprintf(w, "The delivery will not be tried again. The header of your message\r\nfollows.\r\n\r\n")
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
	fmt.Fprintf(w, "Action: failed\r\nStatus: %s\r\n", status)
	fmt.Fprintf(w, "Diagnostic-Code: %s\r\n", diag)
	fmt.Fprintf(w, "Last-Attempt-Date: %s\r\n\r\n", now.Format(time.RFC1123Z))
	full := strings.EqualFold(e.Ret, "FULL")
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
func dsnStatus(reason string) (status, diag string) {
	f := strings.Fields(reason)
	if len(f) >= 2 && len(f[0]) == 3 && f[0][0] == '5' && strings.Count(f[1], ".") == 2 && f[1][0] == '5' {
		return f[1], "smtp; " + reason
	}
	return "5.0.0", "x-local; " + reason
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
