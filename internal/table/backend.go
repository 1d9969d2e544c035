package table

import "context"

// Service names a kind of lookup in a table, as OpenSMTPD's table
// services do (smtpd-tables(7)): what the key is and what the value
// means. Tables kept outside smtpd (SQL, LDAP, table programs) have one
// query per service.
type Service string

// The services.
const (
	// Alias maps a user or address to a comma-separated list of
	// destinations.
	Alias Service = "alias"
	// Domain is the set of domains mail is accepted for.
	Domain Service = "domain"
	// Credentials maps a user name to "user:password" (a relay's
	// credentials) or the password hash of a user who authenticates.
	Credentials Service = "credentials"
	// Netaddr is a set of networks; the key is an IP address.
	Netaddr Service = "netaddr"
	// Userinfo maps a user name to "uid:gid:home".
	Userinfo Service = "userinfo"
	// Source is a set of source addresses.
	Source Service = "source"
	// Mailaddr is a set of mail addresses (or @domain entries).
	Mailaddr Service = "mailaddr"
	// Addrname maps an IP address to a host name.
	Addrname Service = "addrname"
	// Mailaddrmap maps a user to the addresses they may send as.
	Mailaddrmap Service = "mailaddrmap"
)

// Services are all the services, in the order of OpenSMTPD's table
// backends' configuration files.
var Services = []Service{Alias, Domain, Credentials, Netaddr, Userinfo, Source, Mailaddr, Addrname, Mailaddrmap}

// Backend answers lookups for a table kept outside smtpd: a database,
// a directory, a table program. Implementations are safe for
// concurrent use.
type Backend interface {
	// Lookup returns the value of key for service, and whether there
	// is one. An error means the backend cannot tell now (it is down,
	// slow, or answered nonsense): the caller turns it into a
	// temporary failure, never into "not found".
	Lookup(ctx context.Context, service Service, key string) (value string, found bool, err error)
	// Close releases the backend's connections and processes.
	Close() error
}
