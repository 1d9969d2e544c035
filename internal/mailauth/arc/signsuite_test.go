package arc

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

// tagSet is a header field value as the suite's runner compares it
// (testarc.py sign_test): all whitespace removed, split at ";".
func tagSet(v string) map[string]bool {
	set := map[string]bool{}
	for _, t := range strings.Split(stripFWS(v), ";") {
		if t != "" {
			set[t] = true
		}
	}
	return set
}

// arResults returns the results of the message's Authentication-Results
// fields of authServID, merged into one payload as RFC 8617 §4.1.1 asks
// of the AAR ("the combined authres-payload with all of the
// authentication results from within the participating ADMD").
func arResults(t *testing.T, msg, authServID string) string {
	t.Helper()
	fields, _, err := readHeader(newReader(msg), DefaultMaxHeaderBytes)
	if err != nil {
		t.Fatal(err)
	}
	var results []string
	for _, f := range fields {
		if f.is("Authentication-Results") {
			if id, rest, ok := strings.Cut(f.value(), ";"); ok && trimFWS(id) == authServID {
				results = append(results, strings.TrimRight(trimFWS(rest), ";"))
			}
		}
	}
	if results == nil {
		t.Fatalf("no Authentication-Results of %s", authServID)
	}
	return strings.Join(results, ";\r\n\t")
}

// suiteField rebuilds a header field from a value of the suite, whose
// continuation lines lost their indentation in the YAML.
func suiteField(name, value string) string {
	lines := strings.Split(strings.TrimRight(value, " \n"), "\n")
	return name + ": " + strings.Join(lines, "\r\n ") + "\r\n"
}

// TestSignSuite reproduces the signing cases of the ValiMail suite: the
// suite fixes the key, t= and the signed fields, and RSA PKCS#1 v1.5
// signatures are deterministic, so with the tags in the suite signer's
// (alphabetical) order our b= values must be the suite's, byte for byte.
// Each case is also checked by validating the sealed message.
func TestSignSuite(t *testing.T) {
	scenarios := loadSuite(t, "testdata/arc-draft-sign-tests.yml")
	var passed, failed, asExpected, asEmbedded, asValidated, suiteValid int
	// the b= of every ARC-Seal in the suite's messages
	embedded := map[string]bool{}
	for _, sc := range scenarios {
		for _, c := range sc.tests {
			fields, _, err := readHeader(newReader(c.fields["message"]), DefaultMaxHeaderBytes)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range fields {
				if tags, err := parseTagList(f.value()); f.is(nameAS) && err == nil {
					embedded[stripFWS(tagValue(tags, "b"))] = true
				}
			}
		}
	}
	for _, sc := range scenarios {
		block, _ := pem.Decode([]byte(sc.privateKey))
		if block == nil {
			t.Fatal("no PEM key in the signing scenario")
		}
		key, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		v := &Validator{Resolver: suiteResolver(t, sc.txt)}
		for _, c := range sc.tests {
			ok := t.Run(c.name, func(t *testing.T) {
				msg := c.fields["message"]
				ts, err := strconv.ParseInt(c.fields["t"], 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				chain, err := v.Validate(context.Background(), strings.NewReader(msg))
				if err != nil {
					t.Fatal(err)
				}
				s := &Sealer{
					Domain: sc.domain, Selector: sc.sel, Signer: key,
					Headers:    strings.Split(c.fields["sig-headers"], ":"),
					SealFailed: true,
					Now:        func() time.Time { return time.Unix(ts, 0) },
					sortTags:   true,
				}
				set, err := s.Seal(strings.NewReader(msg), c.fields["srv-id"], arResults(t, msg, c.fields["srv-id"]), chain)
				if trimFWS(c.fields["AS"]+c.fields["AMS"]+c.fields["AAR"]) == "" {
					// no set expected: the latest seal says cv=fail
					// (RFC 8617 §5.1 step 2)
					if !errors.Is(err, ErrChainFailed) {
						t.Errorf("Seal: %v, want ErrChainFailed", err)
					}
					return
				}
				if err != nil {
					t.Fatalf("Seal (chain %s: %s): %v", chain.Status, chain.Reason, err)
				}
				// AAR and AMS: the suite's, tag for tag, b= and bh= included
				for name, got := range map[string]string{"AAR": set.AAR, "AMS": set.AMS, "AS": set.AS} {
					_, value, _ := strings.Cut(got, ":")
					ours, want := tagSet(value), tagSet(c.fields[name])
					for tg := range ours {
						if name == "AS" && strings.HasPrefix(tg, "b=") {
							continue // below
						}
						if !want[tg] {
							t.Errorf("%s: our tag %q is not the suite's", name, tg)
						}
					}
					if name != "AS" && len(ours) != len(want) {
						t.Errorf("%s: %d tags, the suite has %d", name, len(ours), len(want))
					}
				}
				// AS: its signature covers the AMS with its b= value, where
				// relaxed canonicalization keeps one space for each fold, so
				// it depends on how the AMS was folded: seal the suite's own
				// AAR and AMS instead. The suite's expected AS b= values do
				// not verify (neither here nor with dkimpy: a draft-era
				// artefact), but the seals the suite embeds in its messages
				// of the next instance do, and those are what we must get.
				var sealed []string
				if chain.Status == StatusPass {
					fields, _, err := readHeader(newReader(msg), DefaultMaxHeaderBytes)
					if err != nil {
						t.Fatal(err)
					}
					for _, st := range parseChain(fields).sets {
						sealed = append(sealed, fields[st.aar].raw, fields[st.ams].raw, fields[st.as].raw)
					}
				}
				sealed = append(sealed, suiteField(nameAAR, c.fields["AAR"]), suiteField(nameAMS, c.fields["AMS"]))
				digest := sealHash(sealed, suiteField(nameAS, c.fields["AS"]))
				b, err := rsa.SignPKCS1v15(nil, key, crypto.SHA256, digest)
				if err != nil {
					t.Fatal(err)
				}
				switch b64 := base64.StdEncoding.EncodeToString(b); {
				case tagSet(c.fields["AS"])["b="+b64]:
					asExpected++
				case embedded[b64]:
					asEmbedded++
				default:
					// no seal in the suite to compare with: the seal must
					// validate, unless it says cv=fail and so ends the chain
					asValidated++
					as := strings.Replace(removeB(suiteField(nameAS, c.fields["AS"])), " b=", " b="+b64, 1)
					ourSet := as + suiteField(nameAMS, c.fields["AMS"]) + suiteField(nameAAR, c.fields["AAR"])
					res, err := v.Validate(context.Background(), strings.NewReader(ourSet+msg))
					if err != nil {
						t.Fatal(err)
					}
					if chain.Status != StatusFail && res.Status != StatusPass {
						t.Errorf("AS over the suite's AAR and AMS: %s (%s)", res.Status, res.Reason)
					}
				}
				suiteSet := suiteField(nameAS, c.fields["AS"]) + suiteField(nameAMS, c.fields["AMS"]) + suiteField(nameAAR, c.fields["AAR"])
				if res, err := v.Validate(context.Background(), strings.NewReader(suiteSet+msg)); err == nil && res.Status == StatusPass {
					suiteValid++
				}
				// the sealed message validates; a set sealed with cv=fail
				// ends the chain (RFC 8617 §5.2 step 2)
				res, err := v.Validate(context.Background(), strings.NewReader(set.String()+msg))
				if err != nil {
					t.Fatal(err)
				}
				want := StatusPass
				if chain.Status == StatusFail {
					want = StatusFail
				}
				if res.Status != want || res.Instance != set.Instance {
					t.Errorf("sealed message: %s i=%d (%s), want %s i=%d", res.Status, res.Instance, res.Reason, want, set.Instance)
				}
				// by default we refuse to seal a failed chain
				if chain.Status == StatusFail {
					s.SealFailed = false
					if _, err := s.Seal(strings.NewReader(msg), c.fields["srv-id"], "none", chain); !errors.Is(err, ErrChainFailed) {
						t.Errorf("sealing a failed chain without SealFailed: %v", err)
					}
				}
			})
			if ok {
				passed++
			} else {
				failed++
			}
		}
	}
	t.Logf("ARC signing suite: %d passed, %d failed, 0 excluded; AAR and AMS equal to the suite's in every case sealed; "+
		"AS b= equal to the suite's expected value in %d, to the seal the suite embeds in its next-instance message in %d, "+
		"checked by validation only in %d (i2_base, whose next instance the suite lacks, and the cv=fail seals); the suite's own expected sets validate in %d cases",
		passed, failed, asExpected, asEmbedded, asValidated, suiteValid)
}
