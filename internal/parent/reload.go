package parent

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"strings"

	"smtpd/internal/config"
	"smtpd/proto"
)

// reload reads the configuration again on SIGHUP and applies what a
// running daemon can take: the table files, which lookup reads again,
// and the certificates of the TLS listeners, which smtp serves to the
// sessions that follow. Everything else (listeners, actions, rules,
// limits...) takes effect at the next restart; the log names the parts
// that differ. A configuration that does not load changes nothing. The
// error is a lost child.
func (p *Parent) reload() error {
	// Without the tables: lookup alone reads them (DESIGN.md, data
	// ownership), and reports a broken table file itself. Without the
	// keys: they are loaded below one listener at a time, so that a bad
	// pair keeps its listener's old one rather than the whole reload
	// failing.
	next, err := config.LoadWithoutTables(p.cfg.Path)
	if err != nil {
		var le *config.LoadError
		if errors.As(err, &le) {
			for _, line := range le.Lines() {
				p.log.Warnf("SIGHUP: %s", line)
			}
		} else {
			p.log.Warnf("SIGHUP: %v", err)
		}
		p.log.Warnf("SIGHUP: configuration not reloaded; still running on the previous one")
		return nil
	}
	// lookup answers with LookupTablesReloaded, which empties the
	// accounts the parent keeps
	if err := p.children[proto.ProcLookup].ch.Send(&proto.ParentTablesReload{}, 0); err != nil {
		return fmt.Errorf("lookup: %w", err)
	}
	// lookup reloads the tables and logs how that went
	var certs []string
	for _, l := range p.cfg.Listeners {
		if l.TLS == config.TLSNone {
			continue
		}
		sent, err := p.reloadCertificate(l.Name, next)
		if err != nil {
			return err
		}
		if sent {
			certs = append(certs, l.Name)
		}
	}
	what := "SIGHUP: lookup reads the tables again"
	if len(certs) > 0 {
		what += "; reloaded the certificates of listeners " + strings.Join(certs, ", ")
	}
	if changed := p.changes(); len(changed) > 0 {
		p.log.Infof("%s; changed, taking effect at the next restart: %s", what, strings.Join(changed, ", "))
	} else {
		p.log.Infof("%s; no other change seen (listeners, actions, limits... take effect at the next restart)", what)
	}
	return nil
}

// reloadCertificate reads the certificate and key that next names for
// the running TLS listener name and hands them to smtp, if they load;
// it reports whether it did. The parent reads them as root, outside any
// chroot, as smtp did at its start; the key goes to smtp alone, which
// holds the listener's key already.
func (p *Parent) reloadCertificate(name string, next *config.Config) (bool, error) {
	var l *config.Listener
	for _, nl := range next.Listeners {
		if nl.Name == name {
			l = nl
		}
	}
	switch {
	case l == nil:
		p.log.Warnf("SIGHUP: listener %s is no longer in the configuration: it keeps its certificate until the restart", name)
		return false, nil
	case l.TLS == config.TLSNone:
		p.log.Warnf("SIGHUP: listener %s has no TLS in the new configuration: it keeps its certificate until the restart", name)
		return false, nil
	}
	certPEM, err := os.ReadFile(l.Cert)
	var keyPEM []byte
	if err == nil {
		keyPEM, err = os.ReadFile(l.Key)
	}
	// not kept beyond the send (the channel's buffers may hold a copy
	// until later frames overwrite them; only smtp ever receives it)
	defer clear(keyPEM)
	if err == nil {
		_, err = tls.X509KeyPair(certPEM, keyPEM)
	}
	if err != nil {
		p.log.Warnf("SIGHUP: listener %s: certificate %s with key %s: %v; keeping the old one", name, l.Cert, l.Key, err)
		return false, nil
	}
	m := &proto.ParentListenerCertificate{Listener: name, CertPEM: certPEM, KeyPEM: keyPEM}
	err = p.children[proto.ProcSMTP].ch.Send(m, 0)
	if errors.Is(err, proto.ErrPayloadTooLarge) {
		// a frame holds 16 KiB: a longer chain loads at the restart
		p.log.Warnf("SIGHUP: listener %s: certificate %s with key %s is too large to reload (%d bytes); keeping the old one until the restart", name, l.Cert, l.Key, len(certPEM)+len(keyPEM))
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("smtp: %w", err)
	}
	return true, nil
}

// changes names the parts of the configuration file that differ from
// the one the daemon started with, if both can be read.
func (p *Parent) changes() []string {
	if p.source == nil {
		return nil
	}
	src, err := os.ReadFile(p.cfg.Path)
	if err != nil {
		return nil
	}
	return config.Changes(p.source, src)
}
