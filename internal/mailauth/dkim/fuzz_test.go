package dkim

import (
	"bufio"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/authres"
)

// FuzzParseTags: the tag-list parser (RFC 6376 §3.2) never panics, and
// what it accepts has valid names and reads back the same once written
// out again.
func FuzzParseTags(f *testing.F) {
	for _, s := range []string{
		"v=1; a=rsa-sha256; d=example.net; s=brisbane;\r\n c=simple; q=dns/txt; i=@eng.example.net;\r\n h=from:to; bh=MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI=;\r\n b=dzdVyOfAKCdLXdJOc9G2q8LoXSlEniSb av+yuU4zGeeruD00lszZVoG4ZHRNiYzR",
		"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
		"a=;b = c ;", ";", "", "v=1;;", "1a=b", "a_1=x y\tz", "d=\xc3\xa9.example", "a=b\x00", "v=1; v=1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tags, err := parseTags(s)
		if err != nil {
			return
		}
		var b strings.Builder
		for _, k := range slices.Sorted(func(yield func(string) bool) {
			for k := range tags {
				if !yield(k) {
					return
				}
			}
		}) {
			if !validTagName(k) {
				t.Fatalf("accepted tag name %q", k)
			}
			if v := tags[k]; v != trimWSP(v) || strings.Contains(v, ";") {
				t.Fatalf("value %q of %s not trimmed or has ';'", v, k)
			}
			b.WriteString(k + "=" + tags[k] + ";")
		}
		again, err := parseTags(b.String())
		if len(tags) > 0 && (err != nil || len(again) != len(tags)) {
			t.Fatalf("%q reads as %v, written out as %q reads as %v, %v", s, tags, b.String(), again, err)
		}
		for k, v := range tags {
			if again[k] != v {
				t.Fatalf("%s=%q became %q", k, v, again[k])
			}
		}
	})
}

// FuzzReadHeader: the header reader accounts for every byte: the fields
// are the input up to the empty line, and what follows them is the
// empty line or the line ends it adds to a message that ends early.
func FuzzReadHeader(f *testing.F) {
	for _, s := range []string{
		testMessage, "From: a\r\n\r\n", "From: a\n\nbody", " leading: continuation\r\nFrom: a\r\n\r\n",
		"From: a", "From: a\r\n", "", "\r\n", "\n", "From: a\r\r\n\r\n", "X:\r\n \r\n\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := readHeader(bufio.NewReaderSize(strings.NewReader(s), 16))
		if err != nil {
			if len(s) <= MaxHeaderBytes {
				t.Fatalf("error %v on %d bytes", err, len(s))
			}
			return
		}
		joined := strings.Join(h.fields, "")
		raw := string(h.raw)
		if !strings.HasPrefix(raw, joined) || !strings.HasPrefix(s, joined) {
			t.Fatalf("fields %q are not the start of %q", h.fields, raw)
		}
		switch tail := raw[len(joined):]; tail {
		case "\r\n", "\n":
			if !strings.HasPrefix(s, raw) && s != joined {
				t.Fatalf("header %q is not the start of the input %q", raw, s)
			}
		case "\r\n\r\n":
			if s != joined || strings.HasSuffix(s, "\n") {
				t.Fatalf("line ends added to %q, which ends its header", s)
			}
		default:
			t.Fatalf("header %q ends with %q after its fields", raw, tail)
		}
		for i, fl := range h.fields {
			if i > 0 && (fl[0] == ' ' || fl[0] == '\t') {
				t.Fatalf("field %d %q is a continuation line", i, fl)
			}
		}
	})
}

// FuzzLoadKey: key loading never panics, and what it accepts is a key
// DKIM can sign with and publish.
func FuzzLoadKey(f *testing.F) {
	for _, name := range []string{"rfc6376.pem", "rfc8463-ed25519.pem", "rsa512.pem", "ed25519.pem"} {
		f.Add(readTestdata(f, name))
	}
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END RSA PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := LoadKey(b)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "dkim: ") {
				t.Fatalf("error without the package name: %v", err)
			}
			return
		}
		if err := checkKey(k); err != nil {
			t.Fatalf("loaded a key it refuses: %v", err)
		}
		if PublicRecord(k) == "" {
			t.Fatalf("no record for %T", k)
		}
	})
}

// FuzzVerify: verification never panics or fails on a message in
// memory, gives one result a signature, each with a status of RFC 8601,
// and its Authentication-Results entry stays on one line.
func FuzzVerify(f *testing.F) {
	rsaS, edS, res := testSigners(f)
	for k, v := range rfcDNS().txt {
		res.txt[k] = v
	}
	f.Add(string(readTestdata(f, "rfc6376-a2.eml")))
	f.Add(string(readTestdata(f, "rfc8463-a3.eml")))
	f.Add(signedWith(f, testMessage, rsaS, edS))
	f.Add(signedWith(f, "From: a@example.org\r\nSubject: x\r\n", edS))
	f.Add("DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=rsa; h=from; bh=; b=\r\nFrom: a\r\n\r\n")
	f.Add("DKIM-Signature: ;;\r\nDKIM-Signature: v=1; l=5\r\ndkim-signature : v=1\r\n\r\n")
	valid := map[Status]bool{StatusPass: true, StatusFail: true, StatusPolicy: true, StatusNeutral: true, StatusTempError: true, StatusPermError: true}
	f.Fuzz(func(t *testing.T, msg string) {
		results, err := Verify(context.Background(), strings.NewReader(msg), res)
		if err != nil {
			if len(msg) <= MaxHeaderBytes {
				t.Fatalf("error on a message in memory: %v", err)
			}
			return
		}
		h, _ := readHeader(bufio.NewReader(strings.NewReader(msg)))
		if n := h.count("DKIM-Signature"); len(results) != n {
			t.Fatalf("%d results for %d signatures", len(results), n)
		}
		for _, r := range results {
			if !valid[r.Status] || (r.Status == StatusPass) != (r.Reason == "") {
				t.Fatalf("result %+v", r)
			}
			if ar := authres.Format("mx.example.net", []authres.Result{r.AuthRes()}); strings.ContainsAny(ar, "\r\n\\") {
				t.Fatalf("entry %q", ar)
			}
		}
	})
}
