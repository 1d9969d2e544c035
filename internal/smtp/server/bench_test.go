package server

import (
	"bufio"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"
)

// benchBody is a message of about size octets, in lines of 76.
func benchBody(size int) string {
	var b strings.Builder
	b.WriteString("From: a@example.org\r\nTo: b@example.org\r\nSubject: benchmark\r\n\r\n")
	for b.Len() < size {
		b.WriteString(strings.Repeat("x", 76) + "\r\n")
	}
	return b.String()
}

// BenchmarkMessages measures messages per second through the engine
// over loopback, many messages per session, with a client that
// pipelines MAIL, RCPT and DATA (or BDAT) as RFC 2920 allows.
func BenchmarkMessages(b *testing.B) {
	for _, tc := range []struct {
		name string
		size int
		bdat bool
	}{
		{"DATA-1KiB", 1 << 10, false},
		{"DATA-64KiB", 64 << 10, false},
		{"BDAT-1KiB", 1 << 10, true},
		{"BDAT-64KiB", 64 << 10, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			srv := &Server{Hostname: "mx.example.test", NewSession: func(*Conn) Session { return fuzzSession{} }}
			addr := serveLoopback(b, srv)
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			c := &client{t: b, conn: conn, r: bufio.NewReader(conn)}
			w := bufio.NewWriter(conn)
			c.script("S: 220\nC: EHLO client.example\nS: 250")
			body := benchBody(tc.size)
			envelope := "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n"
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				if tc.bdat {
					w.WriteString(envelope + "BDAT " + strconv.Itoa(len(body)) + " LAST\r\n" + body)
					w.Flush()
					c.expect("250")
					c.expect("250")
				} else {
					w.WriteString(envelope + "DATA\r\n")
					w.Flush()
					c.expect("250")
					c.expect("250")
					c.expect("354")
					w.WriteString(body + ".\r\n")
					w.Flush()
				}
				c.expect("250 2.0.0 Message accepted")
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}

// BenchmarkGoSMTPClient is the same with go-smtp's client, which waits
// for each reply.
func BenchmarkGoSMTPClient(b *testing.B) {
	srv := &Server{Hostname: "mx.example.test", NewSession: func(*Conn) Session { return fuzzSession{} }}
	c, err := gosmtp.Dial(serveLoopback(b, srv))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	body := benchBody(1 << 10)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if err := c.SendMail("a@example.org", []string{"b@example.org"}, strings.NewReader(body)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}
