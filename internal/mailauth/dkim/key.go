package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
)

// minRSABits is the smallest RSA key a signer may use and a verifier
// accept (RFC 8301 §3.2; 2048 bits and more are recommended).
const minRSABits = 1024

// LoadKey parses a PEM private key for signing: RSA as PKCS#1 ("RSA
// PRIVATE KEY") or PKCS#8 ("PRIVATE KEY"), of at least 1024 bits (RFC
// 8301 §3.2), or Ed25519 as PKCS#8 (RFC 8463 §3, RFC 8410 §7). Blocks
// of other types before the key, such as parameters, are skipped.
// Encrypted keys are refused: the daemon has nobody to ask for a
// passphrase.
func LoadKey(pemBytes []byte) (crypto.Signer, error) {
	rest := pemBytes
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("dkim: no PEM private key found")
		}
		if _, enc := block.Headers["Proc-Type"]; enc {
			return nil, fmt.Errorf("dkim: encrypted PEM block %q: keys must be stored unencrypted", block.Type)
		}
		var (
			key any
			err error
		)
		switch block.Type {
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("dkim: encrypted PKCS#8 key: keys must be stored unencrypted")
		case "EC PRIVATE KEY", "OPENSSH PRIVATE KEY", "DSA PRIVATE KEY":
			return nil, fmt.Errorf("%w: PEM %q (DKIM signs with RSA or Ed25519 only)", ErrUnsupportedKey, block.Type)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("dkim: parsing %s: %w", block.Type, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%w: %T", ErrUnsupportedKey, key)
		}
		if err := checkKey(signer); err != nil {
			return nil, err
		}
		return signer, nil
	}
}

// checkKey refuses keys DKIM cannot or must not sign with.
func checkKey(k crypto.Signer) error {
	if k == nil {
		return errors.New("dkim: no key")
	}
	switch pub := k.Public().(type) {
	case *rsa.PublicKey:
		if bits := pub.N.BitLen(); bits < minRSABits {
			return fmt.Errorf("%w: the key has %d bits (RFC 8301 §3.2)", ErrKeyTooSmall, bits)
		}
		return nil
	case ed25519.PublicKey:
		return nil
	default:
		return fmt.Errorf("%w: %T (DKIM signs with RSA or Ed25519 only)", ErrUnsupportedKey, pub)
	}
}

// algorithm returns the a= value for the key (RFC 6376 §3.3, RFC 8463
// §3): sha256 always, as rsa-sha1 must not be used (RFC 8301 §3.1).
func algorithm(k crypto.Signer) string {
	if _, ok := k.Public().(ed25519.PublicKey); ok {
		return "ed25519-sha256"
	}
	return "rsa-sha256"
}

// PublicRecord returns the DNS TXT record that publishes the public
// half of signer at <selector>._domainkey.<domain> (RFC 6376 §3.6.1):
// "v=DKIM1; k=rsa; p=<SubjectPublicKeyInfo, base64>" for RSA, or
// "v=DKIM1; k=ed25519; p=<the 32-octet key, base64>" for Ed25519 (RFC
// 8463 §4.2). The record of a 2048-bit RSA key is longer than the 255
// octets of one DNS character-string, so the zone splits it into
// several strings of one TXT record, which readers join again (RFC
// 6376 §3.6.2.2). It returns "" for a key of another type.
func PublicRecord(signer crypto.Signer) string {
	if signer == nil {
		return ""
	}
	switch pub := signer.Public().(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return ""
		}
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
	case ed25519.PublicKey:
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)
	default:
		return ""
	}
}
