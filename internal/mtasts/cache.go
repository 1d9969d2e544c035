package mtasts

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"smtpd/internal/safeio"
)

// ErrCacheCorrupt marks a cache file that does not hold a valid policy
// of its domain.
var ErrCacheCorrupt = errors.New("corrupt MTA-STS cache entry")

// maxCacheFile bounds what Load reads of a cache file: a policy of
// DefaultMaxSize, in JSON, fits.
const maxCacheFile = 1 << 20

// staleTemp is the age after which a temporary file in the cache
// directory is taken for one a crashed writer left.
const staleTemp = time.Hour

// Cache keeps policies in a directory, one file per domain named by the
// domain in lower case, holding the policy with its id and fetch time in
// JSON (RFC 8461 §5.1: a policy is used until max_age after its fetch,
// across restarts). Files are replaced atomically and durably, so
// several processes or goroutines may share a directory; the last Put
// of a domain wins. Names starting with '.' are temporary files.
type Cache struct {
	// Dir is the directory, required; Put creates it (mode 0700) if
	// need be.
	Dir string
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// cacheEntry is the JSON of a cache file.
type cacheEntry struct {
	Domain  string    `json:"domain"`
	ID      string    `json:"id"`
	Fetched time.Time `json:"fetched"`
	Mode    Mode      `json:"mode"`
	MX      []string  `json:"mx,omitempty"`
	// MaxAge is in seconds, as in the policy.
	MaxAge int64 `json:"max_age"`
}

func (c *Cache) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// path returns the normalized domain and the path of its file. A domain
// that is not a host name, and so could name a file elsewhere ('/',
// "..") or a temporary one (a leading '.'), is an error.
func (c *Cache) path(domain string) (string, string, error) {
	if c.Dir == "" {
		return "", "", errors.New("MTA-STS cache: no directory")
	}
	d, err := normalizeDomain(domain)
	if err != nil {
		return "", "", fmt.Errorf("MTA-STS cache: %w", err)
	}
	return d, filepath.Join(c.Dir, d), nil
}

// Get returns the cached policy of domain if there is one that has not
// expired (RFC 8461 §5.1). An expired policy is not returned, nor one
// whose file cannot be read or is corrupt: Load tells why.
func (c *Cache) Get(domain string) (*Policy, bool) {
	p, err := c.Load(domain)
	if err != nil || p.expired(c.now()) {
		return nil, false
	}
	return p, true
}

// Load returns the cached policy of domain, expired or not. For a
// domain without one the error wraps fs.ErrNotExist, for a file that is
// no valid entry ErrCacheCorrupt.
func (c *Cache) Load(domain string) (*Policy, error) {
	d, path, err := c.path(domain)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("MTA-STS cache: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxCacheFile+1))
	if err != nil {
		return nil, fmt.Errorf("MTA-STS cache: %w", err)
	}
	if len(data) > maxCacheFile {
		return nil, fmt.Errorf("%w: %s: larger than %d bytes", ErrCacheCorrupt, path, maxCacheFile)
	}
	var e cacheEntry
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCacheCorrupt, path, err)
	}
	p, err := e.policy(d)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCacheCorrupt, path, err)
	}
	return p, nil
}

// policy returns the policy e holds, checking it as ParsePolicy would
// and that it is the policy of domain.
func (e *cacheEntry) policy(domain string) (*Policy, error) {
	switch {
	case e.Domain != domain:
		return nil, fmt.Errorf("entry of domain %q", e.Domain)
	case e.ID != "" && !validID(e.ID):
		return nil, fmt.Errorf("invalid id %q", e.ID)
	case e.Fetched.IsZero():
		return nil, errors.New("no fetch time")
	case !e.Mode.valid():
		return nil, fmt.Errorf("invalid mode %q", e.Mode)
	case e.MaxAge < 0 || time.Duration(e.MaxAge)*time.Second > MaxMaxAge:
		return nil, fmt.Errorf("invalid max_age %d", e.MaxAge)
	case len(e.MX) == 0 && e.Mode != ModeNone:
		return nil, fmt.Errorf("no mx in mode %s", e.Mode)
	}
	for _, mx := range e.MX {
		if !validMXPattern(mx) {
			return nil, fmt.Errorf("invalid mx %q", mx)
		}
	}
	return &Policy{
		Mode:    e.Mode,
		MX:      e.MX,
		MaxAge:  time.Duration(e.MaxAge) * time.Second,
		ID:      e.ID,
		Fetched: e.Fetched,
	}, nil
}

// Put stores p as the policy of domain, replacing any. The file is
// written under a temporary name, synced and renamed, and the directory
// synced (safeio.WriteFile): once Put returns, the policy survives a
// crash, and a reader never sees a part of it.
func (c *Cache) Put(domain string, p *Policy) error {
	d, path, err := c.path(domain)
	if err != nil {
		return err
	}
	e := cacheEntry{
		Domain:  d,
		ID:      p.ID,
		Fetched: p.Fetched,
		Mode:    p.Mode,
		MX:      p.MX,
		MaxAge:  int64(p.MaxAge / time.Second),
	}
	if _, err := e.policy(d); err != nil {
		return fmt.Errorf("MTA-STS cache: policy of %s: %w", d, err)
	}
	data, err := json.Marshal(&e)
	if err != nil {
		return fmt.Errorf("MTA-STS cache: %w", err)
	}
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return fmt.Errorf("MTA-STS cache: %w", err)
	}
	// a name of its own for each writer: safeio creates it exclusively
	var r [8]byte
	rand.Read(r[:])
	tmp := filepath.Join(c.Dir, "."+d+"."+hex.EncodeToString(r[:])+".tmp")
	err = safeio.WriteFile(tmp, path, 0o600, func(f *os.File) error {
		_, err := f.Write(append(data, '\n'))
		return err
	})
	if err != nil {
		return fmt.Errorf("MTA-STS cache: storing the policy of %s: %w", d, err)
	}
	return nil
}

// Remove removes the cached policy of domain, if any.
func (c *Cache) Remove(domain string) error {
	_, path, err := c.path(domain)
	if err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("MTA-STS cache: %w", err)
	}
	return nil
}

// Domains returns the domains with a cached policy, expired or not, for
// a proactive refresh (RFC 8461 §10.2). A missing directory has none.
// It also removes the temporary files that writers which crashed left
// behind, an hour after they were last written.
func (c *Cache) Domains() ([]string, error) {
	ents, err := os.ReadDir(c.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("MTA-STS cache: %w", err)
	}
	var domains []string
	for _, ent := range ents {
		name := ent.Name()
		if strings.HasPrefix(name, ".") {
			if strings.HasSuffix(name, ".tmp") && ent.Type().IsRegular() {
				if info, err := ent.Info(); err == nil && c.now().Sub(info.ModTime()) > staleTemp {
					os.Remove(filepath.Join(c.Dir, name))
				}
			}
			continue
		}
		if !ent.Type().IsRegular() {
			continue
		}
		if d, err := normalizeDomain(name); err == nil && d == name {
			domains = append(domains, name)
		}
	}
	return domains, nil
}
