// Package milter is the mfa process's milter client: it speaks the
// Sendmail milter protocol (version 6, falling back to 2 for old milters)
// to an external filter such as opendkim, rspamd or clamav-milter, one
// milter session per SMTP session, and applies the modifications the
// milter asks for at the end of a message.
//
// The wire work is github.com/emersion/go-milter's client; this package
// adds what an MTA needs around it and what that client lacks: the
// macros real milters read, the DATA command, verdicts with safe reply
// texts, the message streamed from the spool, and modifications applied
// with the semantics of Sendmail and Postfix, refusing any that would
// make a malformed message.
//
// A Session is not safe for concurrent use: the protocol is a strict
// request/answer sequence on one connection.
package milter

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	gomilter "github.com/emersion/go-milter"
)

// ErrUnavailable wraps every failure of the milter itself: it cannot be
// reached, closed the connection, timed out or broke the protocol. The
// caller applies its failure policy (tempfail by default); the session
// is unusable afterwards except for Close.
var ErrUnavailable = errors.New("milter unavailable")

// ErrMalformed wraps a refusal to apply the milter's modifications
// because they would make a malformed message (a header name with ':' or
// spaces, a line break in a value not followed by whitespace, an
// envelope address with control characters, ...). The caller fails the
// transaction with 451; nothing was written to the output. The session
// stays usable.
var ErrMalformed = errors.New("milter modification would make a malformed message")

// DefaultTimeout bounds each request when Options.Timeout is zero.
const DefaultTimeout = time.Minute

// Options says where the milter listens and how we present ourselves.
type Options struct {
	// Network and Address are those of net.Dial: "unix",
	// "/run/opendkim/opendkim.sock" or "tcp", "127.0.0.1:8891".
	Network, Address string
	// Timeout bounds the dial and each read or write of a request (a
	// milter's progress packets restart it); zero means DefaultTimeout.
	Timeout time.Duration
	// Hostname is our host name, sent as the j and {daemon_name}
	// macros; empty means os.Hostname().
	Hostname string
	// Dial, if set, opens the connection instead of net.Dialer: a
	// chrooted process has another process open unix sockets for it.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
}

// Client opens milter sessions to one milter.
type Client struct {
	o Options
}

// New returns a client for the milter o describes; it does not dial.
func New(o Options) *Client {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Hostname == "" {
		if h, err := os.Hostname(); err == nil {
			o.Hostname = h
		} else {
			o.Hostname = "localhost"
		}
	}
	return &Client{o: o}
}

// What we offer the milter. Actions: everything we can apply, except
// SMFIF_ADDRCPT_PAR, whose answer go-milter cannot parse. Protocol:
// every step the milter may skip or leave unanswered, and leading spaces
// of header values (opendkim wants them for exact signatures); not
// SMFIP_SKIP (go-milter rejects the 's' answer) nor SMFIP_RCPT_REJ (we
// do not send recipients that we rejected).
const (
	offerActions = gomilter.OptAddHeader | gomilter.OptChangeBody |
		gomilter.OptAddRcpt | gomilter.OptRemoveRcpt |
		gomilter.OptChangeHeader | gomilter.OptQuarantine |
		gomilter.OptChangeFrom | gomilter.OptSetSymList
	offerProtocol = gomilter.OptNoConnect | gomilter.OptNoHelo |
		gomilter.OptNoMailFrom | gomilter.OptNoRcptTo | gomilter.OptNoBody |
		gomilter.OptNoHeaders | gomilter.OptNoEOH | gomilter.OptNoUnknown |
		gomilter.OptNoData | gomilter.OptNoHeaderReply |
		gomilter.OptNoConnReply | gomilter.OptNoHeloReply |
		gomilter.OptNoMailReply | gomilter.OptNoRcptReply |
		gomilter.OptNoDataReply | gomilter.OptNoUnknownReply |
		gomilter.OptNoEOHReply | gomilter.OptNoBodyReply |
		gomilter.OptHeaderLeadingSpace
	// go-milter refuses a milter older than version 6 unless our offer
	// fits in what version 2 defined: these masks are that subset.
	legacyActions  = offerActions & 0x3f
	legacyProtocol = offerProtocol & 0x7f
)

// Session is one milter conversation, normally for one SMTP session.
type Session struct {
	o    Options
	cs   *gomilter.ClientSession
	conn net.Conn // the same connection as cs's: for DATA and for closing whatever happens

	// legacy: the milter speaks a protocol older than 6 (it has no DATA).
	legacy bool
	// leadSpace: header values travel with their leading whitespace.
	leadSpace bool

	err     error    // sticky failure: the connection is gone
	final   *Verdict // connection-level verdict: no more milter calls
	msg     *Verdict // message-level verdict for the current transaction
	inTx    bool     // the milter is inside a transaction (MAIL accepted)
	queueID string   // the i macro, from Mail
	closed  bool
}

// Session dials the milter and negotiates the protocol options; ctx
// bounds the dial and negotiation only (each later request has its own
// Timeout).
func (c *Client) Session(ctx context.Context) (*Session, error) {
	s, err := c.open(ctx, offerActions, offerProtocol)
	if errors.Is(err, gomilter.ErrUnsupportedMilterVersion) {
		// An old milter (go-milter's own server says version 2):
		// go-milter only accepts it if we offered no version 6 option,
		// which needs a new connection.
		s, err = c.open(ctx, legacyActions, legacyProtocol)
		if s != nil {
			s.legacy = true
		}
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// open dials and negotiates once.
func (c *Client) open(ctx context.Context, actions gomilter.OptAction, protocol gomilter.OptProtocol) (*Session, error) {
	d := &captureDialer{ctx: ctx, dial: c.o.Dial}
	if d.dial == nil {
		nd := net.Dialer{Timeout: c.o.Timeout}
		d.dial = nd.DialContext
	}
	gc := gomilter.NewClientWithOptions(c.o.Network, c.o.Address, gomilter.ClientOptions{
		Dialer:       d,
		ReadTimeout:  c.o.Timeout,
		WriteTimeout: c.o.Timeout,
		ActionMask:   actions,
		ProtocolMask: protocol,
	})
	cs, err := gc.Session()
	cancelled := d.stop != nil && !d.stop()
	if err != nil || cancelled {
		// go-milter leaves the connection open when negotiation fails
		if d.conn != nil {
			d.conn.Close()
		}
		if cancelled {
			err = ctx.Err()
		}
		if errors.Is(err, gomilter.ErrUnsupportedMilterVersion) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %s %s: %w", ErrUnavailable, c.o.Network, c.o.Address, err)
	}
	return &Session{
		o:         c.o,
		cs:        cs,
		conn:      d.conn,
		leadSpace: cs.ProtocolOption(gomilter.OptHeaderLeadingSpace),
	}, nil
}

// captureDialer dials for go-milter and keeps the connection, which
// go-milter does not expose: we need it to send DATA, to close it when
// go-milter would not, and to abort the negotiation when ctx ends.
type captureDialer struct {
	ctx  context.Context
	dial func(ctx context.Context, network, address string) (net.Conn, error)
	conn net.Conn
	stop func() bool
}

func (d *captureDialer) Dial(network, addr string) (net.Conn, error) {
	conn, err := d.dial(d.ctx, network, addr)
	if err != nil {
		return nil, err
	}
	d.conn = conn
	d.stop = context.AfterFunc(d.ctx, func() { conn.Close() })
	return conn, nil
}

// Action is what the milter decided.
type Action int

const (
	// Continue: go on with the next phase.
	Continue Action = iota
	// Accept: accept without further milter calls (for the message, or
	// for the whole connection when answered at connect or helo).
	Accept
	// Reject: refuse with Code (5xx).
	Reject
	// Tempfail: refuse temporarily with Code (4xx).
	Tempfail
	// Discard: accept the message but drop it silently (at rcpt too:
	// the whole message).
	Discard
	// Reply: refuse with the milter's own Code, 4xx or 5xx (421: close
	// the connection after replying).
	Reply
)

func (a Action) String() string {
	switch a {
	case Continue:
		return "continue"
	case Accept:
		return "accept"
	case Reject:
		return "reject"
	case Tempfail:
		return "tempfail"
	case Discard:
		return "discard"
	case Reply:
		return "reply"
	}
	return "action(" + strconv.Itoa(int(a)) + ")"
}

// Verdict is the milter's answer to one phase. For Reject, Tempfail and
// Reply, Code, Enhanced and Text form the SMTP reply: a single line of
// printable text (a multi-line reply from the milter is joined).
type Verdict struct {
	Action   Action
	Code     int
	Enhanced string
	Text     string
}

// Proceed reports whether the SMTP command (or message) goes on.
func (v Verdict) Proceed() bool { return v.Action == Continue || v.Action == Accept }

// Temporary reports whether a refusal is temporary (4xx).
func (v Verdict) Temporary() bool { return v.Code/100 == 4 }

func (v Verdict) String() string {
	if v.Code == 0 {
		return v.Action.String()
	}
	return fmt.Sprintf("%s %d %s %s", v.Action, v.Code, v.Enhanced, v.Text)
}

// Family is the kind of client address given to Connect.
type Family byte

const (
	// FamilyUnknown: a local client (no address), as for mail enqueued
	// on this host; milters such as opendkim treat it as local.
	FamilyUnknown Family = Family(gomilter.FamilyUnknown)
	FamilyInet    Family = Family(gomilter.FamilyInet)
	FamilyInet6   Family = Family(gomilter.FamilyInet6)
	// There is no unix family: libmilter expects a port after it, which
	// go-milter does not send.
)

// TLS is the TLS state of the SMTP session, sent with the helo macros.
type TLS struct {
	Version     string // {tls_version}: "TLSv1.3"
	Cipher      string // {cipher}: "TLS_AES_256_GCM_SHA384"
	CipherBits  int    // {cipher_bits}
	CertSubject string // {cert_subject} of the client certificate, if any
	CertIssuer  string // {cert_issuer}
	Verify      string // {verify}: "OK", "NO", "FAIL", ...
}

// MailMacros are the transaction's macros, sent with MAIL.
type MailMacros struct {
	QueueID  string // i: our message id; milters log it (opendkim needs it)
	AuthType string // {auth_type}: the SASL mechanism; opendkim signs mail from authenticated clients
	AuthUser string // {auth_authen}: the authenticated user
}

// Connect sends the client's connection: hostname is its resolved name
// ("" if none), addr its address ("" for a local client, with
// FamilyUnknown). A refusal, discard or accept here holds for the whole
// session: later calls return it without asking the milter.
func (s *Session) Connect(hostname, addr string, port uint16, family Family) (Verdict, error) {
	if v, done, err := s.gate(false); done {
		return v, err
	}
	switch family {
	case FamilyUnknown:
		addr, port = "", 0
	case FamilyInet:
		if ip := net.ParseIP(addr); ip == nil || ip.To4() == nil {
			return Verdict{}, fmt.Errorf("milter: connect: %q is not an IPv4 address", addr)
		}
	case FamilyInet6:
		if ip := net.ParseIP(addr); ip == nil || ip.To4() != nil {
			return Verdict{}, fmt.Errorf("milter: connect: %q is not an IPv6 address", addr)
		}
	default:
		return Verdict{}, fmt.Errorf("milter: connect: unknown family %q", byte(family))
	}
	// Sendmail's conventions: an unresolved client is named by its
	// address in brackets; _ is "name [addr]".
	name := hostname
	switch {
	case name == "" && addr != "":
		name = "[" + addr + "]"
	case name == "":
		name = "localhost"
	}
	who := name
	if addr != "" {
		who += " [" + addr + "]"
	}
	kv := []string{"j", s.o.Hostname, "{daemon_name}", s.o.Hostname, "_", who, "{client_name}", name}
	if addr != "" {
		kv = append(kv, "{client_addr}", addr, "{client_port}", strconv.Itoa(int(port)))
	}
	if err := s.cs.Macros(gomilter.CodeConn, kv...); err != nil {
		return Verdict{}, s.fail("connect macros", err)
	}
	act, err := s.cs.Conn(name, gomilter.ProtoFamily(family), port, addr)
	if err != nil {
		return Verdict{}, s.fail("connect", err)
	}
	v, err := s.verdict("connect", act)
	if err == nil && v.Action != Continue {
		s.final = &v
	}
	return v, err
}

// Helo sends HELO/EHLO's name; tls is the session's TLS state, nil if
// none (send it again after STARTTLS with the new EHLO). An accept or
// discard holds for the whole session; a refusal only for this HELO.
func (s *Session) Helo(name string, tls *TLS) (Verdict, error) {
	if v, done, err := s.gate(false); done {
		return v, err
	}
	if tls != nil {
		kv := []string{"{tls_version}", tls.Version, "{cipher}", tls.Cipher}
		if tls.CipherBits > 0 {
			kv = append(kv, "{cipher_bits}", strconv.Itoa(tls.CipherBits))
		}
		kv = appendSet(kv, "{cert_subject}", tls.CertSubject)
		kv = appendSet(kv, "{cert_issuer}", tls.CertIssuer)
		kv = appendSet(kv, "{verify}", tls.Verify)
		if err := s.cs.Macros(gomilter.CodeHelo, kv...); err != nil {
			return Verdict{}, s.fail("helo macros", err)
		}
	}
	act, err := s.cs.Helo(name)
	if err != nil {
		return Verdict{}, s.fail("helo", err)
	}
	v, err := s.verdict("helo", act)
	if err == nil && (v.Action == Accept || v.Action == Discard) {
		s.final = &v
	}
	return v, err
}

// Mail starts a transaction: from is the reverse path without angle
// brackets ("" for the null sender), esmtpArgs MAIL's parameters
// ("SIZE=1234", "BODY=8BITMIME").
func (s *Session) Mail(from string, esmtpArgs []string, m MailMacros) (Verdict, error) {
	if v, done, err := s.gate(false); done {
		return v, err
	}
	if s.inTx {
		// the caller forgot Abort: end the old transaction first
		if err := s.Abort(); err != nil {
			return Verdict{}, err
		}
	}
	s.msg = nil
	s.queueID = m.QueueID
	kv := []string{"{mail_addr}", from}
	kv = appendSet(kv, "i", m.QueueID)
	kv = appendSet(kv, "{auth_type}", m.AuthType)
	kv = appendSet(kv, "{auth_authen}", m.AuthUser)
	if err := s.cs.Macros(gomilter.CodeMail, kv...); err != nil {
		return Verdict{}, s.fail("mail macros", err)
	}
	act, err := s.cs.Mail(from, esmtpArgs)
	if err != nil {
		return Verdict{}, s.fail("mail", err)
	}
	v, err := s.verdict("mail", act)
	if err != nil {
		return v, err
	}
	if v.Action == Continue {
		s.inTx = true
		return v, nil
	}
	return v, s.endMessage(v)
}

// Rcpt sends one recipient (without angle brackets). A refusal concerns
// this recipient only; an accept or discard, the whole message.
func (s *Session) Rcpt(to string, esmtpArgs []string) (Verdict, error) {
	if v, done, err := s.gate(true); done {
		return v, err
	}
	if err := s.cs.Macros(gomilter.CodeRcpt, "{rcpt_addr}", to); err != nil {
		return Verdict{}, s.fail("rcpt macros", err)
	}
	act, err := s.cs.Rcpt(to, esmtpArgs)
	if err != nil {
		return Verdict{}, s.fail("rcpt", err)
	}
	v, err := s.verdict("rcpt", act)
	if err != nil || v.Action != Accept && v.Action != Discard {
		return v, err
	}
	return v, s.endMessage(v)
}

// Data sends the DATA command, unless the milter asked not to have it
// or is too old to know it.
func (s *Session) Data() (Verdict, error) {
	if v, done, err := s.gate(true); done {
		return v, err
	}
	if s.legacy || s.cs.ProtocolOption(gomilter.OptNoData) {
		return Verdict{Action: Continue}, nil
	}
	if s.queueID != "" {
		if err := s.cs.Macros(gomilter.CodeData, "i", s.queueID); err != nil {
			return Verdict{}, s.fail("data macros", err)
		}
	}
	// go-milter's client has no DATA: speak it on the same connection
	if err := writePacket(s.conn, s.o.Timeout, byte(gomilter.CodeData), nil); err != nil {
		return Verdict{}, s.fail("data", err)
	}
	if s.cs.ProtocolOption(gomilter.OptNoDataReply) {
		return Verdict{Action: Continue}, nil
	}
	act, err := readAction(s.conn, s.o.Timeout)
	if err != nil {
		return Verdict{}, s.fail("data", err)
	}
	v, err := s.verdict("data", act)
	if err != nil || v.Action == Continue {
		return v, err
	}
	return v, s.endMessage(v)
}

// Abort ends the current transaction without a message (RSET, a
// refused DATA, a rollback); the session stays for the next one.
func (s *Session) Abort() error {
	if s.err != nil {
		return s.err
	}
	return s.abortTx()
}

// Close says QUIT and closes the connection; it always releases the
// connection, even if the milter is gone.
func (s *Session) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	defer s.conn.Close()
	if s.err != nil {
		return nil // already reported
	}
	// Not go-milter's Close: it sends ABORT whenever its last answer
	// was continue, even after a finished message.
	if err := s.abortTx(); err != nil {
		return err
	}
	if err := writePacket(s.conn, s.o.Timeout, byte(gomilter.CodeQuit), nil); err != nil {
		return fmt.Errorf("%w: quit: %w", ErrUnavailable, err)
	}
	return nil
}

// gate answers for the milter when it has already decided: a failure,
// a connection-level verdict or, for message phases, a message-level
// one. done says whether the answer is final.
func (s *Session) gate(message bool) (v Verdict, done bool, err error) {
	switch {
	case s.closed:
		return Verdict{}, true, fmt.Errorf("%w: session closed", ErrUnavailable)
	case s.err != nil:
		return Verdict{}, true, s.err
	case s.final != nil:
		return *s.final, true, nil
	case message && s.msg != nil:
		return *s.msg, true, nil
	case message && !s.inTx:
		return Verdict{}, true, errors.New("milter: no transaction: call Mail first")
	}
	return Verdict{}, false, nil
}

// endMessage records a message-level verdict. After a refusal or
// discard it sends ABORT, as Sendmail does, so that the milter knows the
// message is over; after an accept libmilter has already reset itself.
func (s *Session) endMessage(v Verdict) error {
	s.msg = &v
	s.inTx = false
	if v.Action == Accept {
		return nil
	}
	if err := s.cs.Abort(); err != nil {
		return s.fail("abort", err)
	}
	return nil
}

// abortTx ends the milter's transaction, if one is open, with ABORT.
func (s *Session) abortTx() error {
	s.msg = nil
	if !s.inTx {
		return nil
	}
	s.inTx = false
	if err := s.cs.Abort(); err != nil {
		return s.fail("abort", err)
	}
	return nil
}

// fail records that the milter is gone and closes the connection, so
// that every later call fails at once instead of timing out again.
func (s *Session) fail(stage string, err error) error {
	s.err = fmt.Errorf("%w: %s: %w", ErrUnavailable, stage, err)
	s.conn.Close()
	return s.err
}

// verdict turns go-milter's answer into a Verdict; a reply code that is
// not 4xx or 5xx breaks the protocol (Sendmail refuses it too).
func (s *Session) verdict(stage string, act *gomilter.Action) (Verdict, error) {
	v, err := verdictOf(act.Code, act.SMTPCode, act.SMTPText)
	if err != nil {
		return Verdict{}, s.fail(stage, err)
	}
	return v, nil
}

func verdictOf(code gomilter.ActionCode, smtpCode int, text string) (Verdict, error) {
	switch code {
	case gomilter.ActContinue:
		return Verdict{Action: Continue}, nil
	case gomilter.ActAccept:
		return Verdict{Action: Accept}, nil
	case gomilter.ActDiscard:
		return Verdict{Action: Discard}, nil
	case gomilter.ActReject:
		return Verdict{Action: Reject, Code: 550, Enhanced: "5.7.1", Text: "Command rejected"}, nil
	case gomilter.ActTempFail:
		return Verdict{Action: Tempfail, Code: 451, Enhanced: "4.7.1", Text: "Try again later"}, nil
	case gomilter.ActReplyCode:
		if smtpCode < 400 || smtpCode > 599 {
			return Verdict{}, fmt.Errorf("reply code %d is not 4xx or 5xx", smtpCode)
		}
		v := Verdict{Action: Reply, Code: smtpCode}
		v.Enhanced, v.Text = replyText(smtpCode, text)
		return v, nil
	}
	return Verdict{}, fmt.Errorf("unexpected answer %q", byte(code))
}

// replyText extracts the enhanced code and a single printable line from
// the text of a milter reply, which may be multi-line
// ("5.7.1 a\r\n550-5.7.1 b\r\n550 5.7.1 c"): the caller writes Text into
// an SMTP reply, where a line break would smuggle a reply of the
// milter's making.
func replyText(code int, text string) (enhanced, line string) {
	class := byte('0' + code/100)
	var parts []string
	for i, l := range strings.Split(text, "\n") {
		l = strings.TrimSuffix(l, "\r")
		if i > 0 && len(l) >= 4 && isDigits(l[:3]) && (l[3] == '-' || l[3] == ' ') {
			l = l[4:]
		}
		if e, rest, ok := strings.Cut(l, " "); ok && isEnhanced(e, class) {
			if enhanced == "" {
				enhanced = e
			}
			l = rest
		} else if isEnhanced(l, class) {
			if enhanced == "" {
				enhanced = l
			}
			l = ""
		}
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	line = printable(strings.Join(parts, " "))
	if enhanced == "" {
		enhanced = string(class) + ".7.1"
	}
	if line == "" {
		if class == '4' {
			line = "Try again later"
		} else {
			line = "Command rejected"
		}
	}
	return enhanced, line
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// isEnhanced reports whether e is an RFC 3463 code of the given class.
func isEnhanced(e string, class byte) bool {
	p := strings.Split(e, ".")
	return len(p) == 3 && len(p[0]) == 1 && p[0][0] == class &&
		isDigits(p[1]) && len(p[1]) <= 3 && isDigits(p[2]) && len(p[2]) <= 3
}

// appendSet appends the macro name=value when value is set.
func appendSet(kv []string, name, value string) []string {
	if value == "" {
		return kv
	}
	return append(kv, name, value)
}
