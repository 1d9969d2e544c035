package safeio

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

func writeString(s string) func(*os.File) error {
	return func(f *os.File) error {
		_, err := f.WriteString(s)
		return err
	}
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "file")
	for _, content := range []string{"first", "second, replacing the first"} {
		if err := WriteFile(filepath.Join(dir, ".file"), path, 0o600, writeString(content)); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != content {
			t.Fatalf("got %q, %v; want %q", got, err, content)
		}
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode() != 0o600 {
		t.Errorf("mode %v, %v", fi.Mode(), err)
	}
	assertOnly(t, dir, "file")
}

// TestWriteFileAcrossDirs is the maildir shape: written in tmp/, renamed
// into new/ under the same name.
func TestWriteFileAcrossDirs(t *testing.T) {
	dir := t.TempDir()
	for _, sub := range []string{"tmp", "new"} {
		os.Mkdir(filepath.Join(dir, sub), 0o700)
	}
	if err := WriteFile(filepath.Join(dir, "tmp", "m"), filepath.Join(dir, "new", "m"), 0o600, writeString("mail")); err != nil {
		t.Fatal(err)
	}
	assertOnly(t, filepath.Join(dir, "tmp"))
	assertOnly(t, filepath.Join(dir, "new"), "m")
}

// TestErrors injects a failure at each step: the error comes back, no
// temporary file survives, and the file in place keeps its content.
func TestErrors(t *testing.T) {
	errWrite := errors.New("write failed")
	cases := []struct {
		name  string
		setup func(t *testing.T, dir string) // before the write
		write func(*os.File) error
		want  error
	}{
		{name: "write fails", write: func(f *os.File) error {
			f.WriteString("half")
			return errWrite
		}, want: errWrite},
		{name: "sync fails", write: func(f *os.File) error {
			f.WriteString("all")
			return f.Close() // fsync of a closed file fails
		}, want: os.ErrClosed},
		{name: "rename fails", setup: func(t *testing.T, dir string) {
			// a directory that is not empty cannot be replaced
			os.Remove(filepath.Join(dir, "file"))
			os.MkdirAll(filepath.Join(dir, "file", "x"), 0o700)
		}, write: writeString("new")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "file")
			os.WriteFile(path, []byte("old"), 0o600)
			if c.setup != nil {
				c.setup(t, dir)
			}
			err := WriteFile(filepath.Join(dir, ".file"), path, 0o600, c.write)
			if err == nil || c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			assertOnly(t, dir, "file")
			if c.setup == nil {
				if got, _ := os.ReadFile(path); string(got) != "old" {
					t.Errorf("file in place changed to %q", got)
				}
			}
		})
	}
}

// TestTempTaken refuses a temporary name that exists, and leaves alone
// what is there: in a shared directory it may be another user's, or a
// link to a file the caller must not write.
func TestTempTaken(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	os.WriteFile(victim, []byte("keep"), 0o600)
	tmp := filepath.Join(dir, ".file")
	os.Symlink(victim, tmp)
	if err := WriteFile(tmp, filepath.Join(dir, "file"), 0o600, writeString("x")); !errors.Is(err, os.ErrExist) {
		t.Fatalf("got %v, want %v", err, os.ErrExist)
	}
	if got, _ := os.ReadFile(victim); string(got) != "keep" {
		t.Errorf("link followed: %q", got)
	}
	if _, err := os.Lstat(tmp); err != nil {
		t.Errorf("someone else's temporary file removed: %v", err)
	}
	assertOnly(t, dir, ".file", "victim")
}

func TestSyncDir(t *testing.T) {
	dir := t.TempDir()
	if err := SyncDir(dir); err != nil {
		t.Fatal(err)
	}
	if err := SyncDir(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing directory: %v", err)
	}
}

// assertOnly checks that dir holds exactly names.
func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if !slices.Equal(got, names) {
		t.Fatalf("%s holds %v, want %v", dir, got, names)
	}
}

// TestDirSyncerShares: concurrent writers into one directory all get
// their file durable, through shared directory fsyncs, and a directory
// that cannot be synced fails every caller of its round.
func TestDirSyncerShares(t *testing.T) {
	dir := t.TempDir()
	var s DirSyncer
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := filepath.Join(dir, fmt.Sprintf("f%d", i))
			errs <- s.WriteFile(name+".tmp", name, 0o600, func(f *os.File) error {
				_, err := f.WriteString("x")
				return err
			})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 50 {
		t.Errorf("%d files, want 50", len(entries))
	}
	if err := s.SyncDir(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing directory synced")
	}
}

// OpenFile and Rename report errors as os.OpenFile and os.Rename do, so
// that errors.Is finds fs.ErrExist and fs.ErrNotExist; files they open
// are not inherited by programs the process starts.
func TestOpenFileAndRename(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	f, err := OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("data"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm()&^0o640 != 0 || fi.Size() != 4 {
		t.Fatalf("created %v, %v", fi, err)
	}
	if _, err := OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600); !errors.Is(err, os.ErrExist) {
		t.Errorf("exclusive create of an existing file: %v", err)
	}
	if _, err := Open(filepath.Join(dir, "none")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("open of a missing file: %v", err)
	}
	r, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if flags, err := unix.FcntlInt(r.Fd(), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("descriptor flags %#x, %v: want close-on-exec", flags, err)
	}
	if err := Rename(p, filepath.Join(dir, "g")); err != nil {
		t.Fatal(err)
	}
	if err := Rename(p, filepath.Join(dir, "h")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("rename of a missing file: %v", err)
	}
}
