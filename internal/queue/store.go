package queue

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	"golang.org/x/sys/unix"

	"smtpd/internal/envelope"
	"smtpd/internal/monkey"
)

// ErrNoSpace is returned when the spool's file system is nearly full.
var ErrNoSpace = errors.New("queue: spool file system nearly full")

// MinFreePercent is the share of free blocks and inodes below which new
// mail is refused with a temporary error, as OpenSMTPD does.
const MinFreePercent = 5

// Store is the spool on disk. Root is the spool directory: "/" once the
// queue process is chrooted into it.
type Store struct {
	Root string
	// Sync makes everything written to the spool durable. It is
	// syncfs(2) on the spool's file system, shared by every message of a
	// commit batch.
	Sync func() error
}

// NewStore opens the spool at root.
func NewStore(root string) (*Store, error) {
	// the spool itself is not readable by the queue user: any directory
	// on the same file system does for syncfs
	d, err := os.Open(filepath.Join(root, DirQueue))
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	s := &Store{Root: root}
	s.Sync = func() error {
		if err := monkey.Fail("queue.sync"); err != nil {
			return err
		}
		if err := unix.Syncfs(int(d.Fd())); err != nil {
			return fmt.Errorf("queue: syncfs: %w", err)
		}
		return nil
	}
	return s, nil
}

func (s *Store) path(parts ...string) string {
	return filepath.Join(append([]string{s.Root}, parts...)...)
}

func msgName(id uint32) string { return fmt.Sprintf("%08x", id) }

func bucket(id uint32) string { return fmt.Sprintf("%02x", id>>24) }

// messageDir is where a committed message lives.
func (s *Store) messageDir(id uint32) string {
	return s.path(DirQueue, bucket(id), msgName(id))
}

// BodyPath is the committed body of message id.
func (s *Store) BodyPath(id uint32) string { return filepath.Join(s.messageDir(id), "message") }

func randomU32() uint32 {
	var b [4]byte
	for {
		rand.Read(b[:])
		if v := binary.LittleEndian.Uint32(b[:]); v != 0 {
			return v
		}
	}
}

// CheckSpace refuses new mail when less than MinFreePercent of the
// blocks or inodes of the spool's file system are free.
func (s *Store) CheckSpace() error {
	var st unix.Statfs_t
	if err := unix.Statfs(s.Root, &st); err != nil {
		return fmt.Errorf("queue: statfs: %w", err)
	}
	if st.Blocks > 0 && st.Bavail*100 < st.Blocks*MinFreePercent {
		return ErrNoSpace
	}
	if st.Files > 0 && st.Ffree*100 < st.Files*MinFreePercent {
		return ErrNoSpace
	}
	return nil
}

// Create makes a new message: a unique id and its body file in
// temporary/, created exclusively.
func (s *Store) Create() (uint32, *os.File, error) {
	if err := monkey.Fail("queue.write"); err != nil {
		return 0, nil, err
	}
	if err := s.CheckSpace(); err != nil {
		return 0, nil, err
	}
	for range 100 {
		id := randomU32()
		if _, err := os.Lstat(s.messageDir(id)); err == nil {
			continue
		}
		f, err := os.OpenFile(s.path(DirTemporary, msgName(id)), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return 0, nil, fmt.Errorf("queue: create: %w", err)
		}
		return id, f, nil
	}
	return 0, nil, errors.New("queue: no free message id")
}

// Discard removes a message that was never committed.
func (s *Store) Discard(id uint32) {
	os.Remove(s.path(DirTemporary, msgName(id)))
	os.RemoveAll(s.path(DirIncoming, msgName(id)))
}

// Stage is the first step of a commit: the message's envelopes and body
// go into incoming/<msgid>/. Nothing is durable until Sync.
func (s *Store) Stage(id uint32, envs []*envelope.Envelope) error {
	if err := monkey.Fail("queue.write"); err != nil {
		return err
	}
	dir := s.path(DirIncoming, msgName(id))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("queue: stage: %w", err)
	}
	for _, e := range envs {
		if err := writeEnvelope(filepath.Join(dir, fmt.Sprintf("%016x", e.ID)), e, false); err != nil {
			return err
		}
	}
	if err := os.Rename(s.path(DirTemporary, msgName(id)), filepath.Join(dir, "message")); err != nil {
		return fmt.Errorf("queue: stage: %w", err)
	}
	return nil
}

// Publish is the second step: the staged message moves into queue/. Its
// content must be durable already (Sync after Stage), so that once the
// rename is durable (Sync after Publish) the message is whole.
func (s *Store) Publish(id uint32) error {
	if err := monkey.Fail("queue.rename"); err != nil {
		return err
	}
	b := s.path(DirQueue, bucket(id))
	if err := os.Mkdir(b, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("queue: publish: %w", err)
	}
	if err := os.Rename(s.path(DirIncoming, msgName(id)), s.messageDir(id)); err != nil {
		return fmt.Errorf("queue: publish: %w", err)
	}
	return nil
}

// writeEnvelope writes an envelope through a temporary file and a
// rename, so a reader never sees half of one; with sync set the file is
// made durable before the rename.
func writeEnvelope(path string, e *envelope.Envelope, sync bool) error {
	data, err := e.Marshal()
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("queue: envelope: %w", err)
	}
	_, err = f.Write(data)
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("queue: envelope: %w", err)
	}
	return nil
}

// Update rewrites a committed envelope durably.
func (s *Store) Update(e *envelope.Envelope) error {
	if err := monkey.Fail("queue.update"); err != nil {
		return err
	}
	return writeEnvelope(filepath.Join(s.messageDir(e.MsgID()), fmt.Sprintf("%016x", e.ID)), e, true)
}

// Remove deletes a delivered envelope, and its message once it was the
// last. A crash in between leaves a message without envelopes, which
// Load removes.
func (s *Store) Remove(e *envelope.Envelope) error {
	dir := s.messageDir(e.MsgID())
	if err := os.Remove(filepath.Join(dir, fmt.Sprintf("%016x", e.ID))); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("queue: remove: %w", err)
	}
	names, err := envelopeNames(dir)
	if err == nil && len(names) == 0 {
		os.Remove(filepath.Join(dir, "message"))
		os.Remove(dir)
	}
	return nil
}

func envelopeNames(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if _, err := strconv.ParseUint(e.Name(), 16, 64); err == nil && len(e.Name()) == 16 {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// Recovery is what Load found.
type Recovery struct {
	Envelopes []*envelope.Envelope
	// Purged counts never-committed messages removed; Corrupt the
	// envelopes or messages moved to corrupt/.
	Purged, Corrupt int
	Problems        []string
}

// Load recovers the spool at start-up: uncommitted messages in
// temporary/ and incoming/ were never acknowledged and go; every
// envelope in queue/ is read; unreadable ones move to corrupt/ and are
// reported, never dropped.
func (s *Store) Load() (*Recovery, error) {
	rec := &Recovery{}
	for _, d := range []string{DirTemporary, DirIncoming} {
		entries, err := os.ReadDir(s.path(d))
		if err != nil {
			return nil, fmt.Errorf("queue: load: %w", err)
		}
		for _, e := range entries {
			if err := os.Rename(s.path(d, e.Name()), s.path(DirPurge, d+"."+e.Name())); err != nil {
				return nil, fmt.Errorf("queue: purge: %w", err)
			}
			rec.Purged++
		}
	}
	if entries, err := os.ReadDir(s.path(DirPurge)); err == nil {
		for _, e := range entries {
			os.RemoveAll(s.path(DirPurge, e.Name()))
		}
	}
	buckets, err := os.ReadDir(s.path(DirQueue))
	if err != nil {
		return nil, fmt.Errorf("queue: load: %w", err)
	}
	for _, b := range buckets {
		msgs, err := os.ReadDir(s.path(DirQueue, b.Name()))
		if err != nil {
			return nil, fmt.Errorf("queue: load: %w", err)
		}
		for _, m := range msgs {
			s.loadMessage(rec, filepath.Join(DirQueue, b.Name(), m.Name()))
		}
	}
	return rec, nil
}

func (s *Store) loadMessage(rec *Recovery, rel string) {
	dir := s.path(rel)
	names, err := envelopeNames(dir)
	if err != nil {
		rec.Problems = append(rec.Problems, fmt.Sprintf("%s: %v", rel, err))
		return
	}
	// leftovers of an interrupted envelope update
	if tmps, _ := filepath.Glob(filepath.Join(dir, "*.tmp")); len(tmps) > 0 {
		for _, t := range tmps {
			os.Remove(t)
		}
	}
	if len(names) == 0 {
		os.Remove(filepath.Join(dir, "message"))
		os.Remove(dir)
		return
	}
	if _, err := os.Stat(filepath.Join(dir, "message")); err != nil {
		s.quarantine(rec, rel, "", fmt.Sprintf("%s: no message file", rel))
		return
	}
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join(dir, n))
		var e *envelope.Envelope
		if err == nil {
			e, err = envelope.Unmarshal(data)
		}
		if err == nil && fmt.Sprintf("%016x", e.ID) != n {
			err = fmt.Errorf("envelope id %016x in file %s", e.ID, n)
		}
		if err != nil {
			s.quarantine(rec, rel, n, fmt.Sprintf("%s/%s: %v", rel, n, err))
			continue
		}
		rec.Envelopes = append(rec.Envelopes, e)
	}
}

// quarantine moves an envelope (or a whole message when name is "") to
// corrupt/, keeping a copy of the body with it.
func (s *Store) quarantine(rec *Recovery, rel, name, problem string) {
	rec.Corrupt++
	rec.Problems = append(rec.Problems, problem)
	msg := filepath.Base(rel)
	dst := s.path(DirCorrupt, msg)
	if name == "" {
		if err := os.Rename(s.path(rel), dst); err != nil {
			rec.Problems = append(rec.Problems, fmt.Sprintf("%s: cannot quarantine: %v", rel, err))
		}
		return
	}
	os.MkdirAll(dst, 0o700)
	if err := os.Rename(filepath.Join(s.path(rel), name), filepath.Join(dst, name)); err != nil {
		rec.Problems = append(rec.Problems, fmt.Sprintf("%s/%s: cannot quarantine: %v", rel, name, err))
		return
	}
	os.Link(filepath.Join(s.path(rel), "message"), filepath.Join(dst, "message"))
}
