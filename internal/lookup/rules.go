package lookup

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"smtpd/internal/address"
	"smtpd/internal/config"
	"smtpd/internal/envelope"
	"smtpd/internal/mailauth/srs"
	"smtpd/internal/monkey"
	"smtpd/internal/privsep"
	"smtpd/internal/table"
	"smtpd/proto"
)

// MaxDepth bounds alias and virtual expansion, as in OpenSMTPD.
const MaxDepth = 10

// Resolver matches and expands recipients under a configuration.
type Resolver struct {
	Config *config.Config
	// LocalDomains are the names `for = "local"` matches: the host name
	// and localhost.
	LocalDomains []string
	// Passwd looks up a user in the system password database; a test
	// may replace it.
	Passwd func(name string) (proto.Account, error)
	// Forward returns the entries of a user's ~/.forward, none if the
	// user has no usable one; nil means .forward files are not read.
	Forward func(proto.Account) ([]string, error)
	// SRS, if set, rewrites the senders of mail forwarded to other
	// domains and reverses the bounces to such senders.
	SRS *srs.Rewriter
	// Backends are the tables kept outside smtpd, by table id.
	Backends map[int]*backendTable

	// mu lets Reload replace table contents while expansions run.
	mu sync.RWMutex
}

// Reload reads the file tables again (the one named name, or all when
// name is empty). A file that fails to parse keeps its old contents and
// is reported; the others are replaced.
func (r *Resolver) Reload(name string) error {
	var errs []error
	found := false
	for _, t := range r.Config.Tables {
		if t.File == "" || name != "" && t.Name != name {
			continue
		}
		found = true
		data, err := os.ReadFile(t.File)
		if err == nil {
			err = monkey.Fail("table.read")
		}
		var s *table.Static
		if err == nil {
			s, err = table.Parse(data)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("table %s: %s: %w", t.Name, t.File, err))
			continue
		}
		r.mu.Lock()
		t.Data = s
		r.mu.Unlock()
	}
	for id, bt := range r.Backends {
		if t := r.Config.Tables[id]; name == "" || t.Name == name {
			// the next lookups ask the backend again
			found = true
			if err := bt.flush(); err != nil {
				errs = append(errs, fmt.Errorf("table %s: %w", t.Name, err))
			}
		}
	}
	if name != "" && !found {
		errs = append(errs, fmt.Errorf("no table %q read from a file or kept outside smtpd", name))
	}
	return errors.Join(errs...)
}

// NewResolver returns a resolver for cfg using the system password
// database.
func NewResolver(cfg *config.Config) *Resolver {
	return &Resolver{
		Config:       cfg,
		LocalDomains: []string{strings.ToLower(cfg.Hostname), "localhost", "localhost.localdomain"},
		Passwd:       privsep.LookupUser,
	}
}

// rejection is a permanent refusal with its SMTP reply.
type rejection struct{ reply proto.Reply }

func (r *rejection) Error() string {
	return fmt.Sprintf("%d %s %s", r.reply.Code, r.reply.Enhanced, r.reply.Text)
}

func reject(code uint32, enhanced, format string, args ...any) error {
	return &rejection{proto.Reply{Code: code, Enhanced: enhanced, Text: fmt.Sprintf(format, args...)}}
}

// Expand matches rcpt for a session and expands it. The result says
// StatusOK with destinations, StatusPermfail with the reply for the
// client, or StatusTempfail when a table or the password database could
// not be read.
func (r *Resolver) Expand(sess proto.Session, rcpt string) proto.LookupExpandResult {
	r.mu.RLock()
	defer r.mu.RUnlock()
	x := &expansion{r: r, sess: sess, seen: map[string]bool{}}
	err := x.address(rcpt, 0)
	var rej *rejection
	switch {
	case err == nil && len(x.out) == 0:
		return proto.LookupExpandResult{Status: proto.StatusPermfail, Reply: proto.Reply{Code: 550, Enhanced: "5.1.1", Text: "Recipient expands to nothing"}}
	case err == nil:
		return proto.LookupExpandResult{Status: proto.StatusOK, Destinations: x.out}
	case errors.As(err, &rej):
		return proto.LookupExpandResult{Status: proto.StatusPermfail, Reply: rej.reply}
	default:
		return proto.LookupExpandResult{Status: proto.StatusTempfail, Reply: proto.Reply{Code: 451, Enhanced: "4.3.0", Text: "Temporary lookup failure"}}
	}
}

type expansion struct {
	r    *Resolver
	sess proto.Session
	seen map[string]bool
	out  []proto.Destination
	// srsReversed is set once a bounce to an SRS address was turned
	// back into its original sender, which is not rewritten again
	srsReversed bool
}

// srsBounce expands a recipient that is one of our SRS addresses: a
// bounce to mail we forwarded. A forged or expired one is refused; a
// good one goes to the address it stands for, matched like any address
// an expansion gives, as mail from this host.
func (x *expansion) srsBounce(a address.Address, depth int) error {
	orig, err := x.r.SRS.Reverse(a.String())
	if err != nil {
		return reject(550, "5.7.1", "Invalid SRS address <%s>", a.String())
	}
	x.srsReversed = true
	return x.address(orig, depth+1)
}

// address matches an address against the rules and expands it.
func (x *expansion) address(s string, depth int) error {
	if depth > MaxDepth {
		return reject(550, "5.4.6", "Expansion too deep for <%s>", s)
	}
	a, err := address.Parse(s)
	if err != nil {
		return reject(553, "5.1.3", "Invalid recipient address")
	}
	if a.Domain == "" {
		// RCPT TO:<postmaster> without a domain is for this host
		// (RFC 5321 §4.1.1.3)
		a.Domain = x.r.LocalDomains[0]
	}
	key := strings.ToLower(a.String())
	if x.seen[key] {
		return nil // a loop: this address is expanded already
	}
	x.seen[key] = true
	if x.r.SRS != nil && strings.EqualFold(a.Domain, x.r.Config.SRS.Domain) && srs.IsSRS(a.String()) {
		return x.srsBounce(a, depth)
	}
	sess := x.sess
	if depth > 0 {
		// an address an alias, a virtual entry or a .forward gave is
		// this host's to pass on: it matches as mail from this host,
		// as in OpenSMTPD, so that forwarding needs no open relay rule
		sess.Local = true
	}
	idx, m, err := x.r.match(sess, a)
	switch {
	case err != nil:
		return err
	case m == nil && x.r.ours(a.Domain):
		return reject(550, "5.1.1", "Invalid recipient: <%s>", s)
	case m == nil:
		return reject(550, "5.7.1", "Relay denied for <%s>", s)
	case m.Reject:
		return reject(550, "5.7.1", "Delivery not authorized for <%s>", s)
	}
	act := m.Action
	if act.Method == config.Relay {
		d := proto.Destination{Kind: string(envelope.MTA), Rule: uint32(idx), Action: act.Name, Dest: a.String()}
		if depth > 0 && x.r.SRS != nil && !x.srsReversed {
			// forwarded: the sender's domain did not authorize us to
			// send for it, the SRS domain does
			if sender, ok := x.r.SRS.Forward(x.sess.Sender, x.r.Config.SRS.Domain); ok {
				d.Sender = sender
			}
		}
		x.out = append(x.out, d)
		return nil
	}
	if act.Method == config.Externals {
		// sent on by the action's commands, run as its user: the
		// address is someone else's, kept whole (tag and case) for them
		if _, err := x.r.account(act, act.User); err != nil {
			return fmt.Errorf("lookup: action %s: %w", act.Name, err)
		}
		x.out = append(x.out, proto.Destination{
			Kind: string(envelope.MDA), Rule: uint32(idx), Action: act.Name,
			Dest: a.String(), User: act.User,
		})
		return nil
	}
	if act.Virtual != nil {
		return x.virtual(idx, act, a, depth)
	}
	if act.Alias != nil {
		user, _ := a.Base()
		x.seen["alias:"+act.Name+":"+strings.ToLower(user)] = true
		v, ok, err := x.r.tableLookup(act.Alias, table.Alias, strings.ToLower(user))
		if err != nil {
			return err
		}
		if ok {
			return x.targets(idx, act, a, v, depth)
		}
	}
	return x.local(idx, act, a, depth, true)
}

// virtual expands through the virtual table in the order user+tag@dom,
// user@dom, user+tag, user, @dom, @.
func (x *expansion) virtual(idx int, act *config.Action, a address.Address, depth int) error {
	user, tag := a.Base()
	user = strings.ToLower(user)
	var keys []string
	if tag != "" {
		keys = append(keys, strings.ToLower(a.User)+"@"+a.Domain)
	}
	keys = append(keys, user+"@"+a.Domain)
	if tag != "" {
		keys = append(keys, strings.ToLower(a.User))
	}
	keys = append(keys, user, "@"+a.Domain, "@")
	for _, k := range keys {
		v, ok, err := x.r.tableLookup(act.Virtual, table.Alias, k)
		if err != nil {
			return err
		}
		if ok {
			return x.targets(idx, act, a, v, depth)
		}
	}
	return reject(550, "5.1.1", "Invalid recipient: <%s>", a)
}

// AliasUser runs the program and file deliveries of aliases when the
// action names no user, as Postfix's default_privs does.
const AliasUser = "nobody"

// targets expands a table value: comma-separated users, addresses,
// "|command" and "/file" deliveries, ":include:/file" lists and
// error:CODE text entries.
func (x *expansion) targets(idx int, act *config.Action, orig address.Address, value string, depth int) error {
	if depth > MaxDepth {
		return reject(550, "5.4.6", "Expansion too deep for <%s>", orig)
	}
	for _, t := range splitTargets(value) {
		switch {
		case t == "":
		case strings.HasPrefix(t, "error:"):
			return aliasError(strings.TrimPrefix(t, "error:"))
		case strings.HasPrefix(t, "|") || strings.HasPrefix(t, "/"):
			if err := x.program(idx, act, orig, t, ""); err != nil {
				return err
			}
		case strings.HasPrefix(t, ":include:"):
			if x.seen[t] {
				continue // included already: a loop
			}
			x.seen[t] = true
			data, err := os.ReadFile(strings.TrimPrefix(t, ":include:"))
			if err != nil {
				return fmt.Errorf("lookup: %s: %w", t, err)
			}
			if err := x.targets(idx, act, orig, includeList(data), depth+1); err != nil {
				return err
			}
		case strings.Contains(t, "@"):
			if err := x.address(t, depth+1); err != nil {
				return err
			}
		default:
			if err := x.aliasedUser(idx, act, address.Address{User: t, Domain: orig.Domain}, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// aliasedUser expands a bare user name an alias gives: through the
// aliases again when it has an entry of its own (postmaster: root,
// root: alice), as sendmail and OpenSMTPD do, else to the user. A name
// met again on the way is the user itself, which ends a loop such as
// root: root, alice.
func (x *expansion) aliasedUser(idx int, act *config.Action, a address.Address, depth int) error {
	if act.Alias != nil {
		// the base of user+tag, as address() looks aliases up
		base, _ := a.Base()
		name := strings.ToLower(base)
		key := "alias:" + act.Name + ":" + name
		if !x.seen[key] {
			x.seen[key] = true
			v, ok, err := x.r.tableLookup(act.Alias, table.Alias, name)
			if err != nil {
				return err
			}
			if ok {
				return x.targets(idx, act, a, v, depth)
			}
		}
	}
	return x.local(idx, act, a, depth, true)
}

// splitTargets splits an alias value at commas, except inside a quoted
// "|command with, commas".
func splitTargets(value string) []string {
	var out []string
	var cur strings.Builder
	quoted := false
	for _, c := range value {
		switch {
		case c == '"':
			quoted = !quoted
		case c == ',' && !quoted:
			out = append(out, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteRune(c)
		}
	}
	return append(out, strings.TrimSpace(cur.String()))
}

// includeList joins the lines of an :include: file into one value,
// leaving out comments.
func includeList(data []byte) string {
	var entries []string
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && line[0] != '#' {
			entries = append(entries, line)
		}
	}
	return strings.Join(entries, ",")
}

// program makes a delivery to a "|command" or a "/file", run as the
// user whose .forward names it, else as the action's user or AliasUser.
func (x *expansion) program(idx int, act *config.Action, orig address.Address, target, owner string) error {
	key := "target:" + act.Name + ":" + owner + ":" + target
	if x.seen[key] {
		return nil
	}
	x.seen[key] = true
	account := owner
	switch {
	case account != "":
	case act.User != "":
		account = act.User
	default:
		account = AliasUser
	}
	if _, err := x.r.account(act, account); err != nil {
		return err
	}
	x.out = append(x.out, proto.Destination{
		Kind: string(envelope.MDA), Rule: uint32(idx), Action: act.Name,
		Dest: orig.String(), User: account, Target: target,
	})
	return nil
}

// aliasError turns "550 [5.x.y] text" from an alias into a rejection;
// only 4xx and 5xx codes are allowed.
func aliasError(s string) error {
	code, text, _ := strings.Cut(strings.TrimSpace(s), " ")
	n, err := strconv.Atoi(code)
	if err != nil || n < 400 || n > 599 {
		return reject(550, "5.1.1", "Invalid recipient")
	}
	enhanced := fmt.Sprintf("%d.0.0", n/100)
	if first, rest, _ := strings.Cut(text, " "); strings.Count(first, ".") == 2 && first[0] == code[0] {
		enhanced, text = first, rest
	}
	return &rejection{proto.Reply{Code: uint32(n), Enhanced: enhanced, Text: text}}
}

// local makes a local delivery to the user of a, who must exist in the
// userbase unless the action delivers as a fixed user. A system user's
// ~/.forward, if the action allows it, replaces the delivery.
func (x *expansion) local(idx int, act *config.Action, a address.Address, depth int, forward bool) error {
	if depth > MaxDepth {
		return reject(550, "5.4.6", "Expansion too deep for <%s>", a)
	}
	user, _ := a.Base()
	user = strings.ToLower(user)
	key := "user:" + act.Name + ":" + user + "@" + a.Domain
	if x.seen[key] {
		return nil
	}
	x.seen[key] = true
	account := user
	if act.User != "" {
		account = act.User
	}
	acct, err := x.r.account(act, account)
	if err != nil {
		if errors.Is(err, privsep.ErrNoUser) {
			return reject(550, "5.1.1", "Invalid recipient: <%s>", a)
		}
		return err
	}
	if forward && act.User == "" && act.Userbase == nil && x.r.Forward != nil {
		entries, err := x.r.Forward(acct)
		if err != nil {
			return err
		}
		if len(entries) > 0 {
			return x.forward(idx, act, a, acct, entries, depth)
		}
	}
	x.out = append(x.out, proto.Destination{
		Kind: string(envelope.MDA), Rule: uint32(idx), Action: act.Name,
		Dest: address.Address{User: user, Domain: a.Domain}.String(), User: account,
	})
	return nil
}

// forward expands the entries of a user's .forward: addresses, other
// users, "|command" and "/file" deliveries run as the user, and
// "\user" or the user's own name, a delivery to the user's own mailbox.
func (x *expansion) forward(idx int, act *config.Action, a address.Address, acct proto.Account, entries []string, depth int) error {
	for _, t := range entries {
		var err error
		switch {
		case strings.HasPrefix(t, "\\") || strings.EqualFold(t, acct.Name):
			// \user, or the user's own name: a copy in the user's own
			// mailbox, as sendmail and OpenSMTPD keep it, without
			// reading the .forward again
			self := strings.TrimPrefix(t, "\\")
			delete(x.seen, "user:"+act.Name+":"+strings.ToLower(self)+"@"+a.Domain)
			err = x.local(idx, act, address.Address{User: self, Domain: a.Domain}, depth+1, false)
		case strings.HasPrefix(t, "|") || strings.HasPrefix(t, "/"):
			err = x.program(idx, act, a, t, acct.Name)
		case strings.Contains(t, "@"):
			err = x.address(t, depth+1)
		default:
			err = x.local(idx, act, address.Address{User: t, Domain: a.Domain}, depth+1, true)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// ParseForward splits the content of a .forward file into entries:
// separated by commas or lines, comments and quotes removed.
func ParseForward(data []byte) []string {
	var out []string
	for _, t := range splitTargets(includeList(data)) {
		if t != "" {
			out = append(out, t)
		}
	}
	return out
}

// Account resolves a user through the action's userbase table, whose
// values are "uid:gid:directory", or else the password database.
func (r *Resolver) account(act *config.Action, name string) (proto.Account, error) {
	if act == nil || act.Userbase == nil {
		return r.Passwd(name)
	}
	v, ok, err := r.tableLookup(act.Userbase, table.Userinfo, name)
	if err != nil {
		return proto.Account{}, err
	}
	if !ok {
		return proto.Account{}, fmt.Errorf("%w %q", privsep.ErrNoUser, name)
	}
	f := strings.SplitN(v, ":", 3)
	if len(f) != 3 {
		return proto.Account{}, fmt.Errorf("lookup: userbase entry of %q is not uid:gid:directory", name)
	}
	uid, err1 := strconv.ParseUint(f[0], 10, 32)
	gid, err2 := strconv.ParseUint(f[1], 10, 32)
	if err1 != nil || err2 != nil {
		return proto.Account{}, fmt.Errorf("lookup: userbase entry of %q is not uid:gid:directory", name)
	}
	return proto.Account{Name: name, UID: uint32(uid), GID: uint32(gid), Directory: f[2]}, nil
}

// Account resolves the local account name of an envelope of action.
func (r *Resolver) Account(action, name string) (proto.Account, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.account(r.Config.Action(action), name)
}

// ours reports whether a domain is one we deliver for under some rule.
func (r *Resolver) ours(domain string) bool {
	if r.isLocal(domain) {
		return true
	}
	for _, m := range r.Config.Matches {
		if m.For != nil && m.For.Kind == config.CondTable {
			// a table that cannot tell counts as ours: the refusal
			// then names the recipient, not relaying
			if _, ok, err := r.tableLookup(m.For.Table, table.Domain, domain); ok || err != nil {
				return true
			}
		}
	}
	return false
}

func (r *Resolver) isLocal(domain string) bool {
	if domain == "" {
		return true
	}
	for _, d := range r.LocalDomains {
		if domain == d {
			return true
		}
	}
	return false
}

// match returns the first rule whose conditions hold, and its index;
// an error when a table cannot tell whether one holds.
func (r *Resolver) match(sess proto.Session, a address.Address) (int, *config.Match, error) {
	for i, m := range r.Config.Matches {
		if !resultsOK(m.Results, sess) {
			continue
		}
		for _, ok := range []func() (bool, error){
			func() (bool, error) { return r.fromOK(m.From, sess) },
			func() (bool, error) { return r.forOK(m.For, a.Domain) },
			func() (bool, error) { return r.condHasAddress(m.Sender, sess.Sender) },
			func() (bool, error) { return r.condHasAddress(m.Rcpt, a.String()) },
			func() (bool, error) { return r.condHas(m.Helo, table.Domain, strings.ToLower(sess.Helo)) },
			func() (bool, error) { return r.condHas(m.Auth, table.Credentials, sess.Auth) },
		} {
			holds, err := ok()
			if err != nil {
				return -1, nil, err
			}
			if !holds {
				goto next
			}
		}
		return i, m, nil
	next:
	}
	return -1, nil, nil
}

// resultsOK reports whether the session's check results satisfy a
// rule's conditions on them; a check the listener did not make
// satisfies none.
func resultsOK(want map[string][]string, sess proto.Session) bool {
	for check, results := range want {
		if !slices.Contains(results, sess.Result(check)) {
			return false
		}
	}
	return true
}

func (r *Resolver) fromOK(c *config.Cond, sess proto.Session) (bool, error) {
	switch c.Kind {
	case config.CondAny:
		return true, nil
	case config.CondLocal:
		return sess.Local, nil
	case config.CondAuth:
		return sess.Auth != "", nil
	case config.CondSocket:
		return sess.Remote == "", nil
	}
	ip, err := netip.ParseAddr(sess.Remote)
	if err != nil {
		return false, nil
	}
	return r.tableHasIP(c.Table, ip)
}

func (r *Resolver) forOK(c *config.Cond, domain string) (bool, error) {
	switch c.Kind {
	case config.CondAny:
		return true, nil
	case config.CondLocal:
		return r.isLocal(domain), nil
	}
	return r.condHas(c, table.Domain, domain)
}

// condHas reports whether a condition's table holds key; no condition
// always holds.
func (r *Resolver) condHas(c *config.Cond, service table.Service, key string) (bool, error) {
	if c == nil {
		return true, nil
	}
	_, ok, err := r.tableLookup(c.Table, service, key)
	return ok, err
}

// condHasAddress matches an address by itself or by "@domain".
func (r *Resolver) condHasAddress(c *config.Cond, addr string) (bool, error) {
	if c == nil {
		return true, nil
	}
	return r.tableHasAddress(c.Table, addr)
}
