package srs

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// postsrsdTime is the clock of postsrsd's tests, 2020-01-01 00:01:00
// UTC, day "2W".
var postsrsdTime = time.Unix(1577836860, 0)

func newRewriter(t testing.TB, now time.Time, key string, old ...string) *Rewriter {
	t.Helper()
	var oldKeys [][]byte
	for _, k := range old {
		oldKeys = append(oldKeys, []byte(k))
	}
	r, err := New([]byte(key), oldKeys...)
	if err != nil {
		t.Fatal(err)
	}
	r.Now = func() time.Time { return now }
	return r
}

// TestPostsrsdCompat checks the vectors of postsrsd's own tests
// (tests/blackbox/socketmap.py, tests/unit/test_srs2.c): a key shared
// with postsrsd or libsrs2 gives and takes the same addresses.
func TestPostsrsdCompat(t *testing.T) {
	r := newRewriter(t, postsrsdTime, "tops3cr3t")
	r.MaxAge = 21 * 24 * time.Hour // libsrs2's default
	forward := []struct{ in, want string }{
		{"test@otherdomain.com", "SRS0=vmyz=2W=otherdomain.com=test@example.com"},
		{"SRS0=opaque+string@otherdomain.com", "SRS1=chaI=otherdomain.com==opaque+string@example.com"},
		{"SRS1=X=thirddomain.com==opaque+string@otherdomain.com", "SRS1=JIBX=thirddomain.com==opaque+string@example.com"},
	}
	for _, tc := range forward {
		if got, ok := r.Forward(tc.in, "example.com"); !ok || got != tc.want {
			t.Errorf("Forward(%q) = %q, %v; want %q", tc.in, got, ok, tc.want)
		}
	}
	reverse := []struct {
		in, want string
		err      error
	}{
		{"SRS0=XjO9=2V=otherdomain.com=test@example.com", "test@otherdomain.com", nil},
		{"SRS1=JIBX=thirddomain.com==opaque+string@example.com", "SRS0=opaque+string@thirddomain.com", nil},
		{"srs0=xjo9=2v=otherdomain.com=test@example.com", "test@otherdomain.com", nil},
		{"SRS0=XJO9=2V=OTHERDOMAIN.COM=TEST@EXAMPLE.COM", "TEST@OTHERDOMAIN.COM", nil},
		{"test@example.com", "", ErrNotSRS},
		{"SRS0=te87=T7=otherdomain.com=test@example.com", "", ErrExpired},
		{"SRS0=VcIb=7N=otherdomain.com=test@example.com", "", ErrExpired},
		{"SRS0=FAKE=2V=otherdomain.com=test@example.com", "", ErrForged},
		{"SRS0=@example.com", "", ErrMalformed},
		{"SRS0=XjO9@example.com", "", ErrMalformed},
		{"SRS0=XjO9=2V@example.com", "", ErrMalformed},
		{"SRS0=XjO9=2V=otherdomain.com@example.com", "", ErrMalformed},
	}
	for _, tc := range reverse {
		got, err := r.Reverse(tc.in)
		if got != tc.want || !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("Reverse(%q) = %q, %v; want %q, %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	r := newRewriter(t, postsrsdTime, "0123456789abcdef0123")
	for _, sender := range []string{
		"a@orig.example",
		"First.Last@Orig.Example",
		"user+tag@sub.orig.example",
		"we=ird-user@orig.example",
		"o'brien@orig.example.",
		"ünïcødé@exämple.test",
		"SRS0x@orig.example", // no separator after the tag: not SRS
	} {
		fwd, ok := r.Forward(sender, "ours.example")
		if !ok {
			t.Errorf("Forward(%q) not rewritten", sender)
			continue
		}
		if !strings.HasPrefix(fwd, "SRS0=") || !strings.HasSuffix(fwd, "@ours.example") {
			t.Errorf("Forward(%q) = %q", sender, fwd)
		}
		want := strings.TrimSuffix(sender, ".")
		// MTAs that change case change ASCII letters only, as libsrs2
		// hashes them
		for _, variant := range []string{fwd, string(asciiLower(fwd)), asciiUpper(fwd)} {
			got, err := r.Reverse(variant)
			if err != nil || !strings.EqualFold(got, want) {
				t.Errorf("Reverse(%q) = %q, %v; want %q", variant, got, err, want)
			}
		}
		if got, _ := r.Reverse(fwd); got != want {
			t.Errorf("Reverse(%q) = %q, want %q exactly", fwd, got, want)
		}
	}
}

func asciiUpper(s string) string {
	b := []byte(s)
	for i := range b {
		b[i] = upper(b[i])
	}
	return string(b)
}

func TestNotRewritten(t *testing.T) {
	r := newRewriter(t, postsrsdTime, "0123456789abcdef0123")
	for _, tc := range []struct{ sender, domain string }{
		{"", "ours.example"},
		{"postmaster", "ours.example"},
		{"postmaster@orig.example", "ours.example"},
		{"PostMaster@orig.example", "ours.example"},
		{"user", "ours.example"},
		{"@orig.example", "ours.example"},
		{"user@", "ours.example"},
		{"user@Ours.Example", "ours.example"},
		{"SRS0=abcd=2W=orig.example=a@ours.example", "ours.example"},
		{`"john doe"@orig.example`, "ours.example"},
		{"user@[192.0.2.1]", "ours.example"},
		{"user@orig.example", ""},
		{"user@orig.example", "bad domain"},
		{"user@" + strings.Repeat("a", 230) + ".example", "ours.example"},
	} {
		if got, ok := r.Forward(tc.sender, tc.domain); ok || got != tc.sender {
			t.Errorf("Forward(%q, %q) = %q, %v; want it unchanged", tc.sender, tc.domain, got, ok)
		}
	}
}

// TestChain forwards a message through three hosts, each with its own
// key: the address grows once, from SRS0 to SRS1, then keeps its size,
// and the bounce goes back hop by hop.
func TestChain(t *testing.T) {
	now := postsrsdTime
	h1 := newRewriter(t, now, "key of the first forwarder")
	h2 := newRewriter(t, now, "key of the second forwarder")
	h3 := newRewriter(t, now, "key of the third forwarder")

	a1, ok1 := h1.Forward("a@orig.example", "one.example")
	a2, ok2 := h2.Forward(a1, "two.example")
	a3, ok3 := h3.Forward(a2, "three.example")
	if !ok1 || !ok2 || !ok3 {
		t.Fatalf("not rewritten: %q %q %q", a1, a2, a3)
	}
	if !strings.HasPrefix(a2, "SRS1=") || !strings.Contains(a2, "=one.example==") || !strings.HasSuffix(a2, "@two.example") {
		t.Errorf("second hop: %q", a2)
	}
	if !strings.HasPrefix(a3, "SRS1=") || !strings.Contains(a3, "=one.example==") || !strings.HasSuffix(a3, "@three.example") {
		t.Errorf("third hop: %q", a3)
	}
	if len(a3)-len("three.example") != len(a2)-len("two.example") {
		t.Errorf("the chain grew: %q → %q", a2, a3)
	}

	// the bounce: the third host sends it straight to the first
	back, err := h3.Reverse(a3)
	if err != nil || back != a1 {
		t.Fatalf("third host reverses %q to %q, %v; want %q", a3, back, err, a1)
	}
	if back, err := h2.Reverse(a2); err != nil || back != a1 {
		t.Errorf("second host reverses %q to %q, %v; want %q", a2, back, err, a1)
	}
	orig, err := h1.Reverse(back)
	if err != nil || orig != "a@orig.example" {
		t.Errorf("first host reverses %q to %q, %v", back, orig, err)
	}

	// one host's SRS1 is forged for another
	if _, err := h2.Reverse(a3); !errors.Is(err, ErrForged) {
		t.Errorf("second host reverses the third's address: %v", err)
	}
	// and so is an SRS1 whose inner part was changed
	tampered := strings.Replace(a3, "orig.example", "evil.example", 1)
	if _, err := h3.Reverse(tampered); !errors.Is(err, ErrForged) {
		t.Errorf("tampered SRS1 %q: %v", tampered, err)
	}
}

func TestForged(t *testing.T) {
	r := newRewriter(t, postsrsdTime, "0123456789abcdef0123")
	fwd, _ := r.Forward("a@orig.example", "ours.example")
	hash := fwd[5:9]
	flip := func(s string) string {
		b := []byte(s)
		if b[0] == 'A' || b[0] == 'a' {
			b[0] = 'B'
		} else {
			b[0] = 'A'
		}
		return string(b)
	}
	for _, forged := range []string{
		"SRS0=" + flip(hash) + fwd[9:],
		strings.Replace(fwd, "orig.example", "evil.example", 1),
		strings.Replace(fwd, "=a@", "=b@", 1),
		strings.Replace(fwd, "=2W=", "=2X=", 1),
		"SRS0=" + hash + "x" + fwd[9:], // hash too long
		"SRS0=" + hash[:3] + fwd[9:],   // hash too short
	} {
		if got, err := r.Reverse(forged); !errors.Is(err, ErrForged) {
			t.Errorf("Reverse(%q) = %q, %v; want ErrForged", forged, got, err)
		}
	}
	other := newRewriter(t, postsrsdTime, "another key of the same length")
	if _, err := other.Reverse(fwd); !errors.Is(err, ErrForged) {
		t.Errorf("reverse with another key: %v", err)
	}
}

func TestExpired(t *testing.T) {
	start := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	now := start
	r, err := New([]byte("0123456789abcdef0123"))
	if err != nil {
		t.Fatal(err)
	}
	r.Now = func() time.Time { return now }
	fwd, _ := r.Forward("a@orig.example", "ours.example")
	srs1, _ := r.Forward("SRS0=hash=T1=orig.example=a@prev.example", "ours.example")
	// the inner timestamp of an SRS1 address is checked too
	inner := timestamp(start)
	srs1Std, _ := r.Forward("SRS0=hash="+inner+"=orig.example=a@prev.example", "ours.example")

	day := 24 * time.Hour
	for _, tc := range []struct {
		maxAge time.Duration
		offset time.Duration
		err    error
	}{
		{0, 0, nil},
		{0, 4 * day, nil}, // DefaultMaxAge, four days
		{0, 5 * day, ErrExpired},
		{0, -day, nil}, // a clock a day ahead of ours
		{0, -2 * day, ErrExpired},
		{21 * day, 21 * day, nil},
		{21 * day, 22 * day, ErrExpired},
		{12 * time.Hour, day, nil}, // less than a day counts as one
		{12 * time.Hour, 2 * day, ErrExpired},
		{0, 300 * day, ErrExpired},
		{0, 1024 * day, nil}, // the timestamp wraps
	} {
		now = start.Add(tc.offset)
		r.MaxAge = tc.maxAge
		_, err := r.Reverse(fwd)
		if !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("max age %v, %v later: %v; want %v", tc.maxAge, tc.offset, err, tc.err)
		}
		_, err = r.Reverse(srs1Std)
		if !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("SRS1, max age %v, %v later: %v; want %v", tc.maxAge, tc.offset, err, tc.err)
		}
		// an opaque SRS0 inside has no timestamp we can read
		if _, err := r.Reverse(srs1); err != nil {
			t.Errorf("opaque SRS1, %v later: %v", tc.offset, err)
		}
	}
}

func TestKeyRotation(t *testing.T) {
	oldKey, newKey := "the old key, still accepted", "the new key, used to sign"
	before := newRewriter(t, postsrsdTime, oldKey)
	after := newRewriter(t, postsrsdTime, newKey, oldKey)
	onlyNew := newRewriter(t, postsrsdTime, newKey)

	signedOld, _ := before.Forward("a@orig.example", "ours.example")
	signedNew, _ := after.Forward("a@orig.example", "ours.example")
	if signedOld == signedNew {
		t.Fatalf("both keys sign %q", signedOld)
	}
	if want, _ := onlyNew.Forward("a@orig.example", "ours.example"); signedNew != want {
		t.Errorf("signed with %q, want the current key's %q", signedNew, want)
	}
	for _, addr := range []string{signedOld, signedNew} {
		if got, err := after.Reverse(addr); err != nil || got != "a@orig.example" {
			t.Errorf("Reverse(%q) = %q, %v", addr, got, err)
		}
	}
	if _, err := onlyNew.Reverse(signedOld); !errors.Is(err, ErrForged) {
		t.Errorf("retired key still accepted: %v", err)
	}
	if _, err := before.Reverse(signedNew); !errors.Is(err, ErrForged) {
		t.Errorf("new key accepted before rotation: %v", err)
	}
}

func TestMalformed(t *testing.T) {
	r := newRewriter(t, postsrsdTime, "0123456789abcdef0123")
	for _, tc := range []struct {
		addr string
		err  error
	}{
		{"", ErrNotSRS},
		{"@", ErrNotSRS},
		{"SRS0", ErrNotSRS},
		{"SRS0@ours.example", ErrNotSRS},
		{"SRS2=abcd=2W=orig.example=a@ours.example", ErrNotSRS},
		{"SRS0=", ErrMalformed},
		{"SRS0=====@ours.example", ErrMalformed},
		{"SRS0=abcd=2W==a@ours.example", ErrMalformed},
		{"SRS0=abcd=2W=orig.example=@ours.example", ErrMalformed},
		{"SRS0=abcd=2!=orig.example=a@ours.example", ErrMalformed},
		{"SRS0=abcd=2WW=orig.example=a@ours.example", ErrMalformed},
		{"SRS0=abcd=2W=orig example=a@ours.example", ErrMalformed},
		{"SRS0=abcd=2W=orig@example=a@ours.example", ErrMalformed},
		{"SRS0=abcd=2W=orig.example=a\r\nRCPT@ours.example", ErrMalformed},
		{"SRS0=abcd=2W=orig.example=a<b>@ours.example", ErrMalformed},
		{"SRS0=abcd=2W=orig.example=\"a b\"@ours.example", ErrMalformed},
		{"SRS0=abcd=2W=[192.0.2.1]=a@ours.example", ErrMalformed},
		{"SRS1=", ErrMalformed},
		{"SRS1=abcd@ours.example", ErrMalformed},
		{"SRS1=abcd=@ours.example", ErrMalformed},
		{"SRS1=abcd=fwd.example@ours.example", ErrMalformed},
		{"SRS1=abcd=fwd.example=@ours.example", ErrMalformed},
		{"SRS1=abcd=fwd.example==@ours.example", ErrMalformed},
		{"SRS1=abcd=fwd.example=x@ours.example", ErrMalformed},
		{"SRS1==fwd.example==x@ours.example", ErrMalformed},
		{"SRS1=abcd==x@ours.example", ErrMalformed},
		{"SRS1=abcd=fwd.example==hhhh=2W=orig.example=a@ours.example", ErrForged},
		{"SRS0+abcd=2W=orig.example=a@ours.example", ErrForged},
		{"srs0-abcd=2W=orig.example=a@ours.example", ErrForged},
		{"SRS0=abcd=2W=orig.example=a", ErrForged},
	} {
		got, err := r.Reverse(tc.addr)
		if !errors.Is(err, tc.err) || got != "" {
			t.Errorf("Reverse(%q) = %q, %v; want %v", tc.addr, got, err, tc.err)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "srs: ") {
			t.Errorf("error %q does not name the package", err)
		}
	}
}

func TestSeparators(t *testing.T) {
	r := newRewriter(t, postsrsdTime, "0123456789abcdef0123")
	// another forwarder's SRS0 written with '+' keeps its separator
	fwd, ok := r.Forward("SRS0+xxxx=2W=orig.example=a@prev.example", "ours.example")
	if !ok || !strings.Contains(fwd, "=prev.example=+xxxx=2W=") {
		t.Fatalf("Forward: %q, %v", fwd, ok)
	}
	if back, err := r.Reverse(fwd); err != nil || back != "SRS0+xxxx=2W=orig.example=a@prev.example" {
		t.Errorf("Reverse(%q) = %q, %v", fwd, back, err)
	}
	// an SRS1 that is not one is wrapped as any other sender
	for _, odd := range []string{"SRS1=xxxx@prev.example", "SRS1=xxxx=fwd.example=nosep@prev.example"} {
		fwd, ok := r.Forward(odd, "ours.example")
		if !ok || !strings.HasPrefix(fwd, "SRS0=") {
			t.Errorf("Forward(%q) = %q, %v", odd, fwd, ok)
			continue
		}
		if back, err := r.Reverse(fwd); err != nil || back != odd {
			t.Errorf("Reverse(%q) = %q, %v; want %q", fwd, back, err, odd)
		}
	}
}

func TestKeys(t *testing.T) {
	if _, err := New(nil); err == nil {
		t.Error("New accepts an empty key")
	}
	if _, err := New([]byte("good key"), []byte{}); err == nil {
		t.Error("New accepts an empty old key")
	}
	key, old, err := ParseKeys([]byte("# keys\n  current key \n\nold key 1\r\nold key 2"))
	if err != nil || string(key) != "current key" || len(old) != 2 || string(old[0]) != "old key 1" || string(old[1]) != "old key 2" {
		t.Errorf("ParseKeys: %q %q %v", key, old, err)
	}
	if _, _, err := ParseKeys([]byte("\n# nothing\n")); err == nil {
		t.Error("ParseKeys accepts a file without a key")
	}
	// the rewriter keeps its own copy of the key
	k := []byte("a key that will be overwritten")
	r, _ := New(k)
	r.Now = func() time.Time { return postsrsdTime }
	a, _ := r.Forward("a@orig.example", "ours.example")
	copy(k, "XXXXXXXXXXXX")
	if _, err := r.Reverse(a); err != nil {
		t.Errorf("the key changed under the rewriter: %v", err)
	}
}

func TestIsSRS(t *testing.T) {
	for s, want := range map[string]bool{
		"SRS0=h=TT=d=u@x": true, "srs1=h=d==u@x": true, "SRS0+x": true,
		"SRS0": false, "SRS0x": false, "user@x": false, "": false,
	} {
		if IsSRS(s) != want {
			t.Errorf("IsSRS(%q) = %v", s, !want)
		}
	}
}

// FuzzReverse feeds arbitrary addresses to Reverse: it must not panic,
// and what it returns must be an address a caller can route.
func FuzzReverse(f *testing.F) {
	r := newRewriter(f, postsrsdTime, "tops3cr3t")
	for _, s := range []string{
		"SRS0=XjO9=2V=otherdomain.com=test@example.com",
		"SRS1=JIBX=thirddomain.com==opaque+string@example.com",
		"SRS0=vmyz=2W=otherdomain.com=test@example.com",
		"srs0=xjo9=2v=otherdomain.com=test",
		"SRS1=abcd=fwd.example==hhhh=2W=orig.example=a@ours.example",
		"SRS0=@", "SRS1==", "SRS0====", "SRS1=a=b=c=d=e=f@g", "SRS0=\x00=\xff=é=a@b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		got, err := r.Reverse(addr)
		if err != nil {
			if got != "" {
				t.Errorf("Reverse(%q) = %q with error %v", addr, got, err)
			}
			if !errors.Is(err, ErrNotSRS) && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrForged) && !errors.Is(err, ErrExpired) {
				t.Errorf("Reverse(%q): unclassified error %v", addr, err)
			}
			return
		}
		i := strings.LastIndexByte(got, '@')
		if i <= 0 || !validUser(got[:i]) || !validHost(got[i+1:]) {
			t.Errorf("Reverse(%q) = %q, not an address", addr, got)
		}
	})
}

// FuzzRoundTrip checks that whatever Forward rewrites, Reverse gives
// back.
func FuzzRoundTrip(f *testing.F) {
	r := newRewriter(f, postsrsdTime, "0123456789abcdef0123")
	f.Add("a@orig.example")
	f.Add("SRS0=opaque@orig.example")
	f.Add("SRS1=xxxx=one.example==hhhh=2W=orig.example=a@two.example")
	f.Fuzz(func(t *testing.T, sender string) {
		fwd, ok := r.Forward(sender, "ours.example")
		if !ok {
			if fwd != sender {
				t.Errorf("Forward(%q) = %q, not rewritten but changed", sender, fwd)
			}
			return
		}
		back, err := r.Reverse(fwd)
		if IsSRS(sender) && errors.Is(err, ErrExpired) {
			return // the timestamp another forwarder wrote is old
		}
		if err != nil {
			t.Fatalf("Reverse(Forward(%q) = %q): %v", sender, fwd, err)
		}
		if strings.HasPrefix(strings.ToUpper(sender), "SRS") && strings.HasPrefix(back, "SRS0") {
			return // reversed to the previous forwarder
		}
		if back != strings.TrimSuffix(sender, ".") {
			t.Errorf("Reverse(Forward(%q) = %q) = %q", sender, fwd, back)
		}
	})
}
