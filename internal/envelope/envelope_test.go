package envelope

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func sample() *Envelope {
	now := time.Unix(1700000000, 0)
	return &Envelope{
		ID: 0x1234abcd00000042, Kind: MDA, Rule: 2, Action: "local",
		Sender: "a@example.net", Rcpt: "B+tag@Example.org", Dest: "b@example.org", User: "b", Target: "|/usr/bin/procmail -a x",
		Helo: "client.example.net", Remote: "192.0.2.1",
		Created: now, Expire: now.Add(96 * time.Hour), Retries: 3, LastError: "451 4.3.0 try later",
		Notify: "FAILURE,DELAY", Ret: "HDRS", EnvID: "xyz", ORcpt: "rfc822;b@example.org",
	}
}

func TestRoundTrip(t *testing.T) {
	tls := sample()
	tls.RequireTLS, tls.TLSOptional, tls.FirstAttempt = true, true, true
	tls.Commit = CommitInfo{Size: 2048, CRC: 0xdeadbeef, Envelopes: 3, Quarantined: true}
	for _, e := range []*Envelope{sample(), {ID: 1<<32 | 1, Kind: Bounce}, tls} {
		data, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		got, err := Unmarshal(data)
		if err != nil {
			t.Fatalf("%v\n%s", err, data)
		}
		if !reflect.DeepEqual(got, e) {
			t.Errorf("got %+v\nwant %+v", got, e)
		}
	}
}

// The checksum line: a flipped byte, a file cut short or another
// envelope's lines are corrupt; an envelope of an earlier version,
// without the line, still reads.
func TestChecksum(t *testing.T) {
	data, err := sample().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !Checked(data) {
		t.Fatalf("no checksum line:\n%s", data)
	}
	flipped := bytes.Replace(data, []byte("rcpt: B+tag"), []byte("rcpt: C+tag"), 1)
	cut := data[:bytes.Index(data, []byte("warned:"))]
	lines := bytes.SplitAfter(data, []byte("\n"))
	legacy := bytes.Join(lines[:len(lines)-2], nil)
	other, _ := (&Envelope{ID: 2<<32 | 1, Kind: MTA}).Marshal()
	mixed := append(append([]byte{}, data[:len(data)/2]...), other[len(other)/2:]...)
	for name, c := range map[string][]byte{"flipped": flipped, "cut": cut, "mixed": mixed, "zeros": make([]byte, len(data))} {
		if _, err := Unmarshal(c); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: got %v, want ErrCorrupt", name, err)
		}
	}
	if Checked(legacy) {
		t.Fatal("legacy envelope seen as checked")
	}
	if e, err := Unmarshal(legacy); err != nil || e.Rcpt != "B+tag@Example.org" {
		t.Fatalf("legacy envelope: %+v, %v", e, err)
	}
}

func TestRefusesInjection(t *testing.T) {
	e := sample()
	e.Rcpt = "a@b\nkind: mta"
	if _, err := e.Marshal(); err == nil {
		t.Fatal("line break accepted")
	}
}

func TestCorrupt(t *testing.T) {
	good, _ := sample().Marshal()
	cases := map[string]string{
		"empty":         "",
		"truncated":     string(good[:len(good)/2]),
		"no colon":      string(good) + "junk\n",
		"unknown key":   string(good) + "color: blue\n",
		"duplicate":     string(good) + "user: c\n",
		"version":       strings.Replace(string(good), "version: 1", "version: 2", 1),
		"bad kind":      strings.Replace(string(good), "kind: mda", "kind: fax", 1),
		"bad retries":   strings.Replace(string(good), "retries: 3", "retries: x", 1),
		"zero msgid":    strings.Replace(string(good), "id: 1234abcd00000042", "id: 0000000000000042", 1),
		"bad timestamp": strings.Replace(string(good), "created: 1700000000", "created: soon", 1),
	}
	for name, data := range cases {
		if _, err := Unmarshal([]byte(data)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func FuzzUnmarshal(f *testing.F) {
	good, _ := sample().Marshal()
	f.Add(good)
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Unmarshal(data)
		if err != nil {
			return
		}
		out, err := e.Marshal()
		if err != nil {
			t.Fatalf("re-marshal: %v", err)
		}
		again, err := Unmarshal(out)
		if err != nil || !reflect.DeepEqual(again, e) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func TestCleanText(t *testing.T) {
	e := sample()
	e.LastError = CleanText("451 4.3.0 bad\r\nkind: mta\x00")
	if _, err := e.Marshal(); err != nil {
		t.Fatal(err)
	}
}
