package queue

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"smtpd/internal/envelope"
)

func newTestStore(t *testing.T) *Store {
	t.Helper()
	dir := t.TempDir()
	if err := PrepareSpool(dir, -1, -1); err != nil {
		t.Fatal(err)
	}
	s, err := NewStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func commitOne(t *testing.T, s *Store, rcpts ...string) (uint32, []*envelope.Envelope) {
	t.Helper()
	id, f, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("Subject: x\r\n\r\nbody\r\n")
	f.Close()
	var envs []*envelope.Envelope
	for i, r := range rcpts {
		envs = append(envs, &envelope.Envelope{ID: uint64(id)<<32 | uint64(i+1), Kind: envelope.MDA, Dest: r, Created: time.Unix(1, 0)})
	}
	if err := s.Stage(id, envs); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := s.Publish(id); err != nil {
		t.Fatal(err)
	}
	return id, envs
}

func TestStoreLifecycle(t *testing.T) {
	s := newTestStore(t)
	id, envs := commitOne(t, s, "a@example.org", "b@example.org")
	// an uncommitted message and a staged one are purged at start
	s.Create()
	id3, f3, _ := s.Create()
	f3.Close()
	s.Stage(id3, nil)
	rec, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Envelopes) != 2 || rec.Purged != 2 || rec.Corrupt != 0 {
		t.Fatalf("recovery %+v", rec)
	}
	for _, d := range []string{DirTemporary, DirIncoming, DirPurge} {
		if left, _ := os.ReadDir(filepath.Join(s.Root, d)); len(left) != 0 {
			t.Errorf("%s not empty: %v", d, left)
		}
	}
	envs[0].Retries = 2
	if err := s.Update(envs[0]); err != nil {
		t.Fatal(err)
	}
	rec, _ = s.Load()
	if len(rec.Envelopes) != 2 || rec.Envelopes[0].Retries+rec.Envelopes[1].Retries != 2 {
		t.Fatalf("after update %+v", rec.Envelopes)
	}
	s.Remove(envs[0])
	if _, err := os.Stat(s.BodyPath(id)); err != nil {
		t.Error("message removed with an envelope left")
	}
	s.Remove(envs[1])
	if _, err := os.Stat(s.messageDir(id)); !os.IsNotExist(err) {
		t.Errorf("message kept after its last envelope: %v", err)
	}
}

func TestStoreQuarantine(t *testing.T) {
	s := newTestStore(t)
	id, envs := commitOne(t, s, "a@example.org", "b@example.org")
	bad := filepath.Join(s.messageDir(id), "0000000000000000")
	os.WriteFile(filepath.Join(s.messageDir(id), fmtID(envs[1].ID)), []byte("garbage"), 0o600)
	os.WriteFile(bad+".tmp", []byte("half an update"), 0o600)
	rec, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Envelopes) != 1 || rec.Corrupt != 1 || len(rec.Problems) != 1 {
		t.Fatalf("recovery %+v", rec)
	}
	q := filepath.Join(s.Root, DirCorrupt, msgName(id))
	for _, f := range []string{fmtID(envs[1].ID), "message"} {
		if _, err := os.Stat(filepath.Join(q, f)); err != nil {
			t.Errorf("quarantine lacks %s: %v", f, err)
		}
	}
	if _, err := os.Stat(bad + ".tmp"); !os.IsNotExist(err) {
		t.Error("leftover .tmp kept")
	}
	// a message directory without its body goes to corrupt/ whole
	id2, _ := commitOne(t, s, "c@example.org")
	os.Remove(s.BodyPath(id2))
	rec, _ = s.Load()
	if rec.Corrupt != 1 {
		t.Errorf("message without body: %+v", rec)
	}
	if _, err := os.Stat(filepath.Join(s.Root, DirCorrupt, msgName(id2))); err != nil {
		t.Error(err)
	}
}

func fmtID(id uint64) string { return fmt.Sprintf("%016x", id) }
