package mda

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"smtpd/internal/envelope"
)

// LMTPTimeout bounds a whole LMTP delivery.
const LMTPTimeout = 10 * time.Minute

// deliverLMTP hands the message to an LMTP server (RFC 2033) at dest, a
// unix socket path or host:port, for the envelope's recipient, and
// returns that recipient's status: 2xx delivered, 4xx retried later,
// 5xx failed.
func deliverLMTP(dest, hostname string, e *envelope.Envelope, body io.Reader) error {
	network := "tcp"
	if strings.HasPrefix(dest, "/") {
		network = "unix"
	}
	conn, err := net.DialTimeout(network, dest, 30*time.Second)
	if err != nil {
		return tempError{fmt.Errorf("lmtp: %w", err)}
	}
	conn.SetDeadline(time.Now().Add(LMTPTimeout))
	c := gosmtp.NewClientLMTP(conn)
	defer c.Close()
	if err := c.Hello(hostname); err != nil {
		return lmtpErr("LHLO", err)
	}
	if err := c.Mail(e.Sender, nil); err != nil {
		return lmtpErr("MAIL", err)
	}
	if err := c.Rcpt(e.Dest, nil); err != nil {
		return lmtpErr("RCPT", err)
	}
	w, err := c.Data()
	if err != nil {
		return lmtpErr("DATA", err)
	}
	if _, err := io.Copy(w, body); err != nil {
		return tempError{fmt.Errorf("lmtp: %w", err)}
	}
	if _, err := w.CloseWithLMTPResponse(); err != nil {
		var per gosmtp.LMTPDataError
		if errors.As(err, &per) {
			for _, status := range per {
				return lmtpErr("end of data", status)
			}
		}
		return lmtpErr("end of data", err)
	}
	c.Quit()
	return nil
}

// lmtpErr classifies a server's reply: 5xx is permanent, anything else
// (4xx, a broken connection) temporary. A refusal starts with the
// server's reply, so that the notice to the sender carries its status.
func lmtpErr(step string, err error) error {
	var se *gosmtp.SMTPError
	if errors.As(err, &se) && se.Code >= 500 {
		return fmt.Errorf("%d %d.%d.%d %s (LMTP %s)", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message, step)
	}
	return tempError{fmt.Errorf("lmtp %s: %w", step, err)}
}
