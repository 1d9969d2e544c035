package queue

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"

	"smtpd/internal/safeio"
)

// Why the spool recycles its files and directories.
//
// Each message costs the spool three new inodes (its body, its
// directory, an envelope per recipient) that are freed again once it is
// delivered. Allocating an inode is cheap on most file systems, but not
// on ext4 without a journal, a common layout of virtual machines: there,
// to keep a crash from handing the blocks of a file deleted a moment ago
// to a new one, the allocator skips every inode freed in the last minute
// (up to six while the inode table is not written back), reading the
// inode table for each. Under a steady flow of mail, every allocation
// then walks thousands of recently freed inodes; perf showed that walk
// (find_inode_bit, recently_deleted) at a quarter of the machine's CPU
// at 800 messages/s, more than the rest of the spool's work together.
//
// So a delivered message's body, envelopes and directory are renamed
// into free/ instead of being removed, and the next message's are
// renamed out of it, truncated when opened. A rename allocates nothing.
//
// The hazard the allocator guards against is ours to guard against
// now: were a body renamed to free/ and reused for the next message
// before the rename reached the disk, a crash could leave the old
// message's directory naming a file that holds part of the new message,
// and old envelopes whose removal was lost too would deliver it to the
// wrong recipients. An entry therefore becomes reusable only once a
// whole-file-system sync that began after its release has returned
// (Store.syncAll, at every commit); until then it waits in pending.
// free/ is emptied at start-up (Store.Load), so what a crash leaves
// there is never reused either.
//
// A body is released with its last envelope, once every delivery has
// reported, when mta and mda are done reading it; a descriptor still
// open on it (root's `smtpctl show message` at that moment) sees the
// next message's bytes once the file is reused, as root could read them
// in the spool.

// DirFree holds the files and directories the spool is done with, for
// reuse (see inodePool).
const DirFree = "free"

// poolLimit bounds each kind of free entry: enough for the messages
// delivered between two commits at a few thousand messages per second;
// beyond it entries are removed as before.
const poolLimit = 512

// poolMaxBody is the largest body kept for reuse: a free file keeps its
// blocks until it is reused, and the pool should not hold much disk.
const poolMaxBody = 256 << 10

// inodePool is the free/ directory of a spool: entries ready for reuse
// and entries released since the last sync began.
type inodePool struct {
	dir string

	mu                        sync.Mutex
	next                      uint64
	files, dirs               []string // reusable
	pendingFiles, pendingDirs []string // released, not yet durable
}

// newInodePool opens free/ under root, or returns nil when the spool
// has none (a spool prepared before it existed: nothing is recycled
// until PrepareSpool has run).
func newInodePool(root string) *inodePool {
	dir := filepath.Join(root, DirFree)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil
	}
	return &inodePool{dir: dir}
}

// reset empties free/ and forgets every entry: at start-up, when what a
// crash left there may not be durable.
func (p *inodePool) reset() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.files, p.dirs, p.pendingFiles, p.pendingDirs = nil, nil, nil, nil
	entries, _ := os.ReadDir(p.dir)
	for _, e := range entries {
		os.RemoveAll(filepath.Join(p.dir, e.Name()))
	}
}

// take renames a reusable entry (a directory if dir) to dst, which must
// not exist. It reports false when there is none, or when the rename
// fails for another reason than dst existing, which it returns as
// fs.ErrExist; the caller then makes a new one.
func (p *inodePool) take(dir bool, dst string) (bool, error) {
	if p == nil {
		return false, nil
	}
	p.mu.Lock()
	list := &p.files
	if dir {
		list = &p.dirs
	}
	n := len(*list)
	if n == 0 {
		p.mu.Unlock()
		return false, nil
	}
	name := (*list)[n-1]
	*list = (*list)[:n-1]
	p.mu.Unlock()
	err := unix.Renameat2(unix.AT_FDCWD, name, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.EEXIST):
		p.mu.Lock()
		*list = append(*list, name)
		p.mu.Unlock()
		return false, fs.ErrExist
	default:
		// the file system cannot rename without replacing, or the
		// entry is gone: drop it and make a new one
		os.RemoveAll(name)
		return false, nil
	}
}

// release moves path (a directory if dir, which must be empty) into
// free/, pending until the next sync, or removes it when the pool is
// full or absent.
func (p *inodePool) release(dir bool, path string) error {
	if p == nil {
		return removeEntry(path)
	}
	p.mu.Lock()
	full := len(p.files)+len(p.pendingFiles) >= poolLimit
	if dir {
		full = len(p.dirs)+len(p.pendingDirs) >= poolLimit
	}
	p.next++
	name := filepath.Join(p.dir, fmt.Sprintf("%d", p.next))
	p.mu.Unlock()
	if full {
		return removeEntry(path)
	}
	if err := safeio.Rename(path, name); err != nil {
		return removeEntry(path)
	}
	p.mu.Lock()
	if dir {
		p.pendingDirs = append(p.pendingDirs, name)
	} else {
		p.pendingFiles = append(p.pendingFiles, name)
	}
	p.mu.Unlock()
	return nil
}

// removeEntry removes a file or an empty directory; one already gone is
// not an error.
func removeEntry(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// syncing is what a sync makes durable: the entries pending when it
// began.
type syncing struct{ files, dirs []string }

// beginSync takes the pending entries, before a sync starts.
func (p *inodePool) beginSync() syncing {
	if p == nil {
		return syncing{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	s := syncing{p.pendingFiles, p.pendingDirs}
	p.pendingFiles, p.pendingDirs = nil, nil
	return s
}

// endSync makes the entries of s reusable if the sync succeeded, and
// keeps them pending otherwise.
func (p *inodePool) endSync(s syncing, ok bool) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if ok {
		p.files = append(p.files, s.files...)
		p.dirs = append(p.dirs, s.dirs...)
		return
	}
	p.pendingFiles = append(p.pendingFiles, s.files...)
	p.pendingDirs = append(p.pendingDirs, s.dirs...)
}
