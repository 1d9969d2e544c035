package queue

import (
	"fmt"
	"os"
	"path/filepath"

	"smtpd/internal/safeio"
)

// The directories of the spool (see DESIGN.md): bodies being received,
// messages being committed, committed messages, envelopes found
// corrupt, messages a filter quarantined (kept, never delivered), mail
// dropped by sendmail while the daemon was down, what is left to
// remove, and what is kept for reuse (DirFree, pool.go).
const (
	DirTemporary  = "temporary"
	DirIncoming   = "incoming"
	DirQueue      = "queue"
	DirCorrupt    = "corrupt"
	DirQuarantine = "quarantine"
	DirOffline    = "offline"
	DirPurge      = "purge"
)

// spoolDirs are the directories the queue user owns.
var spoolDirs = []string{DirTemporary, DirIncoming, DirQueue, DirCorrupt, DirQuarantine, DirPurge, DirFree}

// PrepareSpool creates the spool at dir, or repairs its modes and owners.
// The spool itself belongs to root and is only traversable (the queue
// process chroots into it); its directories belong to the queue user
// (uid, gid) and no one else may read them; offline/ is writable by
// everyone, sticky, like /tmp, for sendmail to drop messages into while
// the daemon is down. uid < 0 leaves owners alone (not running as root).
func PrepareSpool(dir string, uid, gid int) error {
	if err := ensureSpoolDir(dir, 0o711, -1, -1); err != nil {
		return err
	}
	for _, d := range spoolDirs {
		if err := ensureSpoolDir(filepath.Join(dir, d), 0o700, uid, gid); err != nil {
			return err
		}
	}
	return ensureSpoolDir(filepath.Join(dir, DirOffline), os.ModeSticky|0o777, -1, -1)
}

// ensureSpoolDir is safeio.EnsureDir for the spool's directories.
func ensureSpoolDir(path string, mode os.FileMode, uid, gid int) error {
	if err := safeio.EnsureDir(path, mode, uid, gid); err != nil {
		return fmt.Errorf("queue: spool: %w", err)
	}
	return nil
}
