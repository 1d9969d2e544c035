package procfilter

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"
)

// echo answers data-line requests line by line, as filter-senderscore
// does, and proceeds on anything else.
func echo(f *fake, line string) {
	r := fieldsOf(line)
	if len(r) != 8 || r[0] != "filter" {
		return
	}
	if r[4] != "data-line" {
		f.send(answer(line, "proceed"))
		return
	}
	f.send("filter-dataline|" + r[5] + "|" + r[6] + "|" + r[7])
}

// buffering keeps the whole message and answers at the end with a
// header in front, as filter-dkimsign does.
func buffering(seen *[]string) func(f *fake, line string) {
	var kept []string
	return func(f *fake, line string) {
		r := fieldsOf(line)
		if r[4] != "data-line" {
			f.send(answer(line, "proceed"))
			return
		}
		*seen = append(*seen, r[7])
		if r[7] != "." {
			kept = append(kept, r[7])
			return
		}
		out := []string{"filter-dataline|" + r[5] + "|" + r[6] + "|X-Added: yes"}
		for _, l := range kept {
			out = append(out, "filter-dataline|"+r[5]+"|"+r[6]+"|"+l)
		}
		kept = nil
		f.send(append(out, "filter-dataline|"+r[5]+"|"+r[6]+"|.")...)
	}
}

const testMessage = "Subject: dots\r\n\r\n.\r\n..two\r\n.lead\r\nbare\rcr\r\nlf only\nlast without newline"

// messageOut is testMessage as it comes back: CRLF everywhere, the bare CR
// turned into a space.
const messageOut = "Subject: dots\r\n\r\n.\r\n..two\r\n.lead\r\nbare cr\r\nlf only\r\nlast without newline\r\n"

// messageSent is what the filter sees: dot-stuffed lines, then ".".
var messageSent = []string{"Subject: dots", "", "..", "...two", "..lead", "bare cr", "lf only", "last without newline", "."}

func TestDataLinesEcho(t *testing.T) {
	var seen []string
	c, _ := mustStart(t, []string{"register|filter|smtp-in|data-line"}, func(f *fake, line string) {
		seen = append(seen, fieldsOf(line)[7])
		echo(f, line)
	})
	var out bytes.Buffer
	if err := c.DataLines(context.Background(), stamp, 0x77, strings.NewReader(testMessage), &out); err != nil {
		t.Fatal(err)
	}
	if out.String() != messageOut {
		t.Errorf("out\n got %q\nwant %q", out.String(), messageOut)
	}
	if fmt.Sprint(seen) != fmt.Sprint(messageSent) {
		t.Errorf("filter saw\n %q\nwant %q", seen, messageSent)
	}
	// empty message: just the "."
	seen = nil
	out.Reset()
	if err := c.DataLines(context.Background(), stamp, 0x77, strings.NewReader(""), &out); err != nil || out.Len() != 0 {
		t.Errorf("empty message: %q, %v", out.String(), err)
	}
	if fmt.Sprint(seen) != "[.]" {
		t.Errorf("filter saw %q", seen)
	}
}

func TestDataLinesBuffering(t *testing.T) {
	var seen []string
	c, _ := mustStart(t, []string{"register|filter|smtp-in|data-line", "register|filter|smtp-in|commit"}, buffering(&seen))
	var out bytes.Buffer
	if err := c.DataLines(context.Background(), stamp, 0x78, strings.NewReader(testMessage), &out); err != nil {
		t.Fatal(err)
	}
	if want := "X-Added: yes\r\n" + messageOut; out.String() != want {
		t.Errorf("out\n got %q\nwant %q", out.String(), want)
	}
	if fmt.Sprint(seen) != fmt.Sprint(messageSent) {
		t.Errorf("filter saw\n %q\nwant %q", seen, messageSent)
	}
	if res, err := c.Filter(context.Background(), stamp, "commit", 0x78); err != nil || res.Action != Proceed {
		t.Errorf("commit: %+v, %v", res, err)
	}
}

func TestDataLinesNotRegistered(t *testing.T) {
	c, f := mustStart(t, []string{"register|filter|smtp-in|helo"}, nil)
	var out bytes.Buffer
	if err := c.DataLines(context.Background(), stamp, 1, strings.NewReader("a\r\n.b\r\n"), &out); err != nil || out.String() != "a\r\n.b\r\n" {
		t.Errorf("DataLines = %q, %v", out.String(), err)
	}
	f.nothing()
}

// lines generates a message of n bytes of CRLF lines, some starting
// with a dot, without holding it in memory.
type lines struct {
	left int
	i    int
	buf  []byte
}

func (g *lines) Read(p []byte) (int, error) {
	if g.left <= 0 {
		return 0, io.EOF
	}
	if len(g.buf) == 0 {
		g.i++
		n := g.i*7919%997 + 1
		if n > g.left-2 {
			n = max(g.left-2, 0)
		}
		line := bytes.Repeat([]byte{byte('a' + g.i%26)}, n)
		if g.i%5 == 0 && n > 0 {
			line[0] = '.'
		}
		g.buf = append(line, '\r', '\n')
		g.left -= len(g.buf)
	}
	n := copy(p, g.buf)
	g.buf = g.buf[n:]
	return n, nil
}

func TestDataLinesLarge(t *testing.T) {
	size := 20 << 20
	if testing.Short() {
		size = 5 << 20
	}
	ours, in, out, closer := osPipes(t)
	c, _, err := startFakeOn(t, testOptions(), []string{"register|filter|smtp-in|data-line", "register|ready"}, echo, ours, in, out, closer)
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.New()
	io.Copy(want, &lines{left: size})

	// a tight GC target, so that the peak heap shows what is live
	// rather than how far the collector lets garbage pile up
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
		}
	}()
	got := sha256.New()
	n := &countWriter{w: got}
	start := time.Now()
	err = c.DataLines(context.Background(), stamp, 9, &lines{left: size}, n)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if n.n != int64(size) || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Errorf("%d bytes out of %d, or different", n.n, size)
	}
	growth := int64(peak) - int64(base)
	t.Logf("%d MiB in %v, heap grew by at most %.1f MiB", size>>20, time.Since(start), float64(growth)/(1<<20))
	if growth > 8<<20 {
		t.Errorf("heap grew by %d bytes for a %d bytes message", growth, size)
	}
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.w.Write(p)
}

// Several sessions at once, their lines interleaved on the pipe, with
// filter requests in between.
func TestDataLinesConcurrent(t *testing.T) {
	c, _ := mustStart(t, []string{"register|filter|smtp-in|data-line", "register|filter|smtp-in|rcpt-to"}, echo)
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func(sid uint64) {
			defer wg.Done()
			if sid%2 == 0 {
				for j := 0; j < 50; j++ {
					if _, err := c.Filter(context.Background(), stamp, "rcpt-to", sid, "a@example.org"); err != nil {
						t.Error(err)
						return
					}
				}
				return
			}
			want := sha256.New()
			io.Copy(want, &lines{left: 300 << 10, i: int(sid)})
			got := sha256.New()
			if err := c.DataLines(context.Background(), stamp, sid, &lines{left: 300 << 10, i: int(sid)}, got); err != nil {
				t.Error(err)
				return
			}
			if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
				t.Errorf("session %d: message changed", sid)
			}
		}(uint64(i))
	}
	wg.Wait()
}

func TestDataLinesFatal(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply func(r []string) string
	}{
		{"filter-result during data-line", func(r []string) string {
			return "filter-result|" + r[5] + "|" + r[6] + "|proceed"
		}},
		{"early dot", func(r []string) string { return "filter-dataline|" + r[5] + "|" + r[6] + "|." }},
		{"other token", func(r []string) string { return "filter-dataline|" + r[5] + "|00000000000000ff|x" }},
		{"no line field", func(r []string) string { return "filter-dataline|" + r[5] + "|" + r[6] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := mustStart(t, []string{"register|filter|smtp-in|data-line"}, func(f *fake, line string) {
				f.send(tc.reply(fieldsOf(line)))
			})
			// a message that never ends, so that the filter's
			// answer always comes before our "."
			err := c.DataLines(context.Background(), stamp, 3, slowReader{}, io.Discard)
			if !errors.Is(err, ErrBroken) || errors.Is(err, ErrTimeout) {
				t.Fatalf("DataLines = %v, want ErrBroken", err)
			}
			waitBroken(t, c)
			t.Log(c.Err())
		})
	}
}

func TestDataLinesSilentFilter(t *testing.T) {
	o := testOptions()
	o.Timeout = 200 * time.Millisecond
	c, _, err := startFake(t, o, []string{"register|filter|smtp-in|data-line", "register|ready"}, func(*fake, string) {})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = c.DataLines(context.Background(), stamp, 3, strings.NewReader("a\r\n"), io.Discard)
	if !errors.Is(err, ErrTimeout) || time.Since(start) > 2*time.Second {
		t.Fatalf("DataLines = %v after %v, want ErrTimeout", err, time.Since(start))
	}
}

// Timeout is for silence: a filter slower than Timeout over the whole
// message, but never silent that long, is fine; so is a message that
// arrives slowly to a filter that answers only at the end.
func TestDataLinesSlowButSteady(t *testing.T) {
	msg := strings.Repeat("line\r\n", 15)
	t.Run("slow filter", func(t *testing.T) {
		o := testOptions()
		o.Timeout = 150 * time.Millisecond
		c, _, err := startFake(t, o, []string{"register|filter|smtp-in|data-line", "register|ready"}, func(f *fake, line string) {
			time.Sleep(30 * time.Millisecond) // 450 ms for the message
			echo(f, line)
		})
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if err := c.DataLines(context.Background(), stamp, 3, strings.NewReader(msg), &out); err != nil {
			t.Fatal(err)
		}
		if out.String() != msg {
			t.Errorf("out %q", out.String())
		}
	})
	t.Run("slow message", func(t *testing.T) {
		o := testOptions()
		o.Timeout = 150 * time.Millisecond
		var seen []string
		c, _, err := startFake(t, o, []string{"register|filter|smtp-in|data-line", "register|ready"}, buffering(&seen))
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		in := &trickle{lines: 15, every: 30 * time.Millisecond}
		if err := c.DataLines(context.Background(), stamp, 3, in, &out); err != nil {
			t.Fatal(err)
		}
		if out.String() != "X-Added: yes\r\n"+msg {
			t.Errorf("out %q", out.String())
		}
	})
}

// trickle is a message of "line" lines arriving one by one.
type trickle struct {
	lines int
	every time.Duration
}

func (r *trickle) Read(p []byte) (int, error) {
	if r.lines == 0 {
		return 0, io.EOF
	}
	time.Sleep(r.every)
	r.lines--
	return copy(p, "line\r\n"), nil
}

// errWriter fails after n writes.
type errWriter struct{ n int }

func (w *errWriter) Write(p []byte) (int, error) {
	if w.n--; w.n < 0 {
		return 0, errors.New("disk full")
	}
	return len(p), nil
}

// When our side fails, the stream still ends with "." and the filter's
// remaining lines are dropped: the Conn stays usable.
func TestDataLinesOurFailure(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	c, _ := mustStart(t, []string{"register|filter|smtp-in|data-line", "register|filter|smtp-in|helo"}, func(f *fake, line string) {
		mu.Lock()
		seen = append(seen, fieldsOf(line)[7])
		mu.Unlock()
		echo(f, line)
	})
	msg := strings.Repeat("line\r\n", 200)
	err := c.DataLines(context.Background(), stamp, 3, strings.NewReader(msg), &errWriter{n: 5})
	if err == nil || errors.Is(err, ErrBroken) || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("DataLines = %v", err)
	}
	// a line too long for the protocol
	long := strings.Repeat("x", maxDataLine+1) + "\r\n"
	err = c.DataLines(context.Background(), stamp, 4, strings.NewReader("ok\r\n"+long), io.Discard)
	if err == nil || errors.Is(err, ErrBroken) || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("DataLines = %v", err)
	}
	// a cancelled context, with a message that never ends
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err = c.DataLines(ctx, stamp, 5, slowReader{}, io.Discard)
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrBroken) {
		t.Fatalf("DataLines = %v", err)
	}
	// the Conn goes on
	if res, err := c.Filter(context.Background(), stamp, "helo", 6, "example.org"); err != nil || res.Action != Proceed {
		t.Fatalf("Filter after failures: %+v, %v", res, err)
	}
	// and every stream was ended for the filter, and answered
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.mu.Lock()
		n := len(c.pending)
		c.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d requests still pending", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if dots := strings.Count(strings.Join(seen, "\n")+"\n", "\n.\n"); dots != 3 {
		t.Errorf("%d streams ended, want 3", dots)
	}
	if c.Err() != nil {
		t.Fatal(c.Err())
	}
}

// slowReader is a message that trickles in forever.
type slowReader struct{}

func (slowReader) Read(p []byte) (int, error) {
	time.Sleep(5 * time.Millisecond)
	return copy(p, "more\r\n"), nil
}
