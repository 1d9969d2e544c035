package regress

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"smtpd/internal/privsep"
	"smtpd/internal/queue"
	"smtpd/proto"
)

// childUnderTest runs `smtpd -x NAME` with the test as its parent on fd 3.
type childUnderTest struct {
	cmd    *exec.Cmd
	conn   *net.UnixConn
	ch     *proto.Channel
	log    *syncBuffer
	exited chan struct{}
}

func startChild(t *testing.T, name string) *childUnderTest {
	t.Helper()
	dir, path := WriteConfig(t, `
spool          = "spool"
control_socket = "run/smtpd.sock"
`)
	uid, gid := -1, -1
	if os.Geteuid() == 0 {
		acct, err := privsep.DaemonUser("_smtpq")
		if err != nil {
			t.Fatal(err)
		}
		uid, gid = int(acct.UID), int(acct.GID)
	}
	if err := queue.PrepareSpool(filepath.Join(dir, "spool"), uid, gid); err != nil {
		t.Fatal(err)
	}
	mine, theirs, err := proto.Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	c := &childUnderTest{log: &syncBuffer{}, exited: make(chan struct{})}
	c.cmd = exec.Command(bin.Smtpd, "-x", name, "-d", "-f", path)
	c.cmd.Stderr = c.log
	c.cmd.ExtraFiles = []*os.File{theirs}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	theirs.Close()
	fc, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		t.Fatal(err)
	}
	c.conn = fc.(*net.UnixConn)
	proc, _ := proto.ParseProc(name)
	c.ch = proto.NewChannelConn(c.conn, proto.ProcParent, proc)
	go func() {
		c.cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		c.cmd.Process.Kill()
		<-c.exited
		c.conn.Close()
	})
	return c
}

// setup plays the parent's setup: the channels to its peers (whose
// other ends the test keeps), what the process needs, SetupDone, then
// waits for SetupReady.
func (c *childUnderTest) setup(t *testing.T, name string) {
	t.Helper()
	for _, pair := range proto.Peers {
		var peer proto.Proc
		switch c.ch.Remote {
		case pair[0]:
			peer = pair[1]
		case pair[1]:
			peer = pair[0]
		default:
			continue
		}
		mine, theirs, err := proto.Socketpair()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { mine.Close() })
		err = c.ch.Send(proto.NewSetupPeer(peer, theirs), 0)
		theirs.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	if name == "control" {
		dir := t.TempDir()
		l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: filepath.Join(dir, "s"), Net: "unixpacket"})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		f, _ := l.File()
		defer f.Close()
		if err := c.ch.Send(proto.NewSetupControl(f), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.ch.Send(&proto.SetupDone{}, 0); err != nil {
		t.Fatal(err)
	}
	env, err := c.ch.Recv()
	if err != nil || env.Type != proto.TypeSetupReady {
		t.Fatalf("no SetupReady: %v %v\n%s", env, err, c.log.String())
	}
}

// TestBadFrameKillsChild: a frame with an unknown type, trailing bytes,
// a type the child does not accept from the parent, or a short header
// makes the receiving child exit non-zero, at setup and once serving.
// (The parent then stops the daemon: TestLostChild.)
func TestBadFrameKillsChild(t *testing.T) {
	frames := []struct {
		name  string
		frame []byte
		log   string
	}{
		{"unknown type", proto.AppendFrame(nil, proto.Header{Type: 999}, nil), "unknown message type 999"},
		{"trailing bytes", proto.AppendFrame(nil, proto.Header{Type: proto.TypeSetupDone}, []byte{0}), "trailing bytes"},
		{"not from parent", proto.AppendFrame(nil, proto.Header{Type: proto.TypeSetupReady}, nil), "not allowed from this peer: SetupReady from parent"},
		{"short frame", []byte{1, 0, 0, 0, 16}, "shorter than a header"},
		{"length mismatch", proto.AppendFrame(nil, proto.Header{Type: proto.TypeSetupDone}, nil)[:15], "shorter than a header"},
	}
	for _, name := range childNames() {
		for _, f := range frames {
			for _, serving := range []bool{false, true} {
				phase := "setup"
				if serving {
					phase = "serving"
				}
				t.Run(name+"/"+f.name+"/"+phase, func(t *testing.T) {
					c := startChild(t, name)
					if serving {
						c.setup(t, name)
					}
					if _, err := c.conn.Write(f.frame); err != nil {
						t.Fatal(err)
					}
					select {
					case <-c.exited:
					case <-time.After(5 * time.Second):
						t.Fatalf("child still running 5s after a bad frame:\n%s", c.log.String())
					}
					if code := c.cmd.ProcessState.ExitCode(); code == 0 {
						t.Errorf("exit status 0")
					}
					if !strings.Contains(c.log.String(), f.log) {
						t.Errorf("log lacks %q:\n%s", f.log, c.log.String())
					}
				})
			}
		}
	}
}

// TestChildWithoutParent: -x without the parent's channel fails clearly.
func TestChildWithoutParent(t *testing.T) {
	_, path := WriteConfig(t, "")
	out, err := exec.Command(bin.Smtpd, "-x", "queue", "-d", "-f", path).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "parent") {
		t.Errorf("%v: %s", err, out)
	}
	out, err = exec.Command(bin.Smtpd, "-x", "nosuch", "-f", path).CombinedOutput()
	if err == nil || !strings.Contains(string(out), `unknown process "nosuch"`) {
		t.Errorf("%v: %s", err, out)
	}
}
