package proto

import (
	"errors"
	"io"
	"os"
	"reflect"
	"testing"
	"time"
)

// samples holds one filled message of every type, with its sender and
// receiver.
func samples(t *testing.T) []struct {
	from, to Proc
	msg      Message
} {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	sess := Session{ID: 7, Remote: "192.0.2.1", Helo: "client.example.net", Sender: "a@example.net"}
	return []struct {
		from, to Proc
		msg      Message
	}{
		{ProcParent, ProcQueue, NewSetupPeer(ProcLookup, f)},
		{ProcParent, ProcSMTP, NewSetupListener("mx", f)},
		{ProcParent, ProcControl, NewSetupControl(f)},
		{ProcParent, ProcMTA, &SetupDone{}},
		{ProcMFA, ProcParent, &SetupReady{}},
		{ProcQueue, ProcControl, &StatUpdate{Changes: []StatChange{{"queue.envelope", StatIncrement, 3}, {"x", StatSet, -1}}}},
		{ProcClient, ProcControl, &ControlShowStats{}},
		{ProcControl, ProcClient, &ControlStats{Values: []StatValue{{"uptime", 12}}, Last: true}},
		{ProcControl, ProcClient, &ControlError{Text: "permission denied"}},
		{ProcSMTP, ProcMFA, &SMTPFilterQuery{Phase: PhaseRcpt, Session: sess, Listener: 1, Param: "b@example.org"}},
		{ProcMFA, ProcSMTP, &MFAFilterVerdict{Verdict: VerdictReject, Reply: Reply{550, "5.7.1", "go away"}}},
		{ProcSMTP, ProcLookup, &SMTPExpandRcpt{Session: sess, Rcpt: "b@example.org"}},
		{ProcLookup, ProcSMTP, &LookupExpandResult{Status: StatusOK, Destinations: []Destination{{"mda", 1, "local", "b@example.org", "b", "|/usr/bin/vacation b", ""}, {"mta", 2, "out", "c@example.net", "", "", "SRS0=HHHH=TT=example.org=a@example.org"}}, More: true}},
		{ProcSMTP, ProcQueue, &SMTPMessageCreate{}},
		{ProcQueue, ProcSMTP, NewQueueMessageCreated(0x1234, f)},
		{ProcSMTP, ProcQueue, &SMTPEnvelopeSubmit{MsgID: 0x1234, Envelope: []byte("version: 1\n")}},
		{ProcSMTP, ProcQueue, &SMTPMessageCommit{MsgID: 0x1234, Quarantine: "milter av: Eicar-Test-Signature"}},
		{ProcQueue, ProcSMTP, &QueueMessageCommitted{MsgID: 0x1234}},
		{ProcSMTP, ProcQueue, &SMTPMessageRollback{MsgID: 0x1234}},
		{ProcQueue, ProcSMTP, &QueueFailure{MsgID: 0x1234, Reply: Reply{451, "4.3.0", "disk full"}}},
		{ProcQueue, ProcParent, NewQueueDeliverLocal([]byte("evp"), f)},
		{ProcParent, ProcQueue, &ParentDeliveryResult{DeliveryResult{EvpID: 1<<32 | 1, Status: StatusTempfail, Text: "mda exited 75"}}},
		{ProcParent, ProcMDA, NewParentMDADeliver([]byte("evp"), Account{"b", "/home/b", 1000, 100}, f)},
		{ProcQueue, ProcLookup, &QueueExpandRcpt{SMTPExpandRcpt{Session: Session{Local: true}, Rcpt: "a@example.net"}}},
		{ProcLookup, ProcParent, &LookupForwardOpen{User: "b", UID: 1000, Dir: "/home/b"}},
		{ProcParent, ProcLookup, NewParentForwardFile(f)},
		{ProcParent, ProcLookup, &ParentForwardNone{Outcome: Outcome{Status: StatusTempfail, Text: "permission denied"}}},
		{ProcParent, ProcLookup, &ParentTablesReload{Name: "aliases"}},
		{ProcQueue, ProcMTA, NewQueueTransfer([]byte("evp"), f)},
		{ProcMTA, ProcQueue, &MTADeliveryResult{DeliveryResult{EvpID: 1<<32 | 1, Status: StatusPermfail, Text: "550 no"}}},
		{ProcMTA, ProcQueue, &MTADeliveryResult{DeliveryResult{EvpID: 1<<32 | 2, Status: StatusDeferred, Text: "451 4.4.5 rate limit", Retry: time.Unix(1700000060, 5)}}},
		{ProcMTA, ProcLookup, &MTAResolveMX{Domain: "example.test", HostOnly: true}},
		{ProcLookup, ProcMTA, &LookupMXResult{Outcome: Outcome{Status: StatusOK}, MXs: []MXHost{{10, "mx.example.test", []string{"127.0.0.2", "::1"}, true}}}},
		{ProcMTA, ProcLookup, &MTAResolvePTR{Addr: "127.0.0.2"}},
		{ProcLookup, ProcMTA, &LookupPTRResult{Name: "mx.example.test"}},
		{ProcClient, ProcControl, &ControlShowMTA{What: "routes"}},
		{ProcControl, ProcMTA, &ControlMTAQuery{What: "routes"}},
		{ProcMTA, ProcControl, &MTAObjects{TextLines{[]string{"a", "b"}, true}}},
		{ProcControl, ProcClient, &ControlText{TextLines{[]string{"a"}, false}}},
		{ProcClient, ProcControl, &ControlQueue{QueueOp{"show", "all"}}},
		{ProcControl, ProcQueue, &ControlQueueForward{QueueOp{"remove", "1234abcd"}}},
		{ProcQueue, ProcControl, &QueueLines{TextLines{[]string{"x"}, true}}},
		{ProcClient, ProcControl, &ControlUpdateTable{Name: "aliases"}},
		{ProcControl, ProcLookup, &ControlTableReload{Name: "aliases"}},
		{ProcLookup, ProcControl, &LookupTableLines{TextLines{[]string{"table aliases reloaded"}, true}}},
		{ProcClient, ProcControl, &ControlPauseSMTP{Paused: true}},
		{ProcControl, ProcSMTP, &ControlSMTPPause{Paused: true}},
		{ProcSMTP, ProcLookup, &SMTPAuthQuery{What: "password", Listener: "submission", User: "alice", Value: "secret"}},
		{ProcLookup, ProcSMTP, &LookupAuthResult{Outcome: Outcome{Status: StatusTempfail, Text: "unusable hash"}}},
		{ProcClient, ProcControl, &ControlEnqueue{User: "alice"}},
		{ProcControl, ProcSMTP, &ControlSMTPSession{UID: 1000, User: "alice"}},
		{ProcSMTP, ProcControl, NewSMTPSessionFile(f)},
		{ProcControl, ProcClient, NewControlFile(f)},
		{ProcClient, ProcControl, &ControlLog{LogSetting{What: "verbose", On: true}}},
		{ProcControl, ProcMTA, &ControlLogLevel{LogSetting{What: "smtp", On: false}}},
		{ProcQueue, ProcControl, NewQueueMessageFile(f)},
		{ProcMTA, ProcLookup, &MTACredentialsQuery{Table: 3, Label: "smarthost"}},
		{ProcLookup, ProcMTA, &LookupCredentials{Outcome: Outcome{Status: StatusOK}, User: "relay", Password: "secret"}},
		{ProcLookup, ProcMTA, &LookupTablesReloaded{}},
		{ProcMFA, ProcLookup, &MFATableQuery{Table: 1, Kind: TableKeyIP, Key: "192.0.2.1"}},
		{ProcLookup, ProcMFA, &LookupTableResult{Outcome: Outcome{Status: StatusTempfail, Text: "table unreadable"}}},
		{ProcParent, ProcLookup, &ParentAccountQuery{Action: "local", User: "b"}},
		{ProcLookup, ProcParent, &LookupAccountResult{Outcome: Outcome{Status: StatusOK}, Account: Account{"b", "/home/b", 1000, 100}}},
		{ProcMDA, ProcParent, &MDADeliveryResult{DeliveryResult{EvpID: 1<<32 | 1, Status: StatusOK}}},
		{ProcSMTP, ProcMFA, &SMTPFilterEvent{Session: 7, Listener: 1, Time: time.Unix(1700000000, 123456000), Event: "tx-mail", Params: []string{"1a2b", "ok", "a@example.org"}}},
		{ProcSMTP, ProcMFA, NewSMTPFilterMessage(f, 7, 1, 0x1234, 2048, []uint32{0, 2}, []uint32{1})},
		{ProcMFA, ProcSMTP, &MFAMessageVerdict{Verdict: VerdictProceed, Fate: MessageFate{Discard: true}}},
		{ProcMFA, ProcSMTP, NewMFAMessageRewritten(f, 2100, MessageFate{Quarantine: "milter av: virus", Auth: "spf=pass dkim=fail dmarc=fail"})},
		{ProcParent, ProcMFA, NewParentFilterProcess(f, 2, 5)},
		{ProcMFA, ProcParent, &MFAFilterBroken{Filter: 2, Generation: 5, Reason: "timeout"}},
		{ProcParent, ProcMFA, &ParentFilterExited{Filter: 2, Generation: 5, Reason: "exit status 1", Restart: time.Unix(1700000004, 0)}},
		{ProcClient, ProcControl, &ControlShowFilters{}},
		{ProcControl, ProcMFA, &ControlFiltersQuery{}},
		{ProcMFA, ProcControl, &MFAFilterLines{TextLines{Lines: []string{"dkim running"}, Last: true}}},
		{ProcQueue, ProcSMTP, &QueueOverload{On: true, Reason: "queue holds 10001 envelopes"}},
		{ProcMFA, ProcParent, &MFAMilterConnect{Filter: 3}},
		{ProcClient, ProcControl, &ControlShowTable{Name: "vusers", Service: "alias", Key: "alice@example.org"}},
		{ProcControl, ProcLookup, &ControlTableLookup{ControlShowTable{Name: "vusers", Key: "alice@example.org"}}},
		{ProcMTA, ProcLookup, &MTAResolveDNS{Name: "_25._tcp.mx.example.test", Qtype: 52}},
		{ProcLookup, ProcMTA, &LookupDNSResult{Outcome: Outcome{Status: StatusOK}, Secure: true, Records: []string{"_25._tcp.mx.example.test.\t300\tIN\tTLSA\t3 1 1 abcd"}}},
		{ProcMTA, ProcQueue, NewMTAReportSubmit("", []string{"tlsrpt@example.test"}, f)},
		{ProcQueue, ProcMTA, &QueueReportQueued{Outcome{Status: StatusTempfail, Text: "451 4.3.0 no"}}},
		{ProcSMTP, ProcQueue, &SMTPDomainSchedule{DomainTarget{Domain: "backup.example.test", Subdomains: true}}},
		{ProcQueue, ProcSMTP, &QueueDomainScheduled{Messages: 3, Envelopes: 5}},
		{ProcQueue, ProcMTA, &QueueDomainFlush{DomainTarget{Domain: "backup.example.test", Subdomains: true}}},
		{ProcParent, ProcSMTP, &ParentListenerCertificate{Listener: "mx", CertPEM: []byte("-----BEGIN CERTIFICATE-----\n"), KeyPEM: []byte("-----BEGIN EC PRIVATE KEY-----\n")}},
		{ProcParent, ProcSMTP, &ParentDrain{Timeout: 30 * time.Second}},
		{ProcSMTP, ProcParent, &SMTPDrained{Cut: 2}},
		{ProcParent, ProcMFA, NewParentMilterSocket(f)},
		{ProcParent, ProcMFA, &ParentMilterRefused{Text: "dial unix /run/opendkim/opendkim.sock: connection refused"}},
	}
}

func TestEveryTypeHasSample(t *testing.T) {
	seen := map[Type]bool{}
	for _, s := range samples(t) {
		seen[s.msg.Type()] = true
	}
	for ty := Type(1); ty < typeEnd; ty++ {
		if !seen[ty] {
			t.Errorf("no sample for %s", ty)
		}
		if _, ok := New(ty); !ok {
			t.Errorf("New(%s) unknown", ty)
		}
	}
}

func TestRoundTripOverChannel(t *testing.T) {
	for _, s := range samples(t) {
		t.Run(s.msg.Type().String(), func(t *testing.T) {
			a, b := pair(t, s.from, s.to)
			if err := a.Send(s.msg, 42); err != nil {
				t.Fatal(err)
			}
			env, err := b.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if env.Type != s.msg.Type() || env.PeerID != 42 || env.PID != uint32(os.Getpid()) {
				t.Errorf("header %+v", env.Header)
			}
			if fm, ok := env.Msg.(FileMessage); ok {
				if fm.File() == nil {
					t.Fatal("descriptor lost")
				}
				fm.File().Close()
				fm.setFile(nil)
				s.msg.(FileMessage).setFile(nil)
			}
			if !reflect.DeepEqual(env.Msg, s.msg) {
				t.Errorf("got %#v, want %#v", env.Msg, s.msg)
			}
		})
	}
}

func pair(t *testing.T, from, to Proc) (*Channel, *Channel) {
	t.Helper()
	fa, fb, err := Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	a, err := NewChannel(fa, from, to)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewChannel(fb, to, from)
	if err != nil {
		t.Fatal(err)
	}
	fa.Close()
	fb.Close()
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func TestDecodeStrict(t *testing.T) {
	peer := []byte{byte(ProcLookup), 0, 0, 0}
	f, _ := os.Open(os.DevNull)
	defer f.Close()
	tests := []struct {
		name     string
		from, to Proc
		typ      Type
		payload  []byte
		fd       bool
		want     error
	}{
		{"unknown type", ProcParent, ProcQueue, 999, nil, false, ErrUnknownType},
		{"type zero", ProcParent, ProcQueue, 0, nil, false, ErrUnknownType},
		{"wrong sender", ProcSMTP, ProcQueue, TypeSetupPeer, peer, true, ErrNotAllowed},
		{"wrong receiver", ProcParent, ProcQueue, TypeSetupListener, []byte{0, 0, 0, 0}, true, ErrNotAllowed},
		{"client may not set up", ProcClient, ProcControl, TypeSetupDone, nil, false, ErrNotAllowed},
		{"short payload", ProcParent, ProcQueue, TypeSetupPeer, peer[:3], true, ErrShortPayload},
		{"trailing bytes", ProcParent, ProcQueue, TypeSetupDone, []byte{0}, false, ErrTrailingBytes},
		{"trailing after peer", ProcParent, ProcQueue, TypeSetupPeer, append(peer, 1), true, ErrTrailingBytes},
		{"bad peer", ProcParent, ProcQueue, TypeSetupPeer, []byte{9, 0, 0, 0}, true, ErrBadFrame},
		{"missing fd", ProcParent, ProcQueue, TypeSetupPeer, peer, false, ErrBadFrame},
		{"unexpected fd", ProcParent, ProcQueue, TypeSetupDone, nil, true, ErrBadFrame},
		{"bad bool", ProcControl, ProcClient, TypeControlStats, []byte{2, 0, 0, 0, 0}, false, ErrBadFrame},
		{"huge count", ProcQueue, ProcControl, TypeStatUpdate, []byte{0xff, 0xff, 0xff, 0xff}, false, ErrBadFrame},
		{"bad stat op", ProcQueue, ProcControl, TypeStatUpdate, []byte{1, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0}, false, ErrBadFrame},
		{"string past end", ProcControl, ProcClient, TypeControlError, []byte{5, 0, 0, 0, 'a'}, false, ErrShortPayload},
		{"deferral without a time", ProcMTA, ProcQueue, TypeMTADeliveryResult, deliveryPayload(StatusDeferred, 0), false, ErrBadFrame},
		{"time without a deferral", ProcMTA, ProcQueue, TypeMTADeliveryResult, deliveryPayload(StatusTempfail, 1), false, ErrBadFrame},
		{"bad delivery status", ProcParent, ProcQueue, TypeParentDeliveryResult, deliveryPayload(StatusDeferred+1, 0), false, ErrBadFrame},
		{"lookups never defer", ProcLookup, ProcMFA, TypeLookupTableResult, []byte{byte(StatusDeferred), 0, 0, 0, 0}, false, ErrBadFrame},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var fd *os.File
			if tt.fd {
				fd, _ = os.Open(os.DevNull)
			}
			_, err := Decode(tt.from, tt.to, Header{Type: tt.typ}, tt.payload, fd)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if fd != nil {
				if _, err := fd.Stat(); err == nil {
					t.Error("descriptor of a refused frame left open")
				}
			}
		})
	}
}

// deliveryPayload is a DeliveryResult's payload with the given status
// and retry time in Unix nanoseconds, which Encode would not write.
func deliveryPayload(status Status, retry int64) []byte {
	var w Writer
	w.U64(1<<32 | 1)
	w.U8(uint8(status))
	w.String("")
	w.I64(retry)
	p, _ := w.Payload()
	return p
}

func TestParseFrame(t *testing.T) {
	good := AppendFrame(nil, Header{Type: TypeSetupDone, PeerID: 7, PID: 9}, []byte{1, 2})
	h, p, err := ParseFrame(good)
	if err != nil || h.Len != 18 || h.PeerID != 7 || h.PID != 9 || len(p) != 2 {
		t.Fatalf("%+v %v %v", h, p, err)
	}
	for _, b := range [][]byte{nil, good[:15], good[:17], append(good, 0), AppendFrame(nil, Header{}, make([]byte, MaxPayload+1))} {
		if _, _, err := ParseFrame(b); err == nil {
			t.Errorf("ParseFrame accepted %d bytes", len(b))
		}
	}
}

func TestWriterLimit(t *testing.T) {
	big := make([]StatChange, 2000)
	for i := range big {
		big[i] = StatChange{Key: "a.rather.long.counter.name", Op: StatSet}
	}
	a, _ := pair(t, ProcQueue, ProcControl)
	if err := a.Send(&StatUpdate{Changes: big}, 0); !errors.Is(err, ErrPayloadTooLarge) {
		t.Fatalf("got %v", err)
	}
}

func TestRecvEOFAndStrictness(t *testing.T) {
	a, b := pair(t, ProcSMTP, ProcQueue)
	// smtp may not send SetupDone to queue: fatal for the receiver
	if err := a.Send(&SetupDone{}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Recv(); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("got %v", err)
	}
	a.Close()
	if _, err := b.Recv(); err != io.EOF {
		t.Fatalf("after close: %v", err)
	}
}
