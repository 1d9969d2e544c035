package parent

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"smtpd/internal/config"
	"smtpd/internal/logging"
	"smtpd/internal/privsep"
	"smtpd/proto"
)

// Backoff of filter restarts: the first comes after filterBackoffMin,
// each next one waits twice as long up to filterBackoffMax; a process
// that ran filterStable resets it.
const (
	filterBackoffMin = time.Second
	filterBackoffMax = time.Minute
	filterStable     = time.Minute
)

// filterProcs runs the filter processes of the configuration: each is
// started as its user with its standard input and output on a socket
// whose other end goes to mfa, its standard error to the log, and is
// started again with a backoff whenever it exits or mfa reports it
// broken. A filter never stops the daemon.
type filterProcs struct {
	p    *Parent
	stop chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	running map[int]*filterRun // by filter id
}

// filterRun is the current process of a filter.
type filterRun struct {
	gen uint32
	cmd *exec.Cmd
}

func newFilterProcs(p *Parent) *filterProcs {
	return &filterProcs{p: p, stop: make(chan struct{}), running: map[int]*filterRun{}}
}

// start supervises every filter process of the configuration.
func (fp *filterProcs) start() {
	for _, f := range fp.p.cfg.Filters {
		if f.Kind == config.FilterProc {
			fp.wg.Add(1)
			go fp.supervise(f)
		}
	}
}

func (fp *filterProcs) supervise(f *config.Filter) {
	defer fp.wg.Done()
	mfa := fp.p.children[proto.ProcMFA].ch
	backoff := filterBackoffMin
	for gen := uint32(1); ; gen++ {
		began := time.Now()
		reason := fp.run(f, gen, mfa)
		if time.Since(began) >= filterStable {
			backoff = filterBackoffMin
		}
		select {
		case <-fp.stop:
			return
		default:
		}
		next := time.Now().Add(backoff)
		fp.p.log.Warnf("filter %s: %s; starting it again in %v", f.Name, reason, backoff)
		if err := mfa.Send(&proto.ParentFilterExited{Filter: uint32(f.ID), Generation: gen, Reason: reason, Restart: next}, 0); err != nil {
			fp.p.fatal <- fmt.Errorf("lost child: mfa: %w", err)
			return
		}
		select {
		case <-fp.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, filterBackoffMax)
	}
}

// run starts one process of filter f, hands mfa its socket and waits
// for it to end; the result says why it did.
func (fp *filterProcs) run(f *config.Filter, gen uint32, mfa *proto.Channel) string {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Sprintf("socketpair: %v", err)
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "filter "+f.Name), os.NewFile(uintptr(fds[1]), "filter "+f.Name)
	defer mine.Close()
	stderr, stderrW, err := os.Pipe()
	if err != nil {
		theirs.Close()
		return fmt.Sprintf("pipe: %v", err)
	}
	cmd := privsep.ProgramCommand(f.Command, theirs, stderrW)
	if privsep.Privileged() {
		acct, err := privsep.DaemonUser(f.User)
		if err != nil {
			theirs.Close()
			stderr.Close()
			stderrW.Close()
			return err.Error()
		}
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: acct.UID, Gid: acct.GID, Groups: []uint32{acct.GID}}
		cmd.Env = append(cmd.Env, "HOME="+acct.Directory, "USER="+acct.Name)
	}
	err = cmd.Start()
	theirs.Close()
	stderrW.Close()
	if err != nil {
		stderr.Close()
		return fmt.Sprintf("cannot start %s: %v", f.Command[0], err)
	}
	fp.mu.Lock()
	fp.running[f.ID] = &filterRun{gen: gen, cmd: cmd}
	fp.mu.Unlock()
	fp.p.log.Infof("filter %s: started %s as pid %d (start %d)", f.Name, f.Command[0], cmd.Process.Pid, gen)
	logged := make(chan struct{})
	go func() {
		defer close(logged)
		logging.ProgramOutput(stderr, "filter "+f.Name, fp.p.log.Infof)
	}()
	if err := mfa.Send(proto.NewParentFilterProcess(mine, uint32(f.ID), gen), 0); err != nil {
		cmd.Process.Kill()
	}
	err = cmd.Wait()
	<-logged
	fp.mu.Lock()
	delete(fp.running, f.ID)
	fp.mu.Unlock()
	if err == nil {
		return "exited with status 0"
	}
	return err.Error()
}

// broken ends the process mfa reported, if it is still the current
// one; its supervisor starts the next after the backoff.
func (fp *filterProcs) broken(m *proto.MFAFilterBroken) {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	if r := fp.running[int(m.Filter)]; r != nil && r.gen == m.Generation {
		fp.p.log.Warnf("filter %d (start %d): %s; killing pid %d", m.Filter, m.Generation, m.Reason, r.cmd.Process.Pid)
		r.cmd.Process.Kill()
	}
}

// close ends every filter process and its supervisor.
func (fp *filterProcs) close() {
	close(fp.stop)
	fp.mu.Lock()
	for _, r := range fp.running {
		r.cmd.Process.Signal(syscall.SIGTERM)
	}
	fp.mu.Unlock()
	done := make(chan struct{})
	go func() {
		fp.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		fp.mu.Lock()
		for _, r := range fp.running {
			r.cmd.Process.Kill()
		}
		fp.mu.Unlock()
		<-done
	}
}

// connectMilter opens the unix socket of a milter for mfa, which its
// chroot keeps from the file system, and hands it the connection.
func (p *Parent) connectMilter(m *proto.MFAMilterConnect, id uint32) {
	mfa := p.children[proto.ProcMFA].ch
	var answer proto.Message
	if int(m.Filter) >= len(p.cfg.Filters) || p.cfg.Filters[m.Filter].MilterNetwork != "unix" {
		answer = &proto.ParentMilterRefused{Text: fmt.Sprintf("filter %d is no milter on a unix socket", m.Filter)}
	} else {
		f := p.cfg.Filters[m.Filter]
		conn, err := net.DialTimeout("unix", f.MilterAddress, f.Timeout)
		if err != nil {
			answer = &proto.ParentMilterRefused{Text: err.Error()}
		} else {
			file, err := conn.(*net.UnixConn).File()
			conn.Close()
			if err != nil {
				answer = &proto.ParentMilterRefused{Text: err.Error()}
			} else {
				defer file.Close()
				answer = proto.NewParentMilterSocket(file)
			}
		}
	}
	if err := mfa.Send(answer, id); err != nil {
		p.fatal <- fmt.Errorf("lost child: mfa: %w", err)
	}
}
