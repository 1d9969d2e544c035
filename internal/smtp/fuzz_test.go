package smtp

import (
	"bytes"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"smtpd/internal/config"
	"smtpd/internal/logging"
	"smtpd/internal/lookup"
	"smtpd/internal/privsep"
	"smtpd/internal/stats"
	"smtpd/proto"
)

// fuzzConfig accepts mail for every recipient into a maildir, with
// short timeouts so that a stalled session ends quickly.
const fuzzConfig = `
hostname = "mx.example.test"
limits {
  command_timeout = "1s"
  session_timeout = "2s"
  message_size    = 4096
}
listen "mx" { address = "127.0.0.1:2525" }
action "local" {
  maildir  = "/nonexistent"
  virtual  = { "@" = "sink" }
  userbase = { sink = "1000:1000:/nonexistent" }
}
match {
  from   = "any"
  for    = "any"
  action = action.local
}
`

// startFuzzServer runs the smtp process's server in this process. Its
// lookup is the real resolver; its queue hands out body files in dir
// and commits nothing: enough for sessions to go all the way.
func startFuzzServer(t testing.TB, dir string) *Server {
	cfg, err := config.Parse([]byte(fuzzConfig), "/etc/mail/smtpd.conf")
	if err != nil {
		t.Fatal(err)
	}
	child := &privsep.Child{Proc: proto.ProcSMTP, Config: cfg, Log: logging.NewWriter("smtp", io.Discard, false), Peers: map[proto.Proc]*proto.Channel{}}
	child.Requests = proto.NewRequests(nil)
	s, err := New(child)
	if err != nil {
		t.Fatal(err)
	}
	s.stats = stats.NewSender(func(*proto.StatUpdate) error { return nil })
	s.active = newConnLimiter(1000, 1000)
	resolver := lookup.NewResolver(cfg)
	for _, peer := range []proto.Proc{proto.ProcMFA, proto.ProcLookup, proto.ProcQueue} {
		a, b, err := proto.Socketpair()
		if err != nil {
			t.Fatal(err)
		}
		ours, err1 := proto.NewChannel(a, proto.ProcSMTP, peer)
		theirs, err2 := proto.NewChannel(b, peer, proto.ProcSMTP)
		a.Close()
		b.Close()
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		child.Peers[peer] = ours
		go func() {
			for {
				env, err := ours.Recv()
				if err != nil {
					return
				}
				child.Requests.Deliver(env)
			}
		}()
		go fakePeer(theirs, resolver, dir)
	}
	s.mfa, s.lookup, s.queue = child.Peers[proto.ProcMFA], child.Peers[proto.ProcLookup], child.Peers[proto.ProcQueue]
	go s.newServer(s.cfg.Listeners[0]).Serve(s.local)
	return s
}

// fakePeer answers smtp as lookup and queue would.
func fakePeer(ch *proto.Channel, resolver *lookup.Resolver, dir string) {
	var next uint32
	for {
		env, err := ch.Recv()
		if err != nil {
			return
		}
		switch m := env.Msg.(type) {
		case *proto.SMTPExpandRcpt:
			res := resolver.Expand(m.Session, m.Rcpt)
			ch.Send(&res, env.PeerID)
		case *proto.SMTPAuthQuery:
			ch.Send(&proto.LookupAuthResult{Outcome: proto.Outcome{Status: proto.StatusPermfail}}, env.PeerID)
		case *proto.SMTPFilterQuery:
			ch.Send(&proto.MFAFilterVerdict{Verdict: proto.VerdictProceed}, env.PeerID)
		case *proto.SMTPMessageCreate:
			next++
			f, err := os.Create(filepath.Join(dir, "body"))
			if err != nil {
				ch.Send(&proto.QueueFailure{Reply: proto.Reply{Code: 451, Enhanced: "4.3.0", Text: err.Error()}}, env.PeerID)
				continue
			}
			ch.Send(proto.NewQueueMessageCreated(next, f), env.PeerID)
			f.Close()
		case *proto.SMTPMessageCommit:
			ch.Send(&proto.QueueMessageCommitted{MsgID: m.MsgID}, env.PeerID)
		}
	}
}

// replyLine is what every line the server writes must look like.
var replyLine = regexp.MustCompile(`^[2-5][0-9][0-9]([ -].*)?$`)

// FuzzSession plays a byte stream as a client against a live server,
// then ends any message and quits: the server must answer every
// command with well-formed replies, greet first, and let go of the
// session.
func FuzzSession(f *testing.F) {
	for _, seed := range []string{
		"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n",
		"HELO a\r\nRCPT TO:<x@y>\r\n",
		"EHLO a\r\nMAIL FROM:<a@b> SIZE=99999999\r\n",
		"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d> NOTIFY=NEVER ORCPT=rfc822;c@d\r\nDATA\r\n.\r\n",
		"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\n.\nmore\r\n.\r\n",
		"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 5 LAST\r\nhello",
		"EHLO a\r\nAUTH PLAIN AGFAYg==\r\nSTARTTLS\r\nRSET\r\nNOOP\r\nVRFY x\r\nHELP\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"\x00\xff\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	s := startFuzzServer(f, f.TempDir())
	f.Fuzz(func(t *testing.T, input []byte) {
		client, server := net.Pipe()
		defer client.Close()
		s.local.conns <- server
		client.SetDeadline(time.Now().Add(5 * time.Second))
		done := make(chan []byte)
		go func() {
			out, _ := io.ReadAll(client)
			done <- out
		}()
		client.Write(input)
		client.Write([]byte("\r\n.\r\nQUIT\r\n"))
		var out []byte
		select {
		case out = <-done:
		case <-time.After(6 * time.Second):
			t.Fatalf("session did not end for %q", input)
		}
		lines := bytes.Split(bytes.TrimSuffix(out, []byte("\r\n")), []byte("\r\n"))
		if len(lines) == 0 || !bytes.HasPrefix(lines[0], []byte("220 ")) {
			t.Fatalf("no greeting for %q: %q", input, out)
		}
		for _, l := range lines {
			if !replyLine.Match(l) {
				t.Fatalf("malformed reply line %q for %q\n%s", l, input, out)
			}
		}
	})
}

// TestInProcessSession checks the fuzz harness itself: a whole
// transaction goes through and is accepted.
func TestInProcessSession(t *testing.T) {
	s := startFuzzServer(t, t.TempDir())
	client, server := net.Pipe()
	defer client.Close()
	s.local.conns <- server
	client.SetDeadline(time.Now().Add(5 * time.Second))
	go client.Write([]byte("EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n"))
	out, _ := io.ReadAll(client)
	if !bytes.Contains(out, []byte("Message accepted for delivery")) || !bytes.Contains(out, []byte("221 ")) {
		t.Errorf("session:\n%s", out)
	}
}
