package queue

import (
	"errors"
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
	if err := s.Commit([]Message{{ID: id, Envelopes: envs}})[0]; err != nil {
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
	s.stage(Message{ID: id3}, make([]byte, 512))
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
	os.WriteFile(filepath.Join(s.messageDir(id), envelope.FormatEvpID(envs[1].ID)), []byte("garbage"), 0o600)
	os.WriteFile(bad+".tmp", []byte("half an update"), 0o600)
	rec, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Envelopes) != 1 || rec.Corrupt != 1 || len(rec.Problems) != 1 {
		t.Fatalf("recovery %+v", rec)
	}
	q := filepath.Join(s.Root, DirCorrupt, envelope.FormatMsgID(id))
	for _, f := range []string{envelope.FormatEvpID(envs[1].ID), "message"} {
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
	if _, err := os.Stat(filepath.Join(s.Root, DirCorrupt, envelope.FormatMsgID(id2))); err != nil {
		t.Error(err)
	}
}

// TestCommitSyncs checks the group commit: a batch costs two syncs
// whatever its size, and a failed sync takes the whole batch back.
func TestCommitSyncs(t *testing.T) {
	s := newTestStore(t)
	syncs := 0
	var syncErr error
	s.Sync = func() error {
		syncs++
		return syncErr
	}
	batch := func() []Message {
		var msgs []Message
		for range 3 {
			id, f, err := s.Create()
			if err != nil {
				t.Fatal(err)
			}
			f.Close()
			msgs = append(msgs, Message{ID: id, Envelopes: []*envelope.Envelope{{ID: envelope.NewEvpID(id), Kind: envelope.MDA, Dest: "r@example.org"}}})
		}
		return msgs
	}
	for _, err := range s.Commit(batch()) {
		if err != nil {
			t.Fatal(err)
		}
	}
	if syncs != 1 {
		t.Errorf("%d syncs for a batch of 3, want 1", syncs)
	}
	syncErr = errors.New("disk on fire")
	for _, err := range s.Commit(batch()) {
		if !errors.Is(err, syncErr) {
			t.Errorf("commit despite a failed sync: %v", err)
		}
	}
	for _, d := range []string{DirTemporary, DirIncoming} {
		if left, _ := os.ReadDir(filepath.Join(s.Root, d)); len(left) != 0 {
			t.Errorf("%s keeps %v", d, left)
		}
	}
	syncErr = nil
	if rec, err := s.Load(); err != nil || len(rec.Envelopes) != 3 {
		t.Errorf("after a failed batch: %+v, %v", rec, err)
	}
}

// A crash between a batch's sync and the moves into queue/ leaves
// committed messages in incoming/: Load moves on those it finds whole
// and purges those a crash cut short.
func TestLoadRecoversCommitted(t *testing.T) {
	s := newTestStore(t)
	stage := func(body string, rcpts int, quarantine string) (uint32, []*envelope.Envelope) {
		t.Helper()
		id, f, err := s.Create()
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(body)
		f.Close()
		var envs []*envelope.Envelope
		for i := range rcpts {
			envs = append(envs, &envelope.Envelope{ID: uint64(id)<<32 | uint64(i+1), Kind: envelope.MDA, Dest: "r@example.org"})
		}
		if err := s.stage(Message{ID: id, Envelopes: envs, Quarantine: quarantine}, make([]byte, 7)); err != nil {
			t.Fatal(err)
		}
		return id, envs
	}
	whole, _ := stage("Subject: whole\r\n\r\nbody\r\n", 2, "")
	held, _ := stage("Subject: held\r\n\r\nbody\r\n", 1, "spam")
	cut, _ := stage("Subject: cut\r\n\r\nbody\r\n", 1, "")
	os.Truncate(filepath.Join(s.incomingDir(cut), "message"), 5)
	changed, _ := stage("Subject: changed\r\n\r\nbody\r\n", 1, "")
	os.WriteFile(filepath.Join(s.incomingDir(changed), "message"), []byte("Subject: chanGed\r\n\r\nbody\r\n"), 0o600)
	short, envs := stage("Subject: short\r\n\r\nbody\r\n", 2, "")
	os.Remove(filepath.Join(s.incomingDir(short), envelope.FormatEvpID(envs[1].ID)))
	unsealed, envs := stage("Subject: unsealed\r\n\r\nbody\r\n", 1, "")
	p := filepath.Join(s.incomingDir(unsealed), envelope.FormatEvpID(envs[0].ID))
	data, _ := os.ReadFile(p)
	os.WriteFile(p, data[:len(data)-len("check: 00000000\n")], 0o600)
	noreason, _ := stage("Subject: noreason\r\n\r\nbody\r\n", 1, "spam")
	os.Remove(filepath.Join(s.incomingDir(noreason), "reason"))

	rec, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if rec.Recovered != 2 || rec.Purged != 5 || len(rec.Envelopes) != 2 || rec.Corrupt != 0 {
		t.Fatalf("recovery %+v", rec)
	}
	for _, e := range rec.Envelopes {
		if e.MsgID() != whole {
			t.Errorf("recovered envelope %s of another message", envelope.FormatEvpID(e.ID))
		}
	}
	if _, err := os.Stat(s.BodyPath(whole)); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(filepath.Join(s.Root, DirQuarantine, envelope.FormatMsgID(held), "reason")); err != nil {
		t.Error(err)
	}
	if left, _ := os.ReadDir(filepath.Join(s.Root, DirIncoming)); len(left) != 0 {
		t.Errorf("incoming/ keeps %v", left)
	}
}

// TestUpdateLeavesNoTemporary checks that an update leaves the envelope
// alone in its directory, and refuses an envelope that was removed.
func TestUpdateLeavesNoTemporary(t *testing.T) {
	s := newTestStore(t)
	id, envs := commitOne(t, s, "a@example.org")
	envs[0].Retries = 1
	if err := s.Update(envs[0]); err != nil {
		t.Fatal(err)
	}
	names, _ := filepath.Glob(filepath.Join(s.messageDir(id), "*"))
	if len(names) != 2 {
		t.Errorf("message directory holds %v", names)
	}
	os.RemoveAll(s.messageDir(id))
	if err := s.Update(envs[0]); err == nil {
		t.Error("update of a removed message succeeded")
	}
}
