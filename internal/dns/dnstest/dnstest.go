// Package dnstest is a DNS server for tests: it serves records from a
// map on loopback (UDP and TCP) with github.com/miekg/dns, can answer
// SERVFAIL for chosen names, leave chosen queries unanswered so that
// clients time out, answer NODATA for empty non-terminals, and counts
// the queries it gets. It can also sign zones on the fly and make
// chosen signatures bogus (dnssec.go), and run Unbound as a validating
// resolver in front of it (unbound.go), for tests of DNSSEC and DANE.
package dnstest

import (
	"net"
	"strings"
	"sync"

	mdns "github.com/miekg/dns"
)

// Server is a running test DNS server.
type Server struct {
	// Addr is host:port of the server, UDP and TCP.
	Addr string

	mu       sync.Mutex
	records  map[string][]mdns.RR // by lowercase FQDN
	servfail map[string]bool
	queries  map[string]int // "name TYPE"
	udp, tcp *mdns.Server

	// silent holds the names whose queries get no answer, with the
	// types concerned; mdns.TypeNone stands for every type.
	silent map[string]map[uint16]bool
	// ent makes a name that exists only as the parent of another
	// answer NODATA instead of NXDOMAIN.
	ent bool

	// zones holds the signed zones by apex (dnssec.go); corrupt the
	// RRsets whose signatures are to fail validation.
	zones   map[string]*signedZone
	corrupt map[rrsetKey]bool
}

// Start serves records (zone file lines, such as
// "example.test. 300 IN MX 10 mx1.example.test.") on a free port of
// 127.0.0.1.
func Start(records ...string) (*Server, error) {
	return start(listenUDPAndTCP, records)
}

// StartOn is Start on a given address, such as "127.0.0.99:53" for
// programs that take their resolver from resolv.conf, which has no
// port.
func StartOn(addr string, records ...string) (*Server, error) {
	return start(func() (net.PacketConn, net.Listener, error) {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, err
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			pc.Close()
			return nil, nil, err
		}
		return pc, l, nil
	}, records)
}

func start(listen func() (net.PacketConn, net.Listener, error), records []string) (*Server, error) {
	s := &Server{records: map[string][]mdns.RR{}, servfail: map[string]bool{}, queries: map[string]int{}}
	for _, r := range records {
		if err := s.Add(r); err != nil {
			return nil, err
		}
	}
	pc, l, err := listen()
	if err != nil {
		return nil, err
	}
	s.Addr = pc.LocalAddr().String()
	s.udp = &mdns.Server{PacketConn: pc, Handler: s}
	s.tcp = &mdns.Server{Listener: l, Handler: s}
	go s.udp.ActivateAndServe()
	go s.tcp.ActivateAndServe()
	return s, nil
}

// listenUDPAndTCP binds UDP and TCP on one free loopback port. The
// port the kernel picks for UDP may be taken for TCP by another test
// running at the same time: then it tries another, a bounded number
// of times.
func listenUDPAndTCP() (net.PacketConn, net.Listener, error) {
	var err error
	for range 20 {
		var pc net.PacketConn
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, err
		}
		var l net.Listener
		if l, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			return pc, l, nil
		}
		pc.Close()
	}
	return nil, nil, err
}

// Add adds a record in zone file syntax.
func (s *Server) Add(record string) error {
	rr, err := mdns.NewRR(record)
	if err != nil {
		return err
	}
	name := strings.ToLower(rr.Header().Name)
	s.mu.Lock()
	s.records[name] = append(s.records[name], rr)
	s.mu.Unlock()
	return nil
}

// AddRR adds records built by the caller, for contents zone file syntax
// cannot express or that should reach the wire as they are: TXT
// strings with arbitrary bytes or none at all, owner names with
// unusual characters (in the presentation format miekg/dns gives
// received names, such as "a\\ b.example."), records of any type.
func (s *Server) AddRR(rrs ...mdns.RR) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rr := range rrs {
		name := strings.ToLower(rr.Header().Name)
		s.records[name] = append(s.records[name], rr)
	}
}

// Timeout makes the server leave queries for name unanswered, so that
// clients time out: queries of the given types (mdns.TypeTXT...), or of
// every type when none is given. Calls add up.
func (s *Server) Timeout(name string, qtypes ...uint16) {
	name = mdns.Fqdn(strings.ToLower(name))
	if len(qtypes) == 0 {
		qtypes = []uint16{mdns.TypeNone} // every type
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.silent == nil {
		s.silent = map[string]map[uint16]bool{}
	}
	if s.silent[name] == nil {
		s.silent[name] = map[uint16]bool{}
	}
	for _, t := range qtypes {
		s.silent[name][t] = true
	}
}

// EmptyNonTerminals sets whether a name without records of its own but
// with records below it (b.example. when only a.b.example. is known)
// answers NODATA, as real servers do (RFC 8020), rather than NXDOMAIN,
// which it answers by default.
func (s *Server) EmptyNonTerminals(on bool) {
	s.mu.Lock()
	s.ent = on
	s.mu.Unlock()
}

// ServFail makes queries for name fail with SERVFAIL.
func (s *Server) ServFail(name string) {
	s.mu.Lock()
	s.servfail[mdns.Fqdn(strings.ToLower(name))] = true
	s.mu.Unlock()
}

// Queries returns how many queries of type qtype ("MX", "A", "PTR"...)
// for name the server got.
func (s *Server) Queries(name, qtype string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[mdns.Fqdn(strings.ToLower(name))+" "+qtype]
}

// Close stops the server.
func (s *Server) Close() {
	s.udp.Shutdown()
	s.tcp.Shutdown()
}

// ServeDNS answers one query: the records of its name and type, the
// CNAME of the name if it has one, NXDOMAIN for an unknown name; in a
// signed zone, the same with DNSSEC records and an SOA in negative
// answers (answerSigned).
func (s *Server) ServeDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	resp := new(mdns.Msg)
	resp.SetReply(req)
	resp.Authoritative = true
	if len(req.Question) != 1 {
		resp.Rcode = mdns.RcodeFormatError
		w.WriteMsg(resp)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	s.mu.Lock()
	s.queries[name+" "+mdns.TypeToString[q.Qtype]]++
	rrs, known := s.records[name]
	fail := s.servfail[name]
	quiet := s.silent[name][mdns.TypeNone] || s.silent[name][q.Qtype]
	if !known && s.ent {
		known = s.hasDescendant(name)
	}
	zone := s.signedZoneOf(name)
	s.mu.Unlock()
	if quiet {
		return // the client times out
	}
	switch {
	case fail:
		resp.Rcode = mdns.RcodeServerFailure
	case zone != nil:
		_, udp := w.RemoteAddr().(*net.UDPAddr)
		s.answerSigned(resp, req, zone, name, rrs, known, udp)
	case !known:
		resp.Rcode = mdns.RcodeNameError
	default:
		resp.Answer = answer(rrs, q.Qtype)
	}
	w.WriteMsg(resp)
}

// answer returns the records of rrs that answer a query for qtype:
// those of that type, and the CNAME.
func answer(rrs []mdns.RR, qtype uint16) []mdns.RR {
	var out []mdns.RR
	for _, rr := range rrs {
		if t := rr.Header().Rrtype; t == qtype || t == mdns.TypeCNAME {
			out = append(out, rr)
		}
	}
	return out
}

// hasDescendant reports whether a record is known below name. The
// caller holds s.mu.
func (s *Server) hasDescendant(name string) bool {
	suffix := "." + name
	if name == "." {
		suffix = "."
	}
	for n := range s.records {
		if n != name && strings.HasSuffix(n, suffix) {
			return true
		}
	}
	return false
}
