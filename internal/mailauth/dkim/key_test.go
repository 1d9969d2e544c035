package dkim

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
)

// TestLoadKeyRFC: the private keys of the RFC examples load, and the
// records PublicRecord makes of them carry the very keys the RFCs
// publish.
func TestLoadKeyRFC(t *testing.T) {
	for _, tc := range []struct {
		file, record, alg string
	}{
		{"rfc6376.pem", rfc6376Record, "rsa-sha256"}, // PKCS#1
		{"rfc8463-rsa.pem", rfc8463RSARecord, "rsa-sha256"},
		{"rfc8463-ed25519.pem", rfc8463EdRecord, "ed25519-sha256"}, // PKCS#8
	} {
		k := loadTestKey(t, tc.file)
		got := PublicRecord(k)
		if p := tc.record[strings.Index(tc.record, "p="):]; !strings.HasSuffix(got, p) {
			t.Errorf("%s: record %q\nwant the key %q", tc.file, got, p)
		}
		if !strings.HasPrefix(got, "v=DKIM1; ") { // §3.6.1: v= first
			t.Errorf("%s: record %q does not start with v=DKIM1", tc.file, got)
		}
		if a := algorithm(k); a != tc.alg {
			t.Errorf("%s: algorithm %s, want %s", tc.file, a, tc.alg)
		}
	}
	if got := PublicRecord(loadTestKey(t, "rfc8463-ed25519.pem")); got != rfc8463EdRecord {
		t.Errorf("ed25519 record %q, want %q", got, rfc8463EdRecord)
	}
}

func TestLoadKey(t *testing.T) {
	rsaKey := loadTestKey(t, "rsa2048.pem") // PKCS#8
	if k, ok := rsaKey.(*rsa.PrivateKey); !ok || k.N.BitLen() != 2048 {
		t.Errorf("rsa2048.pem: %T", rsaKey)
	}
	if r := PublicRecord(rsaKey); !strings.HasPrefix(r, "v=DKIM1; k=rsa; p=MIIBIjAN") {
		t.Errorf("rsa record %q", r)
	}
	edKey := loadTestKey(t, "ed25519.pem")
	if _, ok := edKey.(ed25519.PrivateKey); !ok {
		t.Errorf("ed25519.pem: %T", edKey)
	}

	// a key after other PEM blocks, as some tools write them
	pemText := "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n" + string(readTestdata(t, "ed25519.pem"))
	if _, err := LoadKey([]byte(pemText)); err != nil {
		t.Errorf("key after parameters: %v", err)
	}

	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalECPrivateKey(ec)
	ec8, _ := x509.MarshalPKCS8PrivateKey(ec)
	encrypted := "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00000000000000000000000000000000\n\nAAAA\n-----END RSA PRIVATE KEY-----\n"
	for _, tc := range []struct {
		name string
		pem  []byte
		is   error  // errors.Is, if set
		msg  string // in the message
	}{
		{"512-bit PKCS#1", readTestdata(t, "rsa512.pem"), ErrKeyTooSmall, "512 bits"},
		{"512-bit PKCS#8", readTestdata(t, "rsa512-pkcs8.pem"), ErrKeyTooSmall, "512 bits"},
		{"EC key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER}), ErrUnsupportedKey, "RSA or Ed25519"},
		{"EC key in PKCS#8", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ec8}), ErrUnsupportedKey, "ecdsa"},
		{"encrypted", []byte(encrypted), nil, "unencrypted"},
		{"encrypted PKCS#8", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}), nil, "unencrypted"},
		{"empty", nil, nil, "no PEM private key"},
		{"public key only", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1}}), nil, "no PEM private key"},
		{"garbage DER", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("junk")}), nil, "parsing PRIVATE KEY"},
	} {
		k, err := LoadKey(tc.pem)
		if err == nil {
			t.Errorf("%s: loaded %T", tc.name, k)
			continue
		}
		if tc.is != nil && !errors.Is(err, tc.is) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.is)
		}
		if !strings.Contains(err.Error(), tc.msg) || !strings.HasPrefix(err.Error(), "dkim: ") {
			t.Errorf("%s: %q, want it to say %q", tc.name, err, tc.msg)
		}
	}
	if PublicRecord(ec) != "" || PublicRecord(nil) != "" {
		t.Error("PublicRecord of an unsupported key is not empty")
	}
}
