// Package pgtest runs a PostgreSQL server for tests, as httptest runs
// an HTTP server: the server of Debian's postgresql package on a
// cluster of its own in a temporary directory, listening on a free
// loopback port and a unix socket in that directory. Nothing of the
// machine's own PostgreSQL (its clusters, port 5432, its service) is
// used.
//
// PostgreSQL refuses to run as root, so under root (as tests run in
// CI) the server runs as the postgres user of the package, or nobody.
// The server binaries are required: without them the test fails, and
// says what to install; it is not skipped.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Binaries is where Debian installs the server, one directory per
// major version.
const Binaries = "/usr/lib/postgresql/*/bin"

// Timeouts of the server's start and stop; a start includes crash
// recovery after a kill, and CI machines are slow.
const (
	startTimeout = 60 * time.Second
	stopTimeout  = 30 * time.Second
)

// Config is how to start a server. The zero Config is a server that
// trusts every connection.
type Config struct {
	// Password, when set, is the password of User, and the server
	// asks for it (scram-sha-256) on every connection.
	Password string
}

// Server is a running (or stopped) PostgreSQL cluster.
type Server struct {
	// Host and Port are where it listens on TCP, 127.0.0.1 and a
	// free port, the same across Stop and Start.
	Host string
	Port int
	// SocketDir holds its unix socket.
	SocketDir string
	// User is a superuser; Database a database of the user's.
	User, Database string
	// Password is Config.Password.
	Password string
	// DSN is a postgres:// URL of Database over TCP, without the
	// password.
	DSN string
	// Dir is the temporary directory of the cluster, removed at the
	// end of the test; the server's log is Dir/log.
	Dir string

	tb   testing.TB
	bin  string
	cred *syscall.Credential
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Start starts a server with the zero Config and stops it at the end of
// the test.
func Start(tb testing.TB) *Server {
	tb.Helper()
	return StartConfig(tb, Config{})
}

// StartConfig starts a server and stops it at the end of the test.
// Failures are fatal to the test.
func StartConfig(tb testing.TB, c Config) *Server {
	tb.Helper()
	bin, err := findBinaries()
	if err != nil {
		tb.Fatalf("pgtest: %v: install Debian's postgresql package (make test-deps does)", err)
	}
	s := &Server{Host: "127.0.0.1", User: "smtpd", Database: "smtpd", Password: c.Password, tb: tb, bin: bin}
	if os.Geteuid() == 0 {
		if s.cred, err = serverUser(); err != nil {
			tb.Fatalf("pgtest: %v", err)
		}
	}
	// Not t.TempDir: its parent is private to root, and the server
	// runs as another user, who must be able to traverse
	// os.TempDir().
	s.Dir, err = os.MkdirTemp("", "pgtest-")
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	tb.Cleanup(func() { os.RemoveAll(s.Dir) })
	if err := os.Chmod(s.Dir, 0o755); err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	s.SocketDir = filepath.Join(s.Dir, "sock")
	for _, d := range []string{s.SocketDir, s.data()} {
		if err := s.mkdir(d); err != nil {
			tb.Fatalf("pgtest: %v", err)
		}
	}
	if err := s.initdb(); err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	if s.Port, err = freePort(); err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	s.DSN = fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", s.User, s.Host, s.Port, s.Database)
	tb.Cleanup(func() {
		if tb.Failed() {
			s.logTail()
		}
		if err := s.stop(); err != nil {
			tb.Errorf("pgtest: %v", err)
		}
	})
	if err := s.start(); err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	if err := s.exec("postgres", "CREATE DATABASE "+s.Database); err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	return s
}

// findBinaries returns the bin directory of the newest server
// installed.
func findBinaries() (string, error) {
	dirs, _ := filepath.Glob(Binaries)
	var found []string
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			found = append(found, d)
		}
	}
	if len(found) == 0 {
		return "", fmt.Errorf("no PostgreSQL server in %s", Binaries)
	}
	// by major version, numerically: 9.6 < 15 < 16
	version := func(d string) float64 {
		v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(d)), 64)
		return v
	}
	slices.SortFunc(found, func(a, b string) int {
		switch va, vb := version(a), version(b); {
		case va < vb:
			return -1
		case va > vb:
			return 1
		}
		return 0
	})
	return found[len(found)-1], nil
}

// serverUser is who runs the server under root: the package's postgres
// user, or nobody.
func serverUser() (*syscall.Credential, error) {
	var errs []error
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err := errors.Join(err1, err2); err != nil {
			errs = append(errs, err)
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	return nil, fmt.Errorf("no user to run PostgreSQL as, which refuses root: %w", errors.Join(errs...))
}

func (s *Server) data() string { return filepath.Join(s.Dir, "data") }

// mkdir makes a directory of the server's user.
func (s *Server) mkdir(d string) error {
	if err := os.Mkdir(d, 0o700); err != nil {
		return err
	}
	return s.chown(d)
}

func (s *Server) chown(name string) error {
	if s.cred == nil {
		return nil
	}
	return os.Chown(name, int(s.cred.Uid), int(s.cred.Gid))
}

// command is a command run as the server's user, in Dir: the server and
// initdb look up their working directory, and root's may be closed to
// them.
func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.Dir = s.Dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "TZ=UTC"}
	// Pdeathsig: a test binary that dies leaves no server behind
	// (Go sets it after changing the credentials, which would
	// otherwise clear it)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Pdeathsig: syscall.SIGINT}
	return cmd
}

func (s *Server) initdb() error {
	args := []string{"-D", s.data(), "-U", s.User, "-E", "UTF8", "--locale=C", "--no-sync"}
	if s.Password == "" {
		args = append(args, "-A", "trust")
	} else {
		pw := filepath.Join(s.Dir, "pwfile")
		if err := os.WriteFile(pw, []byte(s.Password+"\n"), 0o600); err != nil {
			return err
		}
		defer os.Remove(pw)
		if err := s.chown(pw); err != nil {
			return err
		}
		args = append(args, "-A", "scram-sha-256", "--pwfile", pw)
	}
	out, err := s.command("initdb", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("initdb: %w\n%s", err, out)
	}
	return nil
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start starts the server again after Stop, on the same cluster and
// port, and waits until it accepts connections. Call it from the
// test's goroutine: failures are fatal.
func (s *Server) Start() {
	s.tb.Helper()
	if err := s.start(); err != nil {
		s.tb.Fatalf("pgtest: %v", err)
	}
}

// Stop stops the server (a fast shutdown: sessions are ended, as when
// an administrator restarts it) and waits until it has exited. Call it
// from the test's goroutine: failures are fatal.
func (s *Server) Stop() {
	s.tb.Helper()
	if err := s.stop(); err != nil {
		s.tb.Fatalf("pgtest: %v", err)
	}
}

// Running says whether the server runs.
func (s *Server) Running() bool {
	if s.cmd == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

func (s *Server) start() error {
	if s.Running() {
		return nil
	}
	log, err := os.OpenFile(filepath.Join(s.Dir, "log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	// fsync off: a test cluster need not survive a power cut, and
	// syncs make it slow
	cmd := s.command("postgres", "-D", s.data(), "-k", s.SocketDir, "-h", s.Host, "-p", strconv.Itoa(s.Port),
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return err
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func(done chan struct{}) {
		cmd.Wait()
		close(done)
	}(s.done)
	deadline := time.Now().Add(startTimeout)
	for {
		err := s.ping()
		if err == nil {
			return nil
		}
		if !s.Running() {
			return fmt.Errorf("postgres exited at start (%v): see %s", cmd.ProcessState, filepath.Join(s.Dir, "log"))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres does not accept connections after %v: %w", startTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *Server) stop() error {
	if !s.Running() {
		return nil
	}
	if err := s.cmd.Process.Signal(syscall.SIGINT); err != nil {
		return err
	}
	select {
	case <-s.done:
		return nil
	case <-time.After(stopTimeout):
	}
	s.cmd.Process.Kill()
	<-s.done
	return fmt.Errorf("postgres did not stop within %v of SIGINT, killed", stopTimeout)
}

// ping connects to the maintenance database, which exists from initdb
// on.
func (s *Server) ping() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := s.connect(ctx, "postgres")
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

func (s *Server) connect(ctx context.Context, database string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", s.Host, s.Port, s.User, database))
	if err != nil {
		return nil, err
	}
	cfg.Password = s.Password
	return pgx.ConnectConfig(ctx, cfg)
}

// exec runs sql, one statement or several, in database.
func (s *Server) exec(database, sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := s.connect(ctx, database)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	// no arguments: the simple protocol, which takes several
	// statements at once
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("%.60q: %w", sql, err)
	}
	return nil
}

// Exec runs sql, one statement or several, in Database as User.
func (s *Server) Exec(sql string) error {
	return s.exec(s.Database, sql)
}

// MustExec is Exec, fatal to the test on failure.
func (s *Server) MustExec(sql string) {
	s.tb.Helper()
	if err := s.Exec(sql); err != nil {
		s.tb.Fatalf("pgtest: %v", err)
	}
}

// logTail logs the end of the server's log, for a failed test.
func (s *Server) logTail() {
	b, err := os.ReadFile(filepath.Join(s.Dir, "log"))
	if err != nil {
		return
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	s.tb.Logf("pgtest: end of the server's log:\n%s", strings.Join(lines, "\n"))
}
