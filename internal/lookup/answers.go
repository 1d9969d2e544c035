package lookup

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"smtpd/internal/config"
	"smtpd/internal/privsep"
	"smtpd/internal/table"
	"smtpd/proto"
)

// The answers below are what other processes ask of the tables, since
// lookup alone holds their contents (DESIGN.md, data ownership).

// ErrNoTable is the error of a request naming a table the configuration
// does not have: a broken peer, since every process numbers the tables
// of the same configuration alike.
var ErrNoTable = errors.New("lookup: no such table")

// table returns the table numbered id.
func (r *Resolver) table(id uint32) (*config.Table, error) {
	if int64(id) >= int64(len(r.Config.Tables)) {
		return nil, fmt.Errorf("%w: %d", ErrNoTable, id)
	}
	return r.Config.Tables[id], nil
}

// TableHas reports whether key is in the table numbered id, looked up
// as kind says: a plain key lowercased, an IP address against addresses
// and networks, a mail address whole or by "@domain".
func (r *Resolver) TableHas(id uint32, kind proto.TableKey, key string) (bool, error) {
	t, err := r.table(id)
	if err != nil {
		return false, err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	switch kind {
	case proto.TableKeyIP:
		ip, err := netip.ParseAddr(key)
		if err != nil {
			return false, nil
		}
		return r.tableHasIP(t, ip)
	case proto.TableKeyAddress:
		return r.tableHasAddress(t, key)
	}
	_, ok, err := r.tableLookup(t, table.Domain, strings.ToLower(key))
	return ok, err
}

// ErrNoCredentials is the error of a credentials request for a label
// the table does not have, or whose value is not "user:password".
var ErrNoCredentials = errors.New("no credentials")

// Credentials returns the user and password of entry label of the table
// numbered id, whose values are "user:password".
func (r *Resolver) Credentials(id uint32, label string) (user, password string, err error) {
	t, err := r.table(id)
	if err != nil {
		return "", "", err
	}
	r.mu.RLock()
	secret, ok, err := r.tableLookup(t, table.Credentials, label)
	r.mu.RUnlock()
	if err != nil {
		return "", "", err
	}
	user, password, found := strings.Cut(secret, ":")
	if !ok || !found {
		return "", "", fmt.Errorf("%w %q in table %s", ErrNoCredentials, label, t.Name)
	}
	return user, password, nil
}

// tableAnswer answers mfa's question about a filter table.
func (r *Resolver) tableAnswer(q *proto.MFATableQuery) (*proto.LookupTableResult, error) {
	found, err := r.TableHas(q.Table, q.Kind, q.Key)
	var te *tableError
	switch {
	case errors.As(err, &te):
		// a table that cannot tell now: mfa's verdict is a tempfail
		return &proto.LookupTableResult{Outcome: proto.Outcome{Status: proto.StatusTempfail, Text: err.Error()}}, nil
	case err != nil:
		return nil, err
	}
	if found {
		return &proto.LookupTableResult{Outcome: proto.Outcome{Status: proto.StatusOK}}, nil
	}
	return &proto.LookupTableResult{Outcome: proto.Outcome{Status: proto.StatusPermfail}}, nil
}

// credentialsAnswer answers mta's question about a relay's credentials.
func (r *Resolver) credentialsAnswer(q *proto.MTACredentialsQuery) (*proto.LookupCredentials, error) {
	user, password, err := r.Credentials(q.Table, q.Label)
	var te *tableError
	switch {
	case errors.Is(err, ErrNoCredentials):
		return &proto.LookupCredentials{Outcome: proto.Outcome{Status: proto.StatusPermfail, Text: err.Error()}}, nil
	case errors.As(err, &te):
		// the delivery is tried again later
		return &proto.LookupCredentials{Outcome: proto.Outcome{Status: proto.StatusTempfail, Text: err.Error()}}, nil
	case err != nil:
		return nil, err
	}
	return &proto.LookupCredentials{Outcome: proto.Outcome{Status: proto.StatusOK}, User: user, Password: password}, nil
}

// accountAnswer answers the parent's question about the account of a
// local delivery.
func (r *Resolver) accountAnswer(q *proto.ParentAccountQuery) *proto.LookupAccountResult {
	acct, err := r.Account(q.Action, q.User)
	switch {
	case errors.Is(err, privsep.ErrNoUser):
		return &proto.LookupAccountResult{Outcome: proto.Outcome{Status: proto.StatusPermfail, Text: err.Error()}}
	case err != nil:
		return &proto.LookupAccountResult{Outcome: proto.Outcome{Status: proto.StatusTempfail, Text: err.Error()}}
	}
	return &proto.LookupAccountResult{Outcome: proto.Outcome{Status: proto.StatusOK}, Account: acct}
}
