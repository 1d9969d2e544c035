package proto

import (
	"bytes"
	"os"
	"testing"
)

// FuzzDecode feeds arbitrary frames to the frame parser and to the
// decoder of every message type, between every pair of processes. A
// frame that decodes must encode back to the same payload.
func FuzzDecode(f *testing.F) {
	for ty := Type(0); ty <= typeEnd; ty++ {
		f.Add(AppendFrame(nil, Header{Type: ty}, nil), false)
	}
	f.Add(AppendFrame(nil, Header{Type: TypeStatUpdate}, []byte{1, 0, 0, 0, 1, 0, 0, 0, 'k', 1, 5, 0, 0, 0, 0, 0, 0, 0}), false)
	f.Add(AppendFrame(nil, Header{Type: TypeSetupPeer}, []byte{6, 0, 0, 0}), true)
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		f.Fatal(err)
	}
	defer devnull.Close()
	procs := append([]Proc{ProcParent, ProcClient}, Children...)
	f.Fuzz(func(t *testing.T, frame []byte, withFD bool) {
		h, payload, err := ParseFrame(frame)
		if err != nil {
			return
		}
		for _, from := range procs {
			for _, to := range procs {
				var fd *os.File
				if withFD {
					fd = devnull
				}
				m, err := decode(from, to, h, payload, fd)
				if err != nil {
					continue
				}
				var w Writer
				m.Encode(&w)
				out, err := w.Payload()
				if err != nil {
					t.Fatalf("%s re-encode: %v", h.Type, err)
				}
				if !bytes.Equal(out, payload) {
					t.Fatalf("%s: decoded %x, re-encoded %x", h.Type, payload, out)
				}
			}
		}
	})
}
