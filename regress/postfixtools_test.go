package regress

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// postfixTool returns the path of a program of Debian's postfix package
// as `make postfix-tools` extracts it into var/postfix (not installed),
// and the environment to run it with: its shared libraries, from the
// package, as LD_LIBRARY_PATH, and MAIL_CONFIG, a directory of its own
// with a minimal main.cf. It fails the test if the program is missing.
func postfixTool(t *testing.T, name string) (path string, env []string) {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(root, "var", "postfix", "usr", "sbin", name)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s: %v (run make postfix-tools, as root: it extracts Debian's postfix package into var/postfix)", name, err)
	}
	conf := t.TempDir()
	// The Postfix programs check at start that mail_owner and
	// setgid_group name a user and a group of the system, distinct
	// from default_privs (nobody) and from each other; postfix and
	// postdrop exist only where the package is installed, daemon and
	// mail in every Debian system (base-passwd).
	mainCF := "mail_owner = daemon\nsetgid_group = mail\n"
	if err := os.WriteFile(filepath.Join(conf, "main.cf"), []byte(mainCF), 0o644); err != nil {
		t.Fatal(err)
	}
	env = append(os.Environ(),
		"LD_LIBRARY_PATH="+filepath.Join(root, "var", "postfix", "usr", "lib", "postfix"),
		"MAIL_CONFIG="+conf)
	return path, env
}

// writeHostCert writes a self-signed certificate for host, valid for a
// day, and its key into dir, and returns their paths and the parsed
// certificate.
func writeHostCert(t *testing.T, dir, host string) (cert, key string, parsed *x509.Certificate) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: host},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		DNSNames:     []string{host},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	if parsed, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, host+".crt"), filepath.Join(dir, host+".key")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key, parsed
}
