package smtp

import (
	"context"
	"crypto/tls"
	"sync"
	"time"

	"smtpd/internal/smtp/server"
	"smtpd/proto"
)

// track records an engine for a drain and returns it.
func (s *Server) track(srv *server.Server) *server.Server {
	s.serversMu.Lock()
	defer s.serversMu.Unlock()
	s.servers = append(s.servers, srv)
	return srv
}

// engines returns the engines of the listeners and of local sessions.
func (s *Server) engines() []*server.Server {
	s.serversMu.Lock()
	defer s.serversMu.Unlock()
	return append([]*server.Server(nil), s.servers...)
}

// sessions counts the sessions the engines serve.
func sessions(servers []*server.Server) int {
	n := 0
	for _, srv := range servers {
		n += srv.Sessions()
	}
	return n
}

// reloadCertificate puts the certificate the parent read again on
// SIGHUP in place for the handshakes to come; a session already under
// TLS keeps the one it was served. A pair that does not load (the
// parent checked it, but smtp does not act on a key it cannot use)
// leaves the old one in place.
func (s *Server) reloadCertificate(m *proto.ParentListenerCertificate) {
	// the key lives on in the parsed certificate (and, until overwritten,
	// in the channel's read buffer)
	defer clear(m.KeyPEM)
	current := s.certs[m.Listener]
	if current == nil {
		s.log.Warnf("listener %s: new certificate for a listener without TLS: ignored", m.Listener)
		return
	}
	cert, err := tls.X509KeyPair(m.CertPEM, m.KeyPEM)
	if err != nil {
		s.log.Warnf("listener %s: new certificate does not load, keeping the old one: %v", m.Listener, err)
		return
	}
	current.Store(&cert)
	if leaf := cert.Leaf; leaf != nil {
		s.log.Infof("listener %s: certificate reloaded: %s, serial %x, valid until %s", m.Listener, leaf.Subject, leaf.SerialNumber, leaf.NotAfter.UTC().Format(time.RFC3339))
		return
	}
	s.log.Infof("listener %s: certificate reloaded", m.Listener)
}

// drain stops taking sessions and lets those receiving a message finish
// it, for at most timeout, as the daemon stops: every engine's Shutdown
// closes its listener at once, ends each idle session with 421 at its
// next command and each other one once its transaction is over (its
// message committed by queue and acknowledged). The sessions left when
// the time is up are cut: their clients never got a 250 and will try
// again. Then smtp tells the parent, which stops the daemon.
func (s *Server) drain(timeout time.Duration) {
	servers := s.engines()
	s.draining.Store(true)
	s.log.Infof("draining: %d sessions, for at most %v", sessions(servers), timeout)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, srv := range servers {
		wg.Go(func() { srv.Shutdown(ctx) })
	}
	wg.Wait()
	cut := sessions(servers)
	if cut > 0 {
		s.log.Warnf("drain time of %v over: closing %d sessions", timeout, cut)
		for _, srv := range servers {
			srv.Close()
		}
	} else {
		s.log.Infof("drained")
	}
	if err := s.child.Send(s.child.Parent, &proto.SMTPDrained{Cut: uint32(cut)}, 0); err != nil {
		s.log.Fatalf("drained: %v", err)
	}
}
