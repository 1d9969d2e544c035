// Package safeio writes whole files durably: a reader sees either the
// old file or the whole new one, never a part, and once a write returns
// without error the file survives a crash. Queue envelope updates, the
// messages sendmail leaves in offline/ and maildir deliveries go through
// it, so that the sequence (temporary file, fsync, rename, fsync of the
// directory) is written once.
package safeio

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// OpenFile is os.OpenFile for the regular files and directories of the
// spool and of mailboxes, on the paths that run once per message: it
// opens with open(2) (O_CLOEXEC added) and wraps the descriptor with
// os.NewFile. os.OpenFile offers every new descriptor to the network
// poller, which takes no regular file: four fcntl(2) and a failed
// epoll_ctl(2) per file, which strace counted at a third of the queue's
// system calls.
func OpenFile(path string, flag int, perm os.FileMode) (*os.File, error) {
	fd, err := unix.Open(path, flag|unix.O_CLOEXEC, uint32(perm.Perm()))
	for err == unix.EINTR {
		fd, err = unix.Open(path, flag|unix.O_CLOEXEC, uint32(perm.Perm()))
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// Open opens path for reading, as OpenFile does.
func Open(path string) (*os.File, error) { return OpenFile(path, os.O_RDONLY, 0) }

// Rename is rename(2): os.Rename first looks at the destination with
// lstat(2), to refuse to put a file over a directory, which the callers
// here never ask for.
func Rename(from, to string) error {
	if err := unix.Rename(from, to); err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	return nil
}

// WriteFile creates path durably. It creates tmp exclusively with perm
// (less the umask), lets write fill it, fsyncs and closes it, renames it
// to path and fsyncs path's directory, since the new name is durable
// only once that directory is.
//
// tmp must be on the file system of path, and is the caller's choice so
// that each user keeps its naming: a hidden name beside path where
// readers skip hidden names, tmp/NAME for a maildir. It is created with
// O_EXCL, never following a link someone else left in a shared
// directory, and so the file belongs to the calling process's user.
//
// If anything before the rename fails, tmp is removed and path is left
// as it was. If only the directory fsync fails, the file is in place but
// not known durable: the error is returned so that the caller does not
// acknowledge what may be lost (a retry then makes a duplicate, never a
// loss).
func WriteFile(tmp, path string, perm os.FileMode, write func(*os.File) error) error {
	return writeFile(tmp, path, perm, write, SyncDir)
}

func writeFile(tmp, path string, perm os.FileMode, write func(*os.File) error, syncDir func(string) error) error {
	f, err := OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	err = write(f)
	if err == nil {
		err = f.Sync()
	}
	// Close may report a write the kernel deferred (NFS): it counts
	// unless an earlier step failed already
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

// SyncDir fsyncs directory dir, making durable the names created,
// renamed or removed in it.
func SyncDir(dir string) error {
	d, err := Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// DirSyncer fsyncs directories for concurrent writers: the callers that
// ask for the same directory while an fsync of it runs share the next
// one, so that a burst of files into one directory (deliveries into one
// maildir) costs a few fsyncs, not one each — the queue's group commit,
// applied to a mailbox. No caller returns before an fsync that began
// after its own rename has completed. The zero value is ready.
type DirSyncer struct {
	mu   sync.Mutex
	dirs map[string]*dirRounds
}

// dirRounds is the state of one directory: whether an fsync runs, and
// the round that the callers arriving meanwhile wait for.
type dirRounds struct {
	running bool
	next    *round
}

type round struct {
	done chan struct{}
	err  error
}

// SyncDir fsyncs dir, or waits for an fsync of it that starts after
// the call.
func (s *DirSyncer) SyncDir(dir string) error {
	s.mu.Lock()
	if s.dirs == nil {
		s.dirs = map[string]*dirRounds{}
	}
	d := s.dirs[dir]
	if d == nil {
		d = &dirRounds{}
		s.dirs[dir] = d
	}
	if d.next == nil {
		d.next = &round{done: make(chan struct{})}
	}
	r := d.next
	if !d.running {
		d.running, d.next = true, nil
		go s.run(dir, d, r)
	}
	s.mu.Unlock()
	<-r.done
	return r.err
}

// run does the fsyncs of one directory, round after round, while
// callers keep coming.
func (s *DirSyncer) run(dir string, d *dirRounds, r *round) {
	for r != nil {
		r.err = SyncDir(dir)
		close(r.done)
		s.mu.Lock()
		r, d.next = d.next, nil
		if r == nil {
			d.running = false
			delete(s.dirs, dir)
		}
		s.mu.Unlock()
	}
}

// WriteFile is the package's WriteFile with the directory fsync shared
// through s.
func (s *DirSyncer) WriteFile(tmp, path string, perm os.FileMode, write func(*os.File) error) error {
	return writeFile(tmp, path, perm, write, s.SyncDir)
}

// EnsureDir makes path a directory with mode, owned by uid:gid unless
// uid is negative, whatever was there: created if missing, its owner
// and mode set if not. A symbolic link or a file in its place is an
// error, never followed.
func EnsureDir(path string, mode os.FileMode, uid, gid int) error {
	if err := os.MkdirAll(path, mode&os.ModePerm); err != nil {
		return err
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", path)
	}
	if uid >= 0 {
		if err := os.Lchown(path, uid, gid); err != nil {
			return err
		}
	}
	// os.Chmod maps os.ModeSticky to S_ISVTX
	return os.Chmod(path, mode)
}
