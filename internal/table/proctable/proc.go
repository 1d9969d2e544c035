package proctable

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"smtpd/internal/logging"
	"smtpd/internal/privsep"
)

const (
	// stderrLinger is how long the log of standard error may run on
	// after the program is gone, for a descendant that escaped its
	// process group and keeps the pipe open.
	stderrLinger = time.Second
)

// proc is one run of the table program: its process and our end of the
// socket that is its standard input and output.
type proc struct {
	name    string // the table's, for errors and logs
	cmd     *exec.Cmd
	pid     int
	conn    *net.UnixConn
	started time.Time

	// acc holds what was read past the last line. Only the holder of
	// the table's turn (or the handshake, before the proc is
	// published) touches it.
	acc []byte

	// services is the bit set registered in the handshake; read-only
	// afterwards.
	services uint16

	// exited is closed once the process is reaped; waitErr is its
	// status then. done is closed once the log of its standard error
	// is over too: nothing of the run calls Options.Log any more.
	exited  chan struct{}
	waitErr error
	done    chan struct{}

	mu     sync.Mutex
	reaped bool  // the pid may be reused: signal nothing any more
	reason error // the first failure seen, why the run ended
}

// startProc starts the program and does the handshake, within
// startTimeout or until stop is closed. On error nothing of the run is
// left behind.
func startProc(o *Options, startTimeout time.Duration, stop <-chan struct{}) (*proc, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("proctable %q: socketpair: %w", o.Name, err)
	}
	mineF := os.NewFile(uintptr(fds[0]), "table "+o.Name)
	theirs := os.NewFile(uintptr(fds[1]), "table "+o.Name)
	// a net.Conn, for its deadlines: they bound every exchange
	fc, err := net.FileConn(mineF)
	mineF.Close()
	if err != nil {
		theirs.Close()
		return nil, fmt.Errorf("proctable %q: socket: %w", o.Name, err)
	}
	conn := fc.(*net.UnixConn)
	stderr, stderrW, err := os.Pipe()
	if err != nil {
		conn.Close()
		theirs.Close()
		return nil, fmt.Errorf("proctable %q: pipe: %w", o.Name, err)
	}
	cmd := privsep.ProgramCommand(o.Command, theirs, stderrW)
	if o.Credential != nil && os.Geteuid() == 0 {
		cmd.SysProcAttr.Credential = o.Credential
	}
	err = cmd.Start()
	theirs.Close()
	stderrW.Close()
	if err != nil {
		conn.Close()
		stderr.Close()
		return nil, fmt.Errorf("proctable %q: cannot start %s: %w", o.Name, o.Command[0], err)
	}
	p := &proc{
		name:    o.Name,
		cmd:     cmd,
		pid:     cmd.Process.Pid,
		conn:    conn,
		started: time.Now(),
		exited:  make(chan struct{}),
		done:    make(chan struct{}),
	}
	logged := make(chan struct{})
	go func() {
		defer close(logged)
		logging.ProgramOutput(stderr, "table "+o.Name, o.Log)
	}()
	go p.wait(stderr, logged)

	// Close must not wait for a slow handshake
	handshaking := make(chan struct{})
	go func() {
		select {
		case <-stop:
			p.fail(fmt.Errorf("proctable %q: %w", o.Name, ErrClosed))
		case <-handshaking:
		}
	}()
	err = p.handshake(o, startTimeout)
	close(handshaking)
	if err != nil {
		p.fail(err)
		<-p.exited
		return nil, err
	}
	return p, nil
}

// wait reaps the process. It first waits without reaping, so that the
// pid (and the process group named after it) cannot be reused while it
// kills what is left of the group: children the program started and
// left behind.
func (p *proc) wait(stderr *os.File, logged chan struct{}) {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, p.pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			break
		}
	}
	p.mu.Lock()
	p.reaped = true
	unix.Kill(-p.pid, unix.SIGKILL)
	p.mu.Unlock()
	// our end of the socket stays open: a request in flight reads
	// the end of file the program left, which says more than a
	// closed connection; the supervisor closes it
	err := p.cmd.Wait()
	p.mu.Lock()
	if p.reason == nil {
		if err == nil {
			err = errors.New("exited with status 0")
		}
		p.reason = fmt.Errorf("proctable %q: program (pid %d) %w: %w", p.name, p.pid, err, ErrBroken)
	}
	p.waitErr = err
	p.mu.Unlock()
	close(p.exited)
	defer close(p.done)
	select {
	case <-logged:
	case <-time.After(stderrLinger):
		stderr.Close() // ends a pending read of the log
		<-logged
	}
}

// signal sends sig to the process and its group, unless it is reaped.
func (p *proc) signal(sig unix.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reaped {
		return
	}
	unix.Kill(-p.pid, sig)
	// the program may have left the group (setsid)
	unix.Kill(p.pid, sig)
}

// fail ends the run with err, unless it has ended already: the first
// reason is the one worth reporting. A program that failed once is out
// of step with us, so it is killed outright.
func (p *proc) fail(err error) {
	p.mu.Lock()
	if p.reason == nil {
		p.reason = err
	}
	p.mu.Unlock()
	p.conn.Close()
	p.signal(unix.SIGKILL)
}

// failed returns why the run ended, or nil while it has not.
func (p *proc) failed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reason
}

// stop ends the run politely: our end of the socket closes (a program
// reading its input sees end of file), then SIGTERM, then SIGKILL after
// grace. It returns once the process is reaped and its standard error
// logged.
func (p *proc) stop(grace time.Duration, why error) {
	defer func() { <-p.done }()
	p.mu.Lock()
	if p.reason == nil {
		p.reason = why
	}
	p.mu.Unlock()
	p.conn.Close()
	p.signal(unix.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.exited:
		return
	case <-t.C:
	}
	p.signal(unix.SIGKILL)
	<-p.exited
}

// handshake writes the config lines and reads register lines until
// register|ready, as table_proc_open.
func (p *proc) handshake(o *Options, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	p.conn.SetDeadline(deadline)
	if _, err := p.conn.Write(appendHandshake(nil, o.SMTPDVersion, o.Name)); err != nil {
		return p.brokenf(err, "handshake: write")
	}
	for {
		line, err := p.readLine()
		if err != nil {
			return p.brokenf(err, "handshake: no register|ready")
		}
		bit, ready, err := parseRegister(line)
		if err != nil {
			return fmt.Errorf("proctable %q: handshake: %v: %s: %w", p.name, err, quote(line), ErrProtocol)
		}
		if ready {
			break
		}
		p.services |= bit
	}
	if p.services == 0 {
		return fmt.Errorf("proctable %q: handshake: no services registered: %w", p.name, ErrProtocol)
	}
	return nil
}

// brokenf wraps an error of the exchange with the program: a timeout
// is ErrTimeout, an overlong line ErrProtocol, the end of the socket or
// any other failure ErrBroken.
func (p *proc) brokenf(err error, what string) error {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("proctable %q: %s: %w", p.name, what, ErrTimeout)
	case errors.Is(err, ErrBroken):
		return fmt.Errorf("proctable %q: %s: %w", p.name, what, err)
	}
	return fmt.Errorf("proctable %q: %s: %w: %w", p.name, what, err, ErrBroken)
}

// readLine returns the next line without its newline, bounded by the
// connection's deadline and maxLine. Bytes read past the line stay in
// acc for the next call.
func (p *proc) readLine() (string, error) {
	var buf [4096]byte
	for {
		if i := bytes.IndexByte(p.acc, '\n'); i >= 0 {
			line := string(p.acc[:i])
			p.acc = append(p.acc[:0], p.acc[i+1:]...)
			return line, nil
		}
		if len(p.acc) > maxLine {
			return "", fmt.Errorf("line longer than %d bytes: %s: %w", maxLine, quote(string(p.acc)), ErrProtocol)
		}
		n, err := p.conn.Read(buf[:])
		p.acc = append(p.acc, buf[:n]...)
		if err != nil {
			if n > 0 {
				continue // look for a line in what came with the error
			}
			return "", err
		}
	}
}

// quote shows a line from the program in an error, cut short.
func quote(line string) string {
	const max = 200
	if len(line) > max {
		return strconv.Quote(line[:max]) + "... (" + strconv.Itoa(len(line)) + " bytes)"
	}
	return strconv.Quote(line)
}
