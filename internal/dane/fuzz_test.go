package dane

import (
	"crypto/x509"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// FuzzVerify checks records with random fields and data against a
// fixed chain. Verify must not panic, must fail with an *Error whose
// kind and message are set, and must only succeed on a record of a
// usable kind.
func FuzzVerify(f *testing.F) {
	p := newPKI(f)
	chain := []*x509.Certificate{p.leaf, p.inter.cert, p.ca.cert}
	certs := []*x509.Certificate{p.leaf, p.inter.cert, p.ca.cert, p.other}
	for _, c := range certs {
		for usage := range uint8(4) {
			for sel := range uint8(2) {
				for mt := range uint8(3) {
					data, err := Association(c, sel, mt)
					if err != nil {
						f.Fatal(err)
					}
					f.Add(usage, sel, mt, data, false, "mx.example.org")
				}
			}
		}
	}
	f.Add(uint8(3), uint8(1), uint8(1), []byte("not hex"), true, "")
	f.Add(uint8(2), uint8(0), uint8(0), p.ca.cert.Raw[:len(p.ca.cert.Raw)/2], false, "*.example.org")
	f.Add(uint8(2), uint8(1), uint8(0), []byte{0x30, 0x03, 0x02, 0x01, 0x00}, false, "mx.example.org.")
	f.Add(uint8(255), uint8(255), uint8(255), []byte{}, false, "*")

	f.Fuzz(func(t *testing.T, usage, selector, mtype uint8, data []byte, rawData bool, name string) {
		rr := raw(usage, selector, mtype, hex.EncodeToString(data))
		if rawData {
			rr.Certificate = string(data)
		}
		// A fixed usable record that never matches rides along, so that
		// the fuzzed one is also judged as one of several.
		other := tlsa(t, 3, 1, 1, p.other)
		names := strings.Split(name, ",")
		for _, records := range [][]*dns.TLSA{{rr}, {other, rr}} {
			err := Verify(records, chain, names, testNow())
			if err == nil {
				if usage != UsageDANETA && usage != UsageDANEEE {
					t.Fatalf("Verify accepted %v", rr)
				}
				continue
			}
			var de *Error
			if !errors.As(err, &de) {
				t.Fatalf("Verify returned %T %v, want *Error", err, err)
			}
			if de.Kind < KindNoUsable || de.Kind > KindExpired || de.Msg == "" {
				t.Fatalf("Verify returned %#v", de)
			}
			if len(records) > 1 && de.Kind == KindNoUsable {
				t.Fatalf("Verify = %v with a usable record in the set", err)
			}
		}
	})
}
