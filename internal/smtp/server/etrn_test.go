package server

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

// etrnSession is the test policy with ETRN: a node the table names
// answers as it says (a count of messages, or a reply), any other none.
type etrnSession struct {
	*testSession
	answers map[string]etrnAnswer
}

type etrnAnswer struct {
	messages int
	reply    *Reply
}

func (s *etrnSession) ETRN(node ETRNNode) (int, *Reply) {
	s.rec.log("etrn %s name=%s subdomains=%v queue=%v", node, node.Name, node.Subdomains, node.Queue)
	a := s.answers[node.String()]
	return a.messages, a.reply
}

// TestETRN: the syntax of RFC 1985 §5, when ETRN may come, and the
// replies to what the policy says.
func TestETRN(t *testing.T) {
	checkGoroutines(t)
	answers := map[string]etrnAnswer{
		"example.org":           {messages: 3},
		"@example.org":          {messages: 1},
		"Example.ORG":           {messages: 2},
		"[192.0.2.1]":           {messages: 1},
		"down.example":          {reply: ETRNUnable(ETRNNode{Name: "down.example"})},
		"#relay":                {reply: ETRNNotAllowed(ETRNNode{Name: "relay", Queue: true}, "queue names are not supported")},
		"not-allowed.example":   {reply: ETRNNotAllowed(ETRNNode{Name: "not-allowed.example"}, "client not authorized")},
		"replaced.example":      {messages: 9, reply: &Reply{Code: 250, Text: "Queuing for node replaced.example started"}},
		"empty.example":         {},
		"negative.example":      {messages: -1},
		"@sub.example.org":      {messages: 4},
		"xn--bcher-kva.example": {messages: 1},
	}
	for _, tc := range []struct {
		name   string
		off    bool // EnableETRN false
		plain  bool // the policy has no ETRN
		lmtp   bool
		script string
		calls  []string
	}{
		{name: "scheduled", script: `
			C: EHLO client.example
			S: 250 HELP
			C: ETRN example.org
			S: 253 2.0.0 OK, 3 pending messages for node example.org started
			C: ETRN @example.org
			S: 253 2.0.0 OK, 1 pending messages for node @example.org started
			C: ETRN Example.ORG
			S: 253 2.0.0 OK, 2 pending messages for node Example.ORG started
			C: etrn [192.0.2.1]
			S: 253 2.0.0 OK, 1 pending messages for node [192.0.2.1] started
			C: ETRN xn--bcher-kva.example
			S: 253 2.0.0
			C: ETRN @sub.example.org
			S: 253 2.0.0`,
			calls: []string{
				"etrn example.org name=example.org subdomains=false queue=false",
				"etrn @example.org name=example.org subdomains=true queue=false",
				"etrn Example.ORG name=Example.ORG subdomains=false queue=false",
				"etrn [192.0.2.1] name=[192.0.2.1] subdomains=false queue=false",
				"etrn xn--bcher-kva.example name=xn--bcher-kva.example subdomains=false queue=false",
				"etrn @sub.example.org name=sub.example.org subdomains=true queue=false",
			}},
		{name: "nothing waiting", script: `
			C: HELO client.example
			S: 250
			C: ETRN empty.example
			S: 251 2.0.0 OK, no messages waiting for node empty.example
			C: ETRN negative.example
			S: 251 2.0.0`},
		{name: "refused by the policy", script: `
			C: EHLO client.example
			S: 250 HELP
			C: ETRN down.example
			S: 458 4.3.0 Unable to queue messages for node down.example
			C: ETRN not-allowed.example
			S: 459 4.7.1 Node not-allowed.example not allowed: client not authorized
			C: ETRN #relay
			S: 459 4.7.1 Node #relay not allowed: queue names are not supported
			C: ETRN replaced.example
			S: 250 2.0.0 Queuing for node replaced.example started
			C: NOOP
			S: 250 2.0.0`},
		{name: "syntax", script: `
			C: EHLO client.example
			S: 250 HELP
			C: ETRN
			S: 501 5.5.4
			C: ETRN example.org extra
			S: 501 5.5.4
			C: ETRN example..org
			S: 501 5.5.4
			C: ETRN -example.org
			S: 501 5.5.4
			C: ETRN example.org.
			S: 501 5.5.4
			C: ETRN @
			S: 501 5.5.4
			C: ETRN @[192.0.2.1]
			S: 501 5.5.4
			C: ETRN #
			S: 501 5.5.4
			C: ETRN #a/b
			S: 501 5.5.4
			C: ETRN user@example.org
			S: 501 5.5.4
			C: ETRN bücher.example
			S: 501 5.5.4
			C: ETRN [300.1.1.1]
			S: 501 5.5.4
			C: NOOP
			S: 250 2.0.0`},
		{name: "before HELO", script: `
			C: ETRN example.org
			S: 503 5.5.1
			C: EHLO client.example
			S: 250 HELP
			C: ETRN example.org
			S: 253 2.0.0`,
			calls: []string{"etrn example.org name=example.org subdomains=false queue=false"}},
		{name: "inside a transaction", script: `
			C: EHLO client.example
			S: 250 HELP
			C: MAIL FROM:<a@example.org>
			S: 250 2.0.0
			C: ETRN example.org
			S: 503 5.5.1
			C: RCPT TO:<b@example.net>
			S: 250 2.1.5
			C: ETRN example.org
			S: 503 5.5.1
			C: BDAT 12
			C: Subject: x
			S: 250 2.0.0 12 octets received
			C: ETRN example.org
			S: 503 5.5.1
			C: BDAT 0 LAST
			S: 250 2.0.0
			C: ETRN example.org
			S: 253 2.0.0
			C: MAIL FROM:<a@example.org>
			S: 250 2.0.0
			C: RSET
			S: 250 2.0.0
			C: ETRN example.org
			S: 253 2.0.0`},
		{name: "off", off: true, script: `
			C: EHLO client.example
			S: 250 HELP
			C: ETRN example.org
			S: 502 5.5.1
			C: NOOP
			S: 250 2.0.0`},
		{name: "policy without ETRN", plain: true, script: `
			C: EHLO client.example
			S: 250 HELP
			C: ETRN example.org
			S: 502 5.5.1`},
		{name: "lmtp", lmtp: true, script: `
			C: LHLO client.example
			S: 250 HELP
			C: ETRN example.org
			S: 502 5.5.1`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder()
			srv := newTestServer(rec)
			srv.EnableETRN = !tc.off
			srv.MaxErrors = 50
			srv.LMTP = tc.lmtp
			srv.NewSession = func(c *Conn) Session {
				s := rec.newSession(c).(*testSession)
				if tc.plain {
					return s
				}
				return &etrnSession{testSession: s, answers: answers}
			}
			cl := dial(t, serveLoopback(t, srv))
			cl.expect("220 ")
			cl.script(tc.script + "\nC: QUIT\nS: 221")
			if tc.calls != nil {
				var got []string
				for _, c := range rec.Calls() {
					if strings.HasPrefix(c, "etrn ") {
						got = append(got, c)
					}
				}
				if !reflect.DeepEqual(got, tc.calls) {
					t.Errorf("ETRN calls:\n%q\nwant\n%q", got, tc.calls)
				}
			}
		})
	}
}

// TestETRNOffered: the EHLO reply and HELP list ETRN with EnableETRN
// and a policy that serves it, and not without either.
func TestETRNOffered(t *testing.T) {
	for _, tc := range []struct {
		name          string
		enable, plain bool
		offered       bool
	}{
		{"offered", true, false, true},
		{"off", false, false, false},
		{"policy without ETRN", true, true, false},
	} {
		rec := newRecorder()
		srv := newTestServer(rec)
		srv.EnableETRN = tc.enable
		if !tc.plain {
			srv.NewSession = func(c *Conn) Session {
				return &etrnSession{testSession: rec.newSession(c).(*testSession)}
			}
		}
		cl := dial(t, serveLoopback(t, srv))
		cl.expect("220 ")
		cl.send("EHLO client.example\r\n")
		if lines := cl.expect("250 HELP"); slices.Contains(lines, "250-ETRN") != tc.offered {
			t.Errorf("%s: EHLO reply %q, want ETRN offered %v", tc.name, lines, tc.offered)
		}
		cl.send("HELP\r\n")
		if lines := cl.expect("214 2.0.0 End of HELP info"); strings.Contains(strings.Join(lines, "\n"), " ETRN") != tc.offered {
			t.Errorf("%s: HELP %q, want ETRN listed %v", tc.name, lines, tc.offered)
		}
	}
}

func TestParseETRN(t *testing.T) {
	for _, tt := range []struct {
		arg  string
		want ETRNNode
		ok   bool
	}{
		{"example.org", ETRNNode{Name: "example.org"}, true},
		{"@example.org", ETRNNode{Name: "example.org", Subdomains: true}, true},
		{"#queue-1", ETRNNode{Name: "queue-1", Queue: true}, true},
		{"[IPv6:2001:db8::1]", ETRNNode{Name: "[IPv6:2001:db8::1]"}, true},
		{"localhost", ETRNNode{Name: "localhost"}, true},
		{"", ETRNNode{}, false},
		{"@", ETRNNode{}, false},
		{"@@example.org", ETRNNode{}, false},
		{"#", ETRNNode{}, false},
		{"#" + strings.Repeat("q", 64), ETRNNode{}, false},
		{"example.org\t", ETRNNode{}, false},
		{"exa_mple.org", ETRNNode{}, false},
		{strings.Repeat("a.", 128) + "org", ETRNNode{}, false},
	} {
		got, ok := parseETRN(tt.arg)
		if ok != tt.ok || ok && got != tt.want {
			t.Errorf("parseETRN(%q) = %+v, %v; want %+v, %v", tt.arg, got, ok, tt.want, tt.ok)
		}
	}
}
