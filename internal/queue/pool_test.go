package queue

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// inode returns the inode number of path.
func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func freeEntries(t *testing.T, s *Store) int {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(s.Root, DirFree))
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// A delivered message's files and directory are reused, but only after
// a sync has made their release durable.
func TestPoolReusesAfterSync(t *testing.T) {
	s := newTestStore(t)
	id, envs := commitOne(t, s, "a@example.org")
	body, dir := inode(t, s.BodyPath(id)), inode(t, s.messageDir(id))
	evp := inode(t, s.envelopePath(envs[0].ID))
	if err := s.Remove(envs[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.messageDir(id)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("message directory left: %v", err)
	}
	if n := freeEntries(t, s); n != 3 {
		t.Fatalf("%d entries in free/, want 3", n)
	}
	// no sync since the release: a new message gets new inodes
	id2, f2, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	f2.Close()
	if got := inode(t, s.temporaryPath(id2)); got == body || got == evp {
		t.Fatal("a released file reused before a sync")
	}
	s.Discard(id2)
	// the commit's syncs make the release durable; the next message
	// takes the free inodes
	commitOne(t, s, "b@example.org")
	id3, envs3 := commitOne(t, s, "c@example.org")
	reused := map[uint64]bool{body: true, evp: true, dir: true}
	got := []uint64{inode(t, s.BodyPath(id3)), inode(t, s.envelopePath(envs3[0].ID)), inode(t, s.messageDir(id3))}
	n := 0
	for _, ino := range got {
		if reused[ino] {
			n++
		}
	}
	if n != 3 {
		t.Fatalf("%d of the message's 3 inodes reused, want all", n)
	}
	// a reused file holds its new content only
	data, err := os.ReadFile(s.BodyPath(id3))
	if err != nil || string(data) != "Subject: x\r\n\r\nbody\r\n" {
		t.Fatalf("reused body %q, %v", data, err)
	}
	rec, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Envelopes) != 2 || rec.Corrupt != 0 {
		t.Fatalf("recovery %+v", rec)
	}
}

// A failed sync keeps released entries pending; Load forgets them and
// empties free/.
func TestPoolSyncFailureAndLoad(t *testing.T) {
	s := newTestStore(t)
	_, envs := commitOne(t, s, "a@example.org")
	s.Remove(envs[0])
	sync := s.Sync
	s.Sync = func() error { return errors.New("disk on fire") }
	id, f, _ := s.Create()
	f.Close()
	if errs := s.Commit([]Message{{ID: id}}); errs[0] == nil {
		t.Fatal("commit without a sync succeeded")
	}
	if len(s.pool.files) != 0 || len(s.pool.pendingFiles) != 2 || len(s.pool.pendingDirs) != 1 {
		t.Fatalf("after a failed sync: %d reusable, %d+%d pending", len(s.pool.files), len(s.pool.pendingFiles), len(s.pool.pendingDirs))
	}
	s.Sync = sync
	if _, err := s.Load(); err != nil {
		t.Fatal(err)
	}
	if n := freeEntries(t, s); n != 0 || len(s.pool.pendingFiles)+len(s.pool.files) != 0 {
		t.Fatalf("after Load: %d entries in free/, pool %+v", n, s.pool)
	}
}

// The pool is bounded; a message larger than poolMaxBody is removed.
func TestPoolBounds(t *testing.T) {
	s := newTestStore(t)
	id, envs := commitOne(t, s, "a@example.org")
	if err := os.Truncate(s.BodyPath(id), poolMaxBody+1); err != nil {
		t.Fatal(err)
	}
	s.Remove(envs[0])
	if n := freeEntries(t, s); n != 2 {
		t.Fatalf("%d entries in free/, want the envelope and the directory", n)
	}
	for range poolLimit {
		s.pool.pendingFiles = append(s.pool.pendingFiles, "x")
	}
	_, envs = commitOne(t, s, "b@example.org")
	s.Remove(envs[0])
	if n := freeEntries(t, s); n != 3 {
		t.Fatalf("%d entries in free/, want only the second directory added", n)
	}
}

// A spool without free/ works as before.
func TestPoolAbsent(t *testing.T) {
	s := newTestStore(t)
	if err := os.Remove(filepath.Join(s.Root, DirFree)); err != nil {
		t.Fatal(err)
	}
	s2, err := NewStore(s.Root)
	if err != nil {
		t.Fatal(err)
	}
	id, envs := commitOne(t, s2, "a@example.org")
	if err := s2.Remove(envs[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s2.messageDir(id)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("message directory left: %v", err)
	}
	if _, err := s2.Load(); err != nil {
		t.Fatal(err)
	}
}
