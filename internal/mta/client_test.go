package mta

import (
	"bufio"
	"strings"
	"testing"
)

func TestReadReply(t *testing.T) {
	good := map[string]string{
		"250 ok\r\n": "250 ok",
		"250-mx.example\r\n250-SIZE 100\r\n250 DSN\r\n": "250 mx.example SIZE 100 DSN",
		"220\r\n":        "220 ",
		"554 5.7.1 no\n": "554 5.7.1 no",
	}
	for in, want := range good {
		rep, err := readReply(bufio.NewReaderSize(strings.NewReader(in), maxReplyLine))
		if err != nil || rep.String() != want {
			t.Errorf("%q: %v %v", in, rep, err)
		}
	}
	bad := []string{
		"", "25\r\n", "abc ok\r\n", "199 too low\r\n", "250-a\r\n251 b\r\n", "250x\r\n",
		"250 " + strings.Repeat("x", 3000) + "\r\n",
		strings.Repeat("250-x\r\n", 200) + "250 end\r\n",
		"250-unfinished\r\n",
	}
	for _, in := range bad {
		if rep, err := readReply(bufio.NewReaderSize(strings.NewReader(in), maxReplyLine)); err == nil {
			t.Errorf("%.30q accepted: %v", in, rep)
		}
	}
}

func FuzzReadReply(f *testing.F) {
	f.Add([]byte("250-mx.example\r\n250 DSN\r\n"))
	f.Add([]byte("421 4.3.0 bye\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReaderSize(strings.NewReader(string(data)), maxReplyLine)
		for range 10 {
			rep, err := readReply(r)
			if err != nil {
				return
			}
			if rep.Code < 200 || rep.Code > 599 || len(rep.Lines) == 0 || len(rep.Lines) > maxReplyLines {
				t.Fatalf("bad reply %+v", rep)
			}
		}
	})
}
