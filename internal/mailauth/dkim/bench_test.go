package dkim

import (
	"context"
	"strings"
	"testing"
)

// BenchmarkSign signs a 2 KB and a 100 KB message with each algorithm,
// and with both in one pass as a server signing with two keys would.
func BenchmarkSign(b *testing.B) {
	rsaS, edS, _ := testSigners(b)
	for _, size := range []struct {
		name string
		n    int
	}{{"2KB", 2 << 10}, {"100KB", 100 << 10}} {
		msg := testMessage + bodyOf(size.n-len(testMessage))
		for _, alg := range []struct {
			name    string
			signers []*Signer
		}{
			{"rsa-sha256", []*Signer{rsaS}},
			{"ed25519-sha256", []*Signer{edS}},
			{"both", []*Signer{rsaS, edS}},
		} {
			b.Run(alg.name+"/"+size.name, func(b *testing.B) {
				b.SetBytes(int64(len(msg)))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := SignAll(strings.NewReader(msg), alg.signers...); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkVerify verifies a 100 KB message with both signatures, the
// keys coming from memory.
func BenchmarkVerify(b *testing.B) {
	rsaS, edS, res := testSigners(b)
	msg := signedWith(b, testMessage+bodyOf(100<<10), rsaS, edS)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		results, err := Verify(context.Background(), strings.NewReader(msg), res)
		if err != nil || len(results) != 2 || results[0].Status != StatusPass || results[1].Status != StatusPass {
			b.Fatal(results, err)
		}
	}
}
