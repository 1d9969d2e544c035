// Package ldaptest runs Debian's slapd for tests, as net/http/httptest
// runs an HTTP server: its own configuration and mdb database in the
// test's temporary directory, listening on loopback ports of its own,
// stopped when the test ends. Nothing touches the packaged slapd
// service or /etc/ldap beyond reading its schemas.
//
// The slapd and ldap-utils packages must be installed (Debian starts
// the packaged server on install unless /usr/sbin/policy-rc.d exits
// 101; make test-deps does this). A test that cannot run slapd fails:
// a skipped test would prove nothing in CI.
package ldaptest

import (
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"smtpd/internal/testcert"
)

// The directory every Server holds, and the account lookups bind as.
const (
	Base         = "dc=example,dc=test"
	BindDN       = "cn=smtpd,dc=example,dc=test"
	BindPassword = "s3cret-bind"
)

// Where Debian's slapd package puts things.
const (
	slapdPath  = "/usr/sbin/slapd"
	slapaddBin = "/usr/sbin/slapadd"
	schemaDir  = "/etc/ldap/schema"
	moduleDir  = "/usr/lib/ldap"
)

// startTimeout bounds how long slapd may take to accept connections.
const startTimeout = 15 * time.Second

// Server is a running slapd.
type Server struct {
	// URL is the plain listener, ldap://127.0.0.1:port (StartTLS is
	// offered there too).
	URL string
	// LDAPSURL is the TLS listener, ldaps://127.0.0.1:port.
	LDAPSURL string
	// Base, BindDN and BindPassword are the constants of the same
	// names, for callers that take a *Server around.
	Base, BindDN, BindPassword string
	// CertFile is the server's self-signed certificate (for
	// mx.example.test and 127.0.0.1): the root a client must trust.
	CertFile string
	// Dir holds slapd.conf, the database and slapd.log.
	Dir string

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has been waited for
	waitErr error
	paused  bool
}

// Start runs a slapd that holds the suffix Base, the bind account
// BindDN, and the entries of ldif (LDIF records, separated by blank
// lines, loaded with slapadd before slapd starts). Only BindDN may read
// the directory (anonymous binds see nothing), so a lookup that forgets
// to bind finds nothing instead of passing by accident. The server is
// stopped when the test ends.
func Start(t testing.TB, ldif ...string) *Server {
	t.Helper()
	requireRoot(t)
	for _, p := range []string{slapdPath, slapaddBin, filepath.Join(schemaDir, "misc.schema")} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("ldaptest: %v: install Debian's slapd and ldap-utils "+
				"(apt-get install -y slapd ldap-utils behind a policy-rc.d that exits 101, as make test-deps does)", err)
		}
	}
	dir := t.TempDir()
	s := &Server{Base: Base, BindDN: BindDN, BindPassword: BindPassword, Dir: dir}
	s.CertFile, _ = testcert.Write(t, dir)
	ports := freePorts(t, 2)
	s.URL = fmt.Sprintf("ldap://127.0.0.1:%d", ports[0])
	s.LDAPSURL = fmt.Sprintf("ldaps://127.0.0.1:%d", ports[1])

	if err := os.Mkdir(filepath.Join(dir, "db"), 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "slapd.conf")
	if err := os.WriteFile(conf, []byte(config(dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data.ldif")
	records := append([]string{baseLDIF(t)}, ldif...)
	if err := os.WriteFile(data, []byte(strings.Join(records, "\n\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// slapadd loads offline, straight into the mdb files: quicker than
	// ldapadd, and the schema is checked all the same.
	out, err := exec.Command(slapaddBin, "-f", conf, "-l", data).CombinedOutput()
	if err != nil {
		t.Fatalf("ldaptest: slapadd: %v\n%s", err, out)
	}
	s.start(t)
	t.Cleanup(s.Stop)
	return s
}

// requireRoot fails the test when it does not run as root, like
// regress's requireRoot: make test (and CI) runs as root, where the
// packages are installed, and a skipped test would prove nothing there.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("ldaptest: the slapd tests need root: run them as root (make test does in CI)")
	}
}

// freePorts returns n loopback ports that were free a moment ago.
// slapd binds them itself, so there is a small window in which another
// process could take one; the start then fails with slapd's log.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// config is slapd.conf: the schemas Debian ships, one mdb database,
// TLS from testcert, and ACLs that let only BindDN read.
func config(dir string) string {
	var b strings.Builder
	for _, s := range []string{"core", "cosine", "inetorgperson", "nis", "misc"} {
		fmt.Fprintf(&b, "include %s/%s.schema\n", schemaDir, s)
	}
	fmt.Fprintf(&b, `pidfile %[1]s/slapd.pid
argsfile %[1]s/slapd.args
modulepath %[2]s
moduleload back_mdb
TLSCertificateFile %[1]s/cert.pem
TLSCertificateKeyFile %[1]s/key.pem

database mdb
suffix %[3]q
directory %[1]s/db
maxsize 67108864
access to attrs=userPassword
	by dn.exact=%[4]q read
	by anonymous auth
	by * none
access to *
	by dn.exact=%[4]q read
	by anonymous auth
	by * none
`, dir, moduleDir, Base, BindDN)
	return b.String()
}

// baseLDIF is the suffix and the bind account, whose password is
// stored hashed ({SSHA}) as a real directory would.
func baseLDIF(t testing.TB) string {
	t.Helper()
	salt := make([]byte, 8)
	if _, err := rand.Read(salt); err != nil {
		t.Fatal(err)
	}
	sum := sha1.Sum(append([]byte(BindPassword), salt...))
	ssha := "{SSHA}" + base64.StdEncoding.EncodeToString(append(sum[:], salt...))
	return `dn: ` + Base + `
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: ` + BindDN + `
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: smtpd
userPassword: ` + ssha
}

// start runs slapd in the foreground (-d 0 keeps it from detaching, so
// it is our child and Stop can wait for it) and waits until both
// listeners accept connections.
func (s *Server) start(t testing.TB) {
	t.Helper()
	logf, err := os.OpenFile(filepath.Join(s.Dir, "slapd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(slapdPath, "-d", "0", "-f", filepath.Join(s.Dir, "slapd.conf"),
		"-h", s.URL+"/ "+s.LDAPSURL+"/")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("ldaptest: start slapd: %v", err)
	}
	exited := make(chan struct{})
	s.mu.Lock()
	s.cmd, s.exited, s.waitErr, s.paused = cmd, exited, nil, false
	s.mu.Unlock()
	go func() {
		err := cmd.Wait()
		s.mu.Lock()
		s.waitErr = err
		s.mu.Unlock()
		close(exited)
	}()
	deadline := time.Now().Add(startTimeout)
	for _, u := range []string{s.URL, s.LDAPSURL} {
		addr := strings.TrimPrefix(strings.TrimPrefix(u, "ldap://"), "ldaps://")
		for {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-exited:
				t.Fatalf("ldaptest: slapd exited (%v) before listening on %s; its log:\n%s", s.waitErr, u, s.Log())
			case <-time.After(20 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				s.Stop()
				t.Fatalf("ldaptest: slapd not listening on %s after %v; its log:\n%s", u, startTimeout, s.Log())
			}
		}
	}
}

// Log returns what slapd wrote to its log so far.
func (s *Server) Log() string {
	b, err := os.ReadFile(filepath.Join(s.Dir, "slapd.log"))
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// Stop stops slapd and waits for it to exit: SIGTERM, then SIGKILL if
// it has not exited within 10 seconds. It may be called more than once.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-exited:
		return
	default:
	}
	// a stopped process would only act on SIGTERM once continued
	_ = cmd.Process.Signal(syscall.SIGCONT)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// Restart stops slapd if it runs and starts it again on the same ports
// with the same database, as a directory server restarted by its
// administrator.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	s.start(t)
}

// Pause stops slapd with SIGSTOP: the kernel still accepts connections
// on its listeners but nothing answers, as with a hung or overloaded
// server. Resume or Stop undoes it.
func (s *Server) Pause(t testing.TB) {
	t.Helper()
	pid := s.signal(t, syscall.SIGSTOP)
	// the stop reaches the threads of slapd a little later; a request
	// sent meanwhile would still be answered
	stat := fmt.Sprintf("/proc/%d/stat", pid)
	for deadline := time.Now().Add(5 * time.Second); ; {
		b, err := os.ReadFile(stat)
		if err != nil {
			t.Fatalf("ldaptest: %v", err)
		}
		// pid (comm) state ...: the state follows the last ')'
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && bytes.HasPrefix(b[i+1:], []byte(" T")) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("ldaptest: slapd not stopped: %s", b)
		}
		time.Sleep(time.Millisecond)
	}
}

// Resume continues a paused slapd.
func (s *Server) Resume(t testing.TB) {
	t.Helper()
	s.signal(t, syscall.SIGCONT)
}

// signal sends sig to slapd and returns its pid.
func (s *Server) signal(t testing.TB, sig syscall.Signal) int {
	t.Helper()
	s.mu.Lock()
	cmd := s.cmd
	s.mu.Unlock()
	if cmd == nil {
		t.Fatal("ldaptest: slapd is not running")
	}
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatalf("ldaptest: signal slapd: %v", err)
	}
	return cmd.Process.Pid
}

// CertPool returns a pool holding the server's certificate, for a
// client's tls.Config RootCAs.
func (s *Server) CertPool(t testing.TB) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(s.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		t.Fatalf("ldaptest: no certificate in %s", s.CertFile)
	}
	return p
}
