package envelope

import "testing"

func TestFormatParseMsgID(t *testing.T) {
	for _, c := range []struct {
		id  uint32
		str string
	}{
		{1, "00000001"},
		{0x1234abcd, "1234abcd"},
		{0xffffffff, "ffffffff"},
	} {
		if got := FormatMsgID(c.id); got != c.str {
			t.Errorf("FormatMsgID(%#x) = %q, want %q", c.id, got, c.str)
		}
		if got, err := ParseMsgID(c.str); err != nil || got != c.id {
			t.Errorf("ParseMsgID(%q) = %#x, %v", c.str, got, err)
		}
	}
	if got, err := ParseMsgID("1234ABCD"); err != nil || got != 0x1234abcd {
		t.Errorf("upper case: %#x, %v", got, err)
	}
	for _, bad := range []string{"", "1234abc", "1234abcd0", "1234abcg", "+234abcd", "-234abcd", "0x34abcd", "1234_bcd", " 234abcd", "1234abcd00000042"} {
		if _, err := ParseMsgID(bad); err == nil {
			t.Errorf("ParseMsgID(%q) accepted", bad)
		}
	}
}

func TestFormatParseEvpID(t *testing.T) {
	for _, c := range []struct {
		id  uint64
		str string
	}{
		{1<<32 | 1, "0000000100000001"},
		{0x1234abcd00000042, "1234abcd00000042"},
		{0xffffffffffffffff, "ffffffffffffffff"},
		// the form is right: Unmarshal refuses the zero half
		{0x42, "0000000000000042"},
	} {
		if got := FormatEvpID(c.id); got != c.str {
			t.Errorf("FormatEvpID(%#x) = %q, want %q", c.id, got, c.str)
		}
		if got, err := ParseEvpID(c.str); err != nil || got != c.id {
			t.Errorf("ParseEvpID(%q) = %#x, %v", c.str, got, err)
		}
	}
	for _, bad := range []string{"", "1234abcd", "1234abcd0000004", "1234abcd000000420", "1234abcd0000004z", "+234abcd00000042", "0x34abcd00000042", "1234abcd00000042.tmp", "message"} {
		if _, err := ParseEvpID(bad); err == nil {
			t.Errorf("ParseEvpID(%q) accepted", bad)
		}
	}
}

func TestParseID(t *testing.T) {
	for _, c := range []struct {
		in    string
		msgid uint32
		evpid uint64
		ok    bool
	}{
		{"1234abcd", 0x1234abcd, 0, true},
		{"1234ABCD00000042", 0x1234abcd, 0x1234abcd00000042, true},
		{"all", 0, 0, false},
		{"1234abcd0", 0, 0, false},
		{"", 0, 0, false},
	} {
		msgid, evpid, err := ParseID(c.in)
		if (err == nil) != c.ok || msgid != c.msgid || evpid != c.evpid {
			t.Errorf("ParseID(%q) = %#x, %#x, %v", c.in, msgid, evpid, err)
		}
	}
}

func TestNewIDs(t *testing.T) {
	for range 1000 {
		msgid := NewMsgID()
		evpid := NewEvpID(msgid)
		if msgid == 0 || MsgIDOf(evpid) != msgid || uint32(evpid) == 0 {
			t.Fatalf("message %#x, envelope %#x", msgid, evpid)
		}
		if got, err := ParseEvpID(FormatEvpID(evpid)); err != nil || got != evpid {
			t.Fatalf("round trip of %#x: %#x, %v", evpid, got, err)
		}
	}
}

func TestMatches(t *testing.T) {
	e := &Envelope{ID: 0x1234abcd00000042}
	for target, want := range map[string]bool{
		"all":              true,
		"1234abcd":         true,
		"1234ABCD":         true,
		"1234abcd00000042": true,
		"1234abcd00000043": false,
		"1234abce":         false,
		"1234abcd0":        false,
		"ALL":              false,
		"":                 false,
	} {
		if got := e.Matches(target); got != want {
			t.Errorf("Matches(%q) = %v", target, got)
		}
	}
}
