package parent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"smtpd/proto"
)

// openForward opens a user's ~/.forward for lookup, which may not read
// home directories itself. The file must be a regular file of the user's
// that nobody else can write, and not a symbolic link; else it is
// ignored, as other MTAs do, and the user gets mail as usual.
func (p *Parent) openForward(m *proto.LookupForwardOpen, id uint32) {
	reply := p.forward(m)
	ch := p.children[proto.ProcLookup].ch
	if err := ch.Send(reply, id); err != nil {
		p.fatal <- err
	}
	if f, ok := reply.(*proto.ParentForwardFile); ok {
		f.File().Close()
	}
}

func (p *Parent) forward(m *proto.LookupForwardOpen) proto.Message {
	path := filepath.Join(m.Dir, ".forward")
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		return &proto.ParentForwardNone{Outcome: proto.Outcome{Status: proto.StatusOK}}
	case errors.Is(err, syscall.ELOOP):
		p.log.Warnf("ignoring %s: a symbolic link", path)
		return &proto.ParentForwardNone{Outcome: proto.Outcome{Status: proto.StatusOK}}
	case err != nil:
		return &proto.ParentForwardNone{Outcome: proto.Outcome{Status: proto.StatusTempfail, Text: err.Error()}}
	}
	if why := insecure(f, m.UID); why != "" {
		f.Close()
		p.log.Warnf("ignoring %s: %s", path, why)
		return &proto.ParentForwardNone{Outcome: proto.Outcome{Status: proto.StatusOK}}
	}
	return proto.NewParentForwardFile(f)
}

func insecure(f *os.File, uid uint32) string {
	fi, err := f.Stat()
	if err != nil {
		return err.Error()
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.Mode().IsRegular():
		return "not a regular file"
	case !ok || st.Uid != uid:
		return fmt.Sprintf("not owned by uid %d", uid)
	case fi.Mode().Perm()&0o022 != 0:
		return "writable by others"
	}
	return ""
}
