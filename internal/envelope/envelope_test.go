package envelope

import (
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
