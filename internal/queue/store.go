package queue

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"smtpd/internal/envelope"
	"smtpd/internal/monkey"
	"smtpd/internal/safeio"
)

// ErrNoSpace is returned when the spool's file system is nearly full.
var ErrNoSpace = errors.New("queue: spool file system nearly full")

// MinFreePercent is the share of free blocks and inodes below which new
// mail is refused with a temporary error, as OpenSMTPD does.
const MinFreePercent = 5

// Store is the spool on disk. Root is the spool directory: "/" once the
// queue process is chrooted into it.
//
// What is made durable when is decided here, and only here:
//
//   - New messages are committed in batches (Commit). Each message is
//     staged into incoming/<msgid>/ (its envelopes written, its body
//     renamed in) without a sync of its own; one Sync makes every file
//     and directory staged by the batch durable, and the batch is
//     committed: none is reported committed before it returns, since
//     its 250 waits for that (RFC 5321 §6.1). One sync per batch,
//     whatever its size: concurrent commits share it (group commit).
//     Each message then moves to queue/<XX>/<msgid>, a move the next
//     sync makes durable, whichever comes first.
//   - So after a crash incoming/ may hold committed messages beside
//     ones whose commit the crash cut short, which were never
//     acknowledged. Every envelope records its message's commit (body
//     size and CRC-32C, number of envelopes, quarantine) and ends with
//     its own checksum: Load moves on into queue/ the messages found
//     whole, and purges the others.
//   - An envelope update (Update) goes through safeio.WriteFile, which
//     fsyncs the new file and its message directory: a retry count or a
//     delay warning, once recorded, is not forgotten by a crash.
//   - Removals (Remove) and start-up moves (Load) are not synced: after
//     a crash a delivered envelope may come back and be delivered again,
//     a duplicate rather than a loss; a purge or a quarantine is redone
//     by the next Load.
type Store struct {
	Root string
	// Sync makes everything written to the spool durable: syncfs(2) on
	// the spool's file system, a field so that tests can count or fail
	// it.
	Sync func() error
	// pool recycles the files and directories of delivered messages
	// (see inodePool); nil in a spool without free/.
	pool *inodePool
	// spaceOK is when CheckSpace last found room (Unix nanoseconds):
	// within spaceRecheck of it the answer stands.
	spaceOK atomic.Int64
	// buckets has bit i set once queue/<i> is known to exist.
	buckets [4]atomic.Uint64
}

// spaceRecheck is how long a CheckSpace that found room holds: a
// statfs(2) per message showed in the profiles, and the margin of
// MinFreePercent does not go in a second.
const spaceRecheck = time.Second

// NewStore opens the spool at root.
func NewStore(root string) (*Store, error) {
	// the spool itself is not readable by the queue user: any directory
	// on the same file system does for syncfs
	d, err := os.Open(filepath.Join(root, DirQueue))
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	s := &Store{Root: root, pool: newInodePool(root)}
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

func bucket(id uint32) string { return fmt.Sprintf("%02x", id>>24) }

// messageDir is where a committed message lives.
func (s *Store) messageDir(id uint32) string {
	return s.path(DirQueue, bucket(id), envelope.FormatMsgID(id))
}

// incomingDir is where a message is staged during its commit.
func (s *Store) incomingDir(id uint32) string {
	return s.path(DirIncoming, envelope.FormatMsgID(id))
}

// temporaryPath is the body of a message being received.
func (s *Store) temporaryPath(id uint32) string {
	return s.path(DirTemporary, envelope.FormatMsgID(id))
}

// envelopePath is the file of a committed envelope.
func (s *Store) envelopePath(evpid uint64) string {
	return filepath.Join(s.messageDir(envelope.MsgIDOf(evpid)), envelope.FormatEvpID(evpid))
}

// BodyPath is the committed body of message id.
func (s *Store) BodyPath(id uint32) string { return filepath.Join(s.messageDir(id), "message") }

// CheckSpace refuses new mail when less than MinFreePercent of the
// blocks or inodes of the spool's file system are free.
func (s *Store) CheckSpace() error {
	now := time.Now().UnixNano()
	if now-s.spaceOK.Load() < int64(spaceRecheck) {
		return nil
	}
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
	s.spaceOK.Store(now)
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
		id := envelope.NewMsgID()
		// a message being committed has left temporary/ but is not in
		// queue/ yet: its id is taken too
		if _, err := os.Lstat(s.messageDir(id)); err == nil {
			continue
		}
		if _, err := os.Lstat(s.incomingDir(id)); err == nil {
			continue
		}
		f, err := s.createFile(s.temporaryPath(id), os.O_RDWR)
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

// createFile makes a new, empty file at path, which must not exist: a
// free one renamed there, or a new one. flag is how it is opened.
func (s *Store) createFile(path string, flag int) (*os.File, error) {
	ok, err := s.pool.take(false, path)
	if err != nil {
		return nil, err
	}
	if ok {
		return safeio.OpenFile(path, flag|os.O_TRUNC, 0)
	}
	return safeio.OpenFile(path, flag|os.O_CREATE|os.O_EXCL, 0o600)
}

// makeDir makes a new, empty directory at path, which must not exist:
// a free one renamed there, or a new one.
func (s *Store) makeDir(path string) error {
	ok, err := s.pool.take(true, path)
	if ok || err != nil {
		return err
	}
	return os.Mkdir(path, 0o700)
}

// syncAll is Sync; what the pool released before it began is durable
// once it returns, and can be reused (see inodePool).
func (s *Store) syncAll() error {
	released := s.pool.beginSync()
	err := s.Sync()
	s.pool.endSync(released, err == nil)
	return err
}

// Discard removes a message that was never committed.
func (s *Store) Discard(id uint32) {
	os.Remove(s.temporaryPath(id))
	os.RemoveAll(s.incomingDir(id))
}

// Message is a message to commit: its body, temporary/<ID>, is written
// and closed; Envelopes are its recipients.
type Message struct {
	ID        uint32
	Envelopes []*envelope.Envelope
	// Quarantine, if set, is why a filter kept the message out of
	// delivery: it is committed to quarantine/<msgid>/ with a file
	// "reason" saying so, instead of queue/.
	Quarantine string
}

// Commit moves a batch of messages from temporary/ into queue/, durably,
// as the Store's doc says. It returns an error per message: nil for a
// committed message, in queue/; otherwise what there was of the message
// is gone, and it must not be acknowledged.
func (s *Store) Commit(batch []Message) []error {
	errs := make([]error, len(batch))
	buf := make([]byte, 32<<10)
	for i, m := range batch {
		errs[i] = s.stage(m, buf)
	}
	monkey.Crash("queue.before-sync")
	syncErr := s.syncAll()
	monkey.Crash("queue.after-sync")
	for i, m := range batch {
		if errs[i] == nil {
			errs[i] = syncErr
		}
		if errs[i] == nil {
			errs[i] = s.publish(m.ID, m.Quarantine != "")
		}
		if errs[i] != nil {
			s.Discard(m.ID)
		}
	}
	monkey.Crash("queue.after-publish")
	return errs
}

// stage is the first step of a commit: the message's envelopes and body
// go into incoming/<msgid>/, each envelope with the commit's record
// (see Store). Nothing there is read before it moves to queue/, so the
// envelopes are written in place and the batch's Sync makes them
// durable. buf is room to read the body in.
func (s *Store) stage(m Message, buf []byte) error {
	if err := monkey.Fail("queue.write"); err != nil {
		return err
	}
	info, err := s.bodyInfo(s.temporaryPath(m.ID), buf)
	if err != nil {
		return fmt.Errorf("queue: stage: %w", err)
	}
	info.Envelopes, info.Quarantined = len(m.Envelopes), m.Quarantine != ""
	dir := s.incomingDir(m.ID)
	if err := s.makeDir(dir); err != nil {
		return fmt.Errorf("queue: stage: %w", err)
	}
	for _, e := range m.Envelopes {
		e.Commit = info
		data, err := e.Marshal()
		if err != nil {
			return err
		}
		if err := s.writeNew(filepath.Join(dir, envelope.FormatEvpID(e.ID)), data); err != nil {
			return fmt.Errorf("queue: stage: %w", err)
		}
	}
	if m.Quarantine != "" {
		if err := os.WriteFile(filepath.Join(dir, "reason"), []byte(m.Quarantine+"\n"), 0o600); err != nil {
			return fmt.Errorf("queue: stage: %w", err)
		}
	}
	if err := safeio.Rename(s.temporaryPath(m.ID), filepath.Join(dir, "message")); err != nil {
		return fmt.Errorf("queue: stage: %w", err)
	}
	return nil
}

// writeNew writes data to a new file at path, unsynced.
func (s *Store) writeNew(path string, data []byte) error {
	f, err := s.createFile(path, os.O_WRONLY)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// bodyInfo reads the body at path for its size and CRC-32C.
func (s *Store) bodyInfo(path string, buf []byte) (envelope.CommitInfo, error) {
	var info envelope.CommitInfo
	f, err := safeio.Open(path)
	if err != nil {
		return info, err
	}
	defer f.Close()
	for {
		n, err := f.Read(buf)
		info.Size += int64(n)
		info.CRC = envelope.Checksum(info.CRC, buf[:n])
		if err == io.EOF {
			return info, nil
		}
		if err != nil {
			return info, err
		}
	}
}

// publishedDir is where a committed message lives.
func (s *Store) publishedDir(id uint32, quarantined bool) string {
	if quarantined {
		return s.path(DirQuarantine, envelope.FormatMsgID(id))
	}
	return s.messageDir(id)
}

// publish is the second step: the staged message moves into queue/. Its
// content is durable already (the Sync after stage), so that once the
// rename is durable (the Sync after publish) the message is whole.
func (s *Store) publish(id uint32, quarantined bool) error {
	if err := monkey.Fail("queue.rename"); err != nil {
		return err
	}
	if quarantined {
		if err := safeio.Rename(s.incomingDir(id), s.publishedDir(id, true)); err != nil {
			return fmt.Errorf("queue: publish: %w", err)
		}
		return nil
	}
	i := id >> 24
	known, bit := &s.buckets[i/64], uint64(1)<<(i%64)
	var err error
	for range 2 {
		if known.Load()&bit == 0 {
			b := s.path(DirQueue, bucket(id))
			if err := os.Mkdir(b, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("queue: publish: %w", err)
			}
			known.Or(bit)
		}
		err = safeio.Rename(s.incomingDir(id), s.messageDir(id))
		if !errors.Is(err, fs.ErrNotExist) {
			break
		}
		// the bucket may have gone behind our back: make it again, once
		known.And(^bit)
	}
	if err != nil {
		return fmt.Errorf("queue: publish: %w", err)
	}
	return nil
}

// Update rewrites a committed envelope durably. The temporary file is
// <evpid>.tmp beside it, which Load removes if a crash leaves one.
func (s *Store) Update(e *envelope.Envelope) error {
	if err := monkey.Fail("queue.update"); err != nil {
		return err
	}
	data, err := e.Marshal()
	if err != nil {
		return err
	}
	path := s.envelopePath(e.ID)
	err = safeio.WriteFile(path+".tmp", path, 0o600, func(f *os.File) error {
		_, err := f.Write(data)
		return err
	})
	if err != nil {
		return fmt.Errorf("queue: envelope: %w", err)
	}
	return nil
}

// Remove deletes a delivered envelope, and its message once it was the
// last: into free/ for reuse (see inodePool). A crash in between leaves
// a message without envelopes, which Load removes.
func (s *Store) Remove(e *envelope.Envelope) error {
	dir := s.messageDir(e.MsgID())
	if err := s.pool.release(false, s.envelopePath(e.ID)); err != nil {
		return fmt.Errorf("queue: remove: %w", err)
	}
	d, err := safeio.Open(dir)
	if err != nil {
		return nil
	}
	entries, err := d.ReadDir(-1)
	d.Close()
	if err != nil {
		return nil
	}
	for _, en := range entries {
		if _, err := envelope.ParseEvpID(en.Name()); err == nil {
			return nil
		}
	}
	body := filepath.Join(dir, "message")
	if fi, err := os.Lstat(body); err == nil && fi.Mode().IsRegular() && fi.Size() <= poolMaxBody {
		s.pool.release(false, body)
	} else {
		os.Remove(body)
	}
	if len(entries) == 1 && entries[0].Name() == "message" {
		s.pool.release(true, dir)
	} else {
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
		if _, err := envelope.ParseEvpID(e.Name()); err == nil {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// Recovery is what Load found.
type Recovery struct {
	Envelopes []*envelope.Envelope
	// Purged counts never-committed messages removed; Recovered the
	// committed messages found in incoming/ and moved on into queue/;
	// Corrupt the envelopes or messages moved to corrupt/.
	Purged, Recovered, Corrupt int
	Problems                   []string
}

// Load recovers the spool at start-up: the committed messages found
// whole in incoming/ move on into queue/; the rest of incoming/ and
// temporary/ was never acknowledged and goes; every envelope in queue/
// is read; unreadable ones move to corrupt/ and are reported, never
// dropped.
func (s *Store) Load() (*Recovery, error) {
	rec := &Recovery{}
	s.pool.reset()
	buf := make([]byte, 32<<10)
	for _, d := range []string{DirTemporary, DirIncoming} {
		entries, err := os.ReadDir(s.path(d))
		if err != nil {
			return nil, fmt.Errorf("queue: load: %w", err)
		}
		for _, e := range entries {
			if d == DirIncoming {
				if id, quarantined, ok := s.committed(e.Name(), buf); ok {
					if err := s.publish(id, quarantined); err == nil {
						rec.Recovered++
						continue
					}
				}
			}
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

// committed reports whether incoming/<name> is a committed message,
// whole: every envelope read with its checksum, as many as its commit
// record says, and a body of the recorded size and CRC-32C (see Store).
func (s *Store) committed(name string, buf []byte) (id uint32, quarantined, ok bool) {
	id, err := envelope.ParseMsgID(name)
	if err != nil {
		return 0, false, false
	}
	dir := s.incomingDir(id)
	names, err := envelopeNames(dir)
	if err != nil || len(names) == 0 {
		return 0, false, false
	}
	var info envelope.CommitInfo
	for i, n := range names {
		data, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil || !envelope.Checked(data) {
			return 0, false, false
		}
		e, err := envelope.Unmarshal(data)
		if err != nil || envelope.FormatEvpID(e.ID) != n || e.MsgID() != id || (i > 0 && e.Commit != info) {
			return 0, false, false
		}
		info = e.Commit
	}
	if info.Envelopes != len(names) {
		return 0, false, false
	}
	if info.Quarantined {
		if _, err := os.Stat(filepath.Join(dir, "reason")); err != nil {
			return 0, false, false
		}
	}
	body, err := s.bodyInfo(filepath.Join(dir, "message"), buf)
	if err != nil || body.Size != info.Size || body.CRC != info.CRC {
		return 0, false, false
	}
	return id, info.Quarantined, true
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
		if err == nil && envelope.FormatEvpID(e.ID) != n {
			err = fmt.Errorf("envelope id %s in file %s", envelope.FormatEvpID(e.ID), n)
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
