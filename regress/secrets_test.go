package regress

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"smtpd/internal/dns/dnstest"
)

// randomHex returns n random bytes in hexadecimal.
func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// memScan is what scanMemory found in one process.
type memScan struct {
	found map[string]bool // by marker
	read  int64           // bytes read
	gaps  int64           // bytes of readable mappings that could not be read
}

// scanChunk is how much of a mapping is read at once.
const scanChunk = 1 << 20

// scanMemory reads every readable mapping of pid through /proc/PID/mem
// and reports which of markers occur anywhere in it. Pages that cannot be
// read (EIO, EFAULT) count as gaps and are skipped.
func scanMemory(pid int, markers []string) (memScan, error) {
	res := memScan{found: map[string]bool{}}
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return res, err
	}
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		return res, err
	}
	defer mem.Close()
	fd := int(mem.Fd())
	longest := 0
	for _, m := range markers {
		longest = max(longest, len(m))
	}
	page := int64(os.Getpagesize())
	buf := make([]byte, scanChunk)
	data := make([]byte, 0, scanChunk+longest)
	for _, line := range strings.Split(string(maps), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[1][0] != 'r' {
			continue
		}
		if len(f) >= 6 && (f[5] == "[vvar]" || f[5] == "[vvar_vclock]" || f[5] == "[vsyscall]") {
			continue
		}
		from, to, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		lo, err1 := strconv.ParseUint(from, 16, 64)
		hi, err2 := strconv.ParseUint(to, 16, 64)
		if err1 != nil || err2 != nil || hi <= lo || hi > math.MaxInt64 {
			continue
		}
		var tail []byte // end of the previous chunk, for markers across chunks
		for off := int64(lo); off < int64(hi); off += scanChunk {
			chunk := buf[:min(scanChunk, int64(hi)-off)]
			n, err := syscall.Pread(fd, chunk, off)
			if err != nil || n != len(chunk) {
				// read what can be read page by page; zeros never
				// make up a marker
				n = 0
				for p := int64(0); p < int64(len(chunk)); p += page {
					pg := chunk[p:min(p+page, int64(len(chunk)))]
					k, err := syscall.Pread(fd, pg, off+p)
					if err != nil || k < 0 {
						k = 0
					}
					clear(pg[k:])
					n += k
					res.gaps += int64(len(pg) - k)
				}
			}
			res.read += int64(n)
			data = append(append(data[:0], tail...), chunk...)
			for _, m := range markers {
				if !res.found[m] && bytes.Contains(data, []byte(m)) {
					res.found[m] = true
				}
			}
			tail = append(tail[:0], data[max(0, len(data)-longest+1):]...)
		}
	}
	return res, nil
}

// TestSecretsOnlyInLookup: table contents live in lookup alone. A marker
// in a password hash of the submission listener's auth_table file, and
// another that is the password of the relay's credentials table file,
// after an authenticated submission has been relayed with those
// credentials, are searched for in the memory of the parent and every
// child: the hash is in lookup only, the relay password in lookup and at
// most in mta, which needs it for its AUTH exchange.
func TestSecretsOnlyInLookup(t *testing.T) {
	requireRoot(t, "reading the memory of the privilege-separated children")
	authMarker := randomHex(t, 12)
	credMarker := randomHex(t, 12)
	markers := []string{authMarker, credMarker}
	t.Logf("auth_table marker %s, credentials marker %s", authMarker, credMarker)

	certDir := t.TempDir()
	os.Chmod(certDir, 0o755)
	cert, key := writeCert(t, certDir)

	// the receiving smtpd accepts mail only from clients that
	// authenticate, as relay with the credentials marker for a password
	credHash, err := bcrypt.GenerateFromPassword([]byte(credMarker), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	farConf := strings.Replace(DefaultConfig, `listen "mx" { address = "{{ADDR}}" }`, `listen "mx" {
  address    = "{{ADDR}}"
  tls        = "starttls"
  cert       = "`+cert+`"
  key        = "`+key+`"
  auth       = true
  auth_table = { relay = "`+string(credHash)+`" }
}`, 1)
	far := StartWith(t, bin, Options{Config: farConf, Addr: fmt.Sprintf("127.0.0.2:%d", FreePort(t))})

	dnsSrv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dnsSrv.Close)

	// the daemon under test: bob authenticates with a real password;
	// carol's entry holds the auth_table marker
	bobHash, err := bcrypt.GenerateFromPassword([]byte("bob-s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	carolHash := "$2b$10$" + authMarker + strings.Repeat("Q", 53-len(authMarker))
	dir, _ := WriteConfig(t, "")
	users := "bob " + string(bobHash) + "\ncarol " + carolHash + "\n"
	if err := os.WriteFile(filepath.Join(dir, "users"), []byte(users), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "secrets"), []byte("isp relay:"+credMarker+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := `
hostname       = "submit.example.net"
spool          = "spool"
control_socket = "run/smtpd.sock"
resolver       = ["` + dnsSrv.Addr + `"]

limits {
  retry_base = "1s"
}

table "users"   { file = "users" }
table "secrets" { file = "secrets" }

listen "sub" {
  address    = "{{ADDR}}"
  tls        = "starttls"
  cert       = "` + cert + `"
  key        = "` + key + `"
  auth       = true
  auth_table = table.users
}

action "smarthost" {
  relay       = "smtp+tls://isp@` + far.SMTPAddr + `"
  credentials = table.secrets
  tls         = "no-verify"
}

match {
  from   = "auth"
  for    = "any"
  action = action.smarthost
}
`
	d := StartWith(t, bin, Options{Config: conf, Dir: dir})

	out := swaksRun("--server", d.SMTPAddr, "--helo", "client.example.net", "--tls",
		"--auth", "PLAIN", "--auth-user", "bob", "--auth-password", "bob-s3cret",
		"--from", "bob@example.net", "--to", "friend@example.test",
		"--header", "Subject: secrets", "--timeout", "20")
	if !strings.Contains(out, "235 2.7.0") || !strings.Contains(out, "Message accepted") {
		t.Fatalf("authenticated submission failed:\n%s", out)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(far.Mail()) == 0 {
		if code := d.Wait(0); code != -1 {
			t.Fatalf("the relaying daemon exited with status %d before the message was relayed", code)
		}
		if time.Now().After(deadline) {
			t.Fatal("not relayed with credentials within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, m := range far.Mail() {
		if !strings.Contains(m, "Subject: secrets") || !strings.Contains(m, "with ESMTPSA id") {
			t.Errorf("relayed message (not authenticated?):\n%s", m)
		}
	}

	procs := map[string]int{"parent": d.Cmd.Process.Pid}
	for name, pid := range d.Children() {
		procs[name] = pid
	}
	// no filter, check or signing here: the daemon runs no mfa
	for _, name := range []string{"smtp", "queue", "mta", "lookup", "control"} {
		if _, ok := procs[name]; !ok {
			t.Errorf("no child %s among %v", name, procs)
		}
	}
	names := make([]string, 0, len(procs))
	for name := range procs {
		names = append(names, name)
	}
	sort.Strings(names)
	holders := map[string][]string{} // by marker
	for _, name := range names {
		res, err := scanMemory(procs[name], markers)
		if err != nil {
			t.Errorf("%s (pid %d): %v", name, procs[name], err)
			continue
		}
		if res.read == 0 {
			t.Errorf("%s (pid %d): no memory could be read", name, procs[name])
		}
		t.Logf("%s (pid %d): %d MiB read, %d KiB unreadable, auth_table marker %v, credentials marker %v",
			name, procs[name], res.read>>20, res.gaps>>10, res.found[authMarker], res.found[credMarker])
		for _, m := range markers {
			if res.found[m] {
				holders[m] = append(holders[m], name)
			}
		}
	}
	t.Logf("auth_table marker held by %v; credentials marker held by %v", holders[authMarker], holders[credMarker])

	// the scanner works: lookup holds both tables
	for _, m := range markers {
		if !slices.Contains(holders[m], "lookup") {
			t.Errorf("marker %s not found in lookup, which holds the table: the memory scan is broken", m)
		}
	}
	for _, name := range holders[authMarker] {
		if name != "lookup" {
			t.Errorf("auth_table contents (password hash) found in %s: only lookup may hold them", name)
		}
	}
	for _, name := range holders[credMarker] {
		if name != "lookup" && name != "mta" {
			t.Errorf("relay password found in %s: only lookup, and mta for its AUTH, may hold it", name)
		}
	}
}

// maildirTokens returns the subjects of the messages in dir/new, and
// for each the uid and gid that own the file.
func maildirTokens(dir string) map[string][2]uint32 {
	out := map[string][2]uint32{}
	files, _ := filepath.Glob(filepath.Join(dir, "new", "*"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var st syscall.Stat_t
		if err := syscall.Stat(f, &st); err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if s, ok := strings.CutPrefix(line, "Subject: "); ok {
				out[strings.TrimSpace(s)] = [2]uint32{st.Uid, st.Gid}
				break
			}
		}
	}
	return out
}

// TestUserbaseReload: a userbase table file maps a user to
// uid:gid:directory; after the file changes, SIGHUP, and then smtpctl
// update table, the next delivery goes to the new account's directory,
// as the new uid, and nothing more to the old one.
func TestUserbaseReload(t *testing.T) {
	requireRoot(t, "deliveries as other uids")
	dir, _ := WriteConfig(t, "")
	type account struct {
		id  uint32
		dir string
	}
	accounts := []account{{40001, filepath.Join(dir, "home1")}, {40002, filepath.Join(dir, "home2")}}
	for _, a := range accounts {
		if err := os.Mkdir(a.dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(a.dir, int(a.id), int(a.id)); err != nil {
			t.Fatal(err)
		}
	}
	userbase := filepath.Join(dir, "accounts")
	use := func(a account) {
		t.Helper()
		line := fmt.Sprintf("carol %d:%d:%s\n", a.id, a.id, a.dir)
		if err := os.WriteFile(userbase, []byte(line), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	use(accounts[0])
	conf := strings.Replace(DefaultConfig, `action "local" {
  maildir  = "mail"
  virtual  = { "@" = "sink" }
  userbase = { sink = "{{UID}}:{{GID}}:{{DIR}}" }
}`, `table "accounts" { file = "accounts" }

action "local" {
  maildir  = "${user.directory}/Maildir"
  userbase = table.accounts
}`, 1)
	d := StartWith(t, bin, Options{Config: conf, Dir: dir})

	seq := 0
	// deliver sends one message to carol and waits until it is in one of
	// the maildirs; it returns the account it went to.
	deliver := func() (account, [2]uint32, bool) {
		t.Helper()
		seq++
		token := fmt.Sprintf("token-%d", seq)
		code, err := submitOne(d.SMTPAddr, "sender@example.net", "carol@example.test", "Subject: "+token+"\r\n\r\nhello\r\n")
		if err != nil || code != 250 {
			t.Fatalf("%s: %d %v", token, code, err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			for _, a := range accounts {
				if owner, ok := maildirTokens(filepath.Join(a.dir, "Maildir"))[token]; ok {
					return a, owner, true
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Errorf("%s not delivered within 10s", token)
		return account{}, [2]uint32{}, false
	}
	// expect checks that the next delivery goes to want, as its uid;
	// while deliveries still go elsewhere, it retries for up to 10 s to
	// tell a late switch from none.
	expect := func(step string, want account) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for tries := 1; ; tries++ {
			got, owner, ok := deliver()
			if !ok {
				t.Fatalf("%s: no delivery", step)
			}
			if got.dir == want.dir {
				if owner != [2]uint32{want.id, want.id} {
					t.Errorf("%s: delivered to %s owned by %d:%d, want %d:%d", step, got.dir, owner[0], owner[1], want.id, want.id)
				}
				if tries > 1 {
					t.Errorf("%s: %d deliveries went to the old account before the new one took effect", step, tries-1)
				}
				return
			}
			if tries == 1 {
				t.Errorf("%s: delivered to %s (uid %d), want %s (uid %d)", step, got.dir, owner[0], want.dir, want.id)
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: after %d deliveries over 10s, mail still goes to %s", step, tries, got.dir)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	count := func(a account) int { return len(maildirTokens(filepath.Join(a.dir, "Maildir"))) }

	expect("initial", accounts[0])

	use(accounts[1])
	d.Signal(syscall.SIGHUP)
	d.WaitStat("lookup.table.reload", "1", 5*time.Second)
	before := count(accounts[0])
	expect("after SIGHUP", accounts[1])
	if n := count(accounts[0]); n != before {
		t.Errorf("after SIGHUP: %d new messages in the old account's maildir", n-before)
	}

	use(accounts[0])
	if out, _, code := d.Smtpctl("update", "table", "accounts"); code != 0 || out != "table accounts reloaded\n" {
		t.Fatalf("update table: %d %q", code, out)
	}
	before = count(accounts[1])
	expect("after smtpctl update table", accounts[0])
	if n := count(accounts[1]); n != before {
		t.Errorf("after update table: %d new messages in the old account's maildir", n-before)
	}
}
