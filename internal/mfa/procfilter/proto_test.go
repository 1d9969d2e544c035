package procfilter

import (
	"strings"
	"testing"
	"time"
)

func TestParseLine(t *testing.T) {
	for _, tc := range []struct {
		line string
		want message // zero kind: an error
	}{
		{"register|ready", message{kind: msgRegisterReady}},
		{"register|report|smtp-in|link-connect", message{kind: msgRegisterReport, subsystem: "smtp-in", name: "link-connect"}},
		{"register|report|smtp-in|*", message{kind: msgRegisterReport, subsystem: "smtp-in", name: "*"}},
		{"register|report|smtp-out|tx-begin", message{kind: msgRegisterReport, subsystem: "smtp-out", name: "tx-begin"}},
		{"register|filter|smtp-in|wiz", message{kind: msgRegisterFilter, subsystem: "smtp-in", name: "wiz"}},
		{"register|filter|Smtp-In|rset", message{kind: msgRegisterFilter, subsystem: "smtp-in", name: "rset"}},
		{"register|report|SMTP-IN|link-connect", message{}},
		{"register|filter|smtp-in|*", message{}},
		{"register|filter|smtp-in|connect|", message{}},
		{"register|ready|", message{}},
		{"register", message{}},
		{"filter-result|0000000000000001|00000000000000ff|proceed", message{kind: msgResult, sid: 1, token: 0xff, verb: "proceed"}},
		{"filter-result|1|FF|junk", message{kind: msgResult, sid: 1, token: 0xff, verb: "junk"}},
		{"filter-result|1|2|reject|550 a|b", message{kind: msgResult, sid: 1, token: 2, verb: "reject", param: "550 a|b", hasParam: true}},
		{"filter-result|1|2|rewrite|", message{kind: msgResult, sid: 1, token: 2, verb: "rewrite", hasParam: true}},
		{"filter-result|1|2|report|x", message{kind: msgResult, sid: 1, token: 2, verb: "report", param: "x", hasParam: true}},
		{"filter-result|1|2|disconnect|421 bye", message{kind: msgResult, sid: 1, token: 2, verb: "disconnect", param: "421 bye", hasParam: true}},
		{"filter-result|1|2|junk|", message{}},
		{"filter-result|1|2|reject", message{}},
		{"filter-result|1|2|", message{}},
		{"filter-result|1|2", message{}},
		{"filter-result||2|proceed", message{}},
		{"filter-result|11111111111111111|2|proceed", message{}},
		{"filter-result|+1|2|proceed", message{}},
		{"filter-result|1|g|proceed", message{}},
		{"filter-dataline|1|2|", message{kind: msgDataline, sid: 1, token: 2, param: "", hasParam: true}},
		{"filter-dataline|1|2|a|b|c", message{kind: msgDataline, sid: 1, token: 2, param: "a|b|c", hasParam: true}},
		{"filter-dataline|1|2", message{}},
		{"report|1576146008.006099|smtp-in|7641df9771b4ed00|hello|there", message{kind: msgReport, sec: 1576146008, usec: 6099, sid: 0x7641df9771b4ed00, param: "hello|there", hasParam: true}},
		{"report|1576146008.006099|smtp-in|7641df9771b4ed00|", message{kind: msgReport, sec: 1576146008, usec: 6099, sid: 0x7641df9771b4ed00, hasParam: true}},
		{"report|1576146008.006099|smtp-out|7641df9771b4ed00|x", message{}},
		{"report|1576146008.6099|smtp-in|7641df9771b4ed00|x", message{}},
		{"report|1576146008|smtp-in|7641df9771b4ed00|x", message{}},
		{"report|-1.000000|smtp-in|1|x", message{}},
		{"report|1.000000|smtp-in|1", message{}},
		{"report|0.7|1.000000|smtp-in|link-connect|1|x", message{}},
		{"", message{}},
		{"proceed", message{}},
		{"filter|0.7|1.000000|smtp-in|connect|1|2|a|b", message{}},
	} {
		got, err := parseLine(tc.line)
		if tc.want.kind == 0 {
			if err == nil {
				t.Errorf("parseLine(%q) = %+v, want an error", tc.line, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseLine(%q) = %+v, %v\n want %+v", tc.line, got, err, tc.want)
		}
	}
}

func TestParseReply(t *testing.T) {
	for _, tc := range []struct {
		in             string
		code           int
		enhanced, text string
		ok             bool
	}{
		{"550 5.7.1 go away", 550, "5.7.1", "go away", true},
		{"451 later", 451, "", "later", true},
		{"421 4.7.0  spaced", 421, "4.7.0", "spaced", true},
		{"550 5.7.123 x", 550, "5.7.123", "x", true},
		{"550 5.7.1234 x", 550, "", "5.7.1234 x", true},
		{"550 3.7.1 x", 550, "", "3.7.1 x", true},
		{"550 x", 550, "", "x", true},
		{"250 ok", 250, "", "ok", true},
		{"550  ", 550, "", " ", true},
		{"550 ", 0, "", "", false}, // valid_smtp_response wants five characters
		{"550", 0, "", "", false},
		{"550-x y", 0, "", "", false},
		{"650 x", 0, "", "", false},
		{"5a0 x", 0, "", "", false},
		{"", 0, "", "", false},
	} {
		code, enhanced, text, ok := parseReply(tc.in)
		if code != tc.code || enhanced != tc.enhanced || text != tc.text || ok != tc.ok {
			t.Errorf("parseReply(%q) = %d, %q, %q, %v", tc.in, code, enhanced, text, ok)
		}
	}
}

func TestAppendTime(t *testing.T) {
	for _, tc := range []struct {
		t    time.Time
		want string
	}{
		{time.Unix(1576146008, 6099000), "1576146008.006099"},
		{time.Unix(0, 0), "0.000000"},
		{time.Unix(5, 999999999), "5.999999"},
	} {
		if got := string(appendTime(nil, tc.t)); got != tc.want {
			t.Errorf("appendTime(%v) = %q, want %q", tc.t, got, tc.want)
		}
	}
	if got := string(appendHex(nil, 0x7641df9771b4ed00)); got != "7641df9771b4ed00" {
		t.Errorf("appendHex = %q", got)
	}
	if got := string(appendHex(nil, 1)); got != "0000000000000001" {
		t.Errorf("appendHex = %q", got)
	}
}

// FuzzParseLine: the parser never panics, what it accepts formats back
// to a line that parses the same, and a result it accepts converts to a
// Result or an error without panicking.
func FuzzParseLine(f *testing.F) {
	for _, s := range []string{
		"register|ready",
		"register|report|smtp-in|*",
		"register|filter|smtp-in|data-line",
		"filter-result|7641df9771b4ed00|1ef1c203cc576e5d|proceed",
		"filter-result|7641df9771b4ed00|1ef1c203cc576e5d|reject|550 5.7.1 nope",
		"filter-result|7641df9771b4ed00|1ef1c203cc576e5d|rewrite|<a@b>",
		"filter-dataline|7641df9771b4ed00|1ef1c203cc576e5d|..line|x",
		"report|1576146008.006099|smtp-in|7641df9771b4ed00|text",
		"filter-result|1|2|disconnect|421",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		if strings.Contains(line, "\n") {
			return // the reader splits on newlines
		}
		m, err := parseLine(line)
		if err != nil {
			return
		}
		again, err := parseLine(m.String())
		if err != nil || again != m {
			t.Fatalf("%q parsed as %+v, formatted as %q, parsed again as %+v, %v", line, m, m.String(), again, err)
		}
		if m.kind == msgResult {
			for _, phase := range []string{"connect", "commit"} {
				res, err := result(phase, m)
				if err == nil && (res.Action == Reject || res.Action == Disconnect) && (res.Code < 400 || res.Code > 599) {
					t.Fatalf("%q: %+v", line, res)
				}
			}
		}
		if strings.ContainsRune(m.String(), '\n') {
			t.Fatalf("%q formats with a newline", line)
		}
	})
}
