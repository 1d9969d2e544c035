package proctable

import (
	"strings"
	"testing"
	"time"

	"smtpd/internal/table"
)

func TestAppendRequest(t *testing.T) {
	ts := time.Unix(1713795110, 4921000)
	got := string(appendRequest(nil, ts, "devs", opLookup, "userinfo", formatID(0xf993c74), "op|x"))
	if want := "table|0.1|1713795110.004921|devs|lookup|userinfo|0f993c74|op|x\n"; got != want {
		t.Errorf("lookup: got %q, want %q", got, want)
	}
	got = string(appendRequest(nil, ts, "devs", opUpdate, "", formatID(0x478ff0d2), ""))
	if want := "table|0.1|1713795110.004921|devs|update|478ff0d2\n"; got != want {
		t.Errorf("update: got %q, want %q", got, want)
	}
	got = string(appendHandshake(nil, "7.8.0", "devs"))
	if want := "config|smtpd-version|7.8.0\nconfig|protocol|0.1\nconfig|tablename|devs\nconfig|ready\n"; got != want {
		t.Errorf("handshake: got %q, want %q", got, want)
	}
}

func TestServiceOp(t *testing.T) {
	for _, s := range table.Services {
		op, ok := serviceOp(s)
		if !ok {
			t.Errorf("%s: no op", s)
			continue
		}
		if _, ok := serviceBit(string(s)); !ok {
			t.Errorf("%s: cannot be registered", s)
		}
		want := opLookup
		switch s {
		case table.Domain, table.Netaddr, table.Source, table.Mailaddr:
			want = opCheck
		}
		if op != want {
			t.Errorf("%s: op %s, want %s", s, op, want)
		}
	}
	for _, s := range allServices() {
		if _, ok := serviceOp(table.Service(s)); !ok {
			t.Errorf("registrable service %s has no op", s)
		}
	}
	if _, ok := serviceOp("none"); ok {
		t.Error("none has an op")
	}
	if _, ok := serviceBit("none"); ok {
		t.Error("none can be registered (K_NONE is refused by table_proc_open)")
	}
}

func TestParseRegister(t *testing.T) {
	for _, c := range []struct {
		line  string
		ready bool
		ok    bool
	}{
		{"register|ready", true, true},
		{"register|alias", false, true},
		{"register|auth", false, true},
		{"register|none", false, false},
		{"register|Alias", false, false},
		{"register|alias|x", false, false},
		{"register|", false, false},
		{"register", false, false},
		{"config|ready", false, false},
		{"", false, false},
	} {
		_, ready, err := parseRegister(c.line)
		if (err == nil) != c.ok || ready != c.ready {
			t.Errorf("%q: ready %v, err %v", c.line, ready, err)
		}
	}
}

func TestParseReply(t *testing.T) {
	const id = "0000002a"
	valid := []struct {
		op, line string
		want     reply
	}{
		{opLookup, "lookup-result|0000002a|found|1000:1000:/home/op", reply{replyFound, "1000:1000:/home/op"}},
		{opLookup, "lookup-result|0000002a|found|a|b||", reply{replyFound, "a|b||"}},
		{opLookup, "lookup-result|0000002a|not-found", reply{kind: replyNotFound}},
		{opLookup, "lookup-result|0000002a|error|db down", reply{replyError, "db down"}},
		{opLookup, "lookup-result|0000002a|error", reply{kind: replyError}},
		{opLookup, "lookup-result|0000002a|error|", reply{kind: replyError}},
		{opCheck, "check-result|0000002a|found", reply{kind: replyFound}},
		{opCheck, "check-result|0000002a|found|ignored", reply{kind: replyFound}},
		{opCheck, "check-result|0000002a|not-found", reply{kind: replyNotFound}},
		{opCheck, "check-result|0000002a|error|x|y", reply{replyError, "x|y"}},
		{opUpdate, "update-result|0000002a|ok", reply{kind: replyOK}},
		{opUpdate, "update-result|0000002a|error|failed to connect", reply{replyError, "failed to connect"}},
	}
	for _, c := range valid {
		got, err := parseReply(c.line, c.op, id)
		if err != nil || got != c.want {
			t.Errorf("%s %q: got %+v, %v; want %+v", c.op, c.line, got, err, c.want)
		}
	}
	invalid := []struct{ op, line string }{
		{opLookup, ""},
		{opLookup, "lookup-result"},
		{opLookup, "lookup-result|0000002a"},
		{opLookup, "lookup-result|0000002a|"},
		{opLookup, "lookup-result|0000002a|found"},  // no value
		{opLookup, "lookup-result|0000002a|found|"}, // empty value: fatal in table_proc_lookup
		{opLookup, "lookup-result|0000002b|not-found"},
		{opLookup, "lookup-result|0000002a0|not-found"},
		{opLookup, "lookup-result|0000002|not-found"},
		{opLookup, "check-result|0000002a|not-found"},
		{opLookup, "fetch-result|0000002a|found|x"},
		{opLookup, "lookup-result|0000002a|not-found|"},
		{opLookup, "lookup-result|0000002a|NOT-FOUND"},
		{opLookup, "lookup-result|0000002a|ok"},
		{opLookup, "lookup-result|0000002a|errorx"},
		{opLookup, "lookup-result|0000002a|not-found\r"},
		{opCheck, "check-result|0000002a|foundx"},
		{opCheck, "check-result|0000002a|ok"},
		{opCheck, "lookup-result|0000002a|found|x"},
		{opUpdate, "update-result|0000002a|okay"},
		{opUpdate, "update-result|0000002a|found|x"},
		{opUpdate, "update-result|0000002a|not-found"},
		{opUpdate, "update-result||ok"},
		{opUpdate, "this is not the protocol"},
	}
	for _, c := range invalid {
		if got, err := parseReply(c.line, c.op, id); err == nil {
			t.Errorf("%s %q: accepted as %+v", c.op, c.line, got)
		}
	}
}

// FuzzParseReply checks that the answer parser never panics and that
// what it accepts is what the protocol allows: a kind the op can have,
// a non-empty value for a found lookup, and the line rebuilt exactly
// from what was parsed.
func FuzzParseReply(f *testing.F) {
	for _, s := range []string{
		"lookup-result|0000002a|found|1000:1000:/home/op",
		"lookup-result|0000002a|not-found",
		"lookup-result|0000002a|error|boom",
		"check-result|0000002a|found",
		"check-result|0000002a|found|x",
		"update-result|0000002a|ok",
		"update-result|0000002a|error",
		"lookup-result|0000002a|found|",
		"garbage",
	} {
		f.Add(s, uint8(0), uint32(42))
	}
	ops := []string{opLookup, opCheck, opUpdate}
	f.Fuzz(func(t *testing.T, line string, opIndex uint8, n uint32) {
		op, id := ops[int(opIndex)%len(ops)], formatID(n)
		r, err := parseReply(line, op, id)
		if err != nil {
			return
		}
		prefix := op + "-result|" + id + "|"
		var rebuilt string
		switch r.kind {
		case replyFound:
			if op == opUpdate {
				t.Fatalf("found for update: %q", line)
			}
			if op == opLookup {
				if r.text == "" {
					t.Fatalf("lookup found without value: %q", line)
				}
				rebuilt = prefix + "found|" + r.text
			} else {
				if r.text != "" {
					t.Fatalf("check with a value: %q", line)
				}
				if !strings.HasPrefix(line, prefix+"found") {
					t.Fatalf("check found from %q", line)
				}
				rebuilt = line
			}
		case replyNotFound:
			if op == opUpdate {
				t.Fatalf("not-found for update: %q", line)
			}
			rebuilt = prefix + "not-found"
		case replyOK:
			if op != opUpdate {
				t.Fatalf("ok for %s: %q", op, line)
			}
			rebuilt = prefix + "ok"
		case replyError:
			rebuilt = prefix + "error"
			if line != rebuilt {
				rebuilt += "|" + r.text
			}
		default:
			t.Fatalf("kind %d from %q", r.kind, line)
		}
		if rebuilt != line {
			t.Fatalf("parsed %q as %+v, which is %q", line, r, rebuilt)
		}
	})
}
