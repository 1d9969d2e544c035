package lookup

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/GehirnInc/crypt"
	"github.com/GehirnInc/crypt/sha512_crypt"
	"golang.org/x/crypto/bcrypt"

	"smtpd/internal/config"
	"smtpd/internal/table"
)

// ErrUnknownHash is a password hash of a form we cannot check.
var ErrUnknownHash = errors.New("lookup: password hash is neither bcrypt ($2a$, $2b$, $2y$) nor SHA-512-crypt ($6$)")

// decoyHash is checked when the user does not exist, so that an unknown
// user costs as much time as a wrong password and names cannot be
// probed by timing.
const decoyHash = "$2a$10$7EqJtq98hPqEX7fNZaFWoOhi5BWX4Z/Bx0O5UG3sLjm6vlwT5VZkK"

// CheckPassword reports whether password is user's in the auth table of
// the listener. An error is a fault of the table (an unusable hash or
// no such listener), not a wrong password.
func (r *Resolver) CheckPassword(listener, user, password string) (bool, error) {
	r.mu.RLock()
	l := r.listener(listener)
	var hash string
	var found bool
	var err error
	if l != nil && l.AuthTable != nil {
		hash, found, err = r.tableLookup(l.AuthTable, table.Credentials, user)
		if r.Backends[l.AuthTable.ID] != nil {
			// a database answers "user:hash", as OpenSMTPD's tables
			if _, h, ok := strings.Cut(hash, ":"); ok {
				hash = h
			}
		}
	}
	r.mu.RUnlock()
	if l == nil || l.AuthTable == nil {
		return false, fmt.Errorf("lookup: listener %q has no auth_table", listener)
	}
	if err != nil {
		return false, err
	}
	if !found {
		bcrypt.CompareHashAndPassword([]byte(decoyHash), []byte(password))
		return false, nil
	}
	return checkHash(strings.TrimSpace(hash), password)
}

// checkHash compares a password with a bcrypt or SHA-512-crypt hash.
func checkHash(hash, password string) (bool, error) {
	switch {
	case strings.HasPrefix(hash, "$2a$"), strings.HasPrefix(hash, "$2b$"), strings.HasPrefix(hash, "$2y$"):
		err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(password))
		if errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
			return false, nil
		}
		return err == nil, err
	case strings.HasPrefix(hash, "$6$"):
		err := sha512_crypt.New().Verify(hash, []byte(password))
		if errors.Is(err, crypt.ErrKeyMismatch) {
			return false, nil
		}
		return err == nil, err
	}
	// compare something, so that a broken entry is not faster
	subtle.ConstantTimeCompare([]byte(hash), []byte(password))
	return false, ErrUnknownHash
}

// SenderAllowed reports whether an authenticated user may use sender in
// MAIL FROM on the listener: always without a senders table, otherwise
// if the user's entry lists the address or its @domain. An error means
// the table cannot tell now.
func (r *Resolver) SenderAllowed(listener, user, sender string) (bool, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	l := r.listener(listener)
	if l == nil || l.Senders == nil {
		return l != nil, nil
	}
	v, ok, err := r.tableLookup(l.Senders, table.Mailaddrmap, user)
	if err != nil || !ok {
		return false, err
	}
	sender = strings.ToLower(sender)
	domain := ""
	if i := strings.LastIndexByte(sender, '@'); i >= 0 {
		domain = sender[i:]
	}
	for _, allowed := range strings.FieldsFunc(strings.ToLower(v), func(c rune) bool { return c == ',' || c == ' ' || c == '\t' }) {
		if allowed == sender || domain != "" && allowed == domain {
			return true, nil
		}
	}
	return false, nil
}

// ETRNAllowed reports whether the client at remote (an IP address) may
// use ETRN (RFC 1985) on the listener: whether the listener's etrn table
// holds the address or a network around it, looked up as a match rule's
// from table is. Without an etrn table nobody may. An error means the
// table cannot tell now.
func (r *Resolver) ETRNAllowed(listener, remote string) (bool, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	l := r.listener(listener)
	if l == nil || l.ETRN == nil {
		return false, nil
	}
	ip, err := netip.ParseAddr(remote)
	if err != nil {
		return false, nil
	}
	return r.tableHasIP(l.ETRN, ip)
}

func (r *Resolver) listener(name string) *config.Listener {
	for _, l := range r.Config.Listeners {
		if l.Name == name {
			return l
		}
	}
	return nil
}
