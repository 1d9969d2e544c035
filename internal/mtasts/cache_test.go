package mtasts

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// clock is a settable time for tests.
type clock struct{ t time.Time }

func newClock() *clock { return &clock{t: time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time          { return c.t }
func (c *clock) Advance(d time.Duration) { c.t = c.t.Add(d) }

func testPolicy(fetched time.Time) *Policy {
	return &Policy{
		Mode:    ModeEnforce,
		MX:      []string{"mx1.example.test", "*.mx.example.test"},
		MaxAge:  24 * time.Hour,
		ID:      "20300601",
		Fetched: fetched,
	}
}

func equalPolicy(a, b *Policy) bool {
	return samePolicy(a, b) && a.ID == b.ID && a.Fetched.Equal(b.Fetched)
}

func TestCachePutGet(t *testing.T) {
	clk := newClock()
	c := &Cache{Dir: filepath.Join(t.TempDir(), "sts"), Now: clk.Now}
	if p, ok := c.Get("example.test"); ok {
		t.Fatalf("Get from an empty cache = %+v", p)
	}
	if _, err := c.Load("example.test"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load from an empty cache: %v, want not exist", err)
	}
	want := testPolicy(clk.Now())
	if err := c.Put("Example.TEST.", want); err != nil {
		t.Fatal(err)
	}
	got, ok := c.Get("example.test")
	if !ok || !equalPolicy(got, want) {
		t.Fatalf("Get = %+v, %v, want %+v", got, ok, want)
	}
	if got, ok := c.Get("EXAMPLE.test."); !ok || !equalPolicy(got, want) {
		t.Fatalf("Get in other case = %+v, %v", got, ok)
	}
	// the file: lower-case name, private, no temporary left
	ents, err := os.ReadDir(c.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "example.test" {
		t.Fatalf("directory holds %v", ents)
	}
	if info, _ := ents[0].Info(); info.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v", info.Mode())
	}
	// replacing
	newer := testPolicy(clk.Now().Add(time.Minute))
	newer.ID, newer.Mode, newer.MX = "2", ModeTesting, []string{"other.example.test"}
	if err := c.Put("example.test", newer); err != nil {
		t.Fatal(err)
	}
	if got, ok := c.Get("example.test"); !ok || !equalPolicy(got, newer) {
		t.Fatalf("Get after replacing = %+v, %v", got, ok)
	}
	// a policy of mode none is kept too
	none := &Policy{Mode: ModeNone, MaxAge: time.Hour, ID: "3", Fetched: clk.Now()}
	if err := c.Put("none.test", none); err != nil {
		t.Fatal(err)
	}
	if got, ok := c.Get("none.test"); !ok || !equalPolicy(got, none) {
		t.Fatalf("Get of mode none = %+v, %v", got, ok)
	}
}

func TestCacheExpiry(t *testing.T) {
	clk := newClock()
	c := &Cache{Dir: t.TempDir(), Now: clk.Now}
	p := testPolicy(clk.Now())
	if err := c.Put("example.test", p); err != nil {
		t.Fatal(err)
	}
	clk.Advance(p.MaxAge - time.Second)
	if _, ok := c.Get("example.test"); !ok {
		t.Fatal("policy gone before max_age")
	}
	clk.Advance(time.Second)
	if got, ok := c.Get("example.test"); ok {
		t.Fatalf("Get after max_age = %+v", got)
	}
	// expired is not an error, and Load still has it
	if got, err := c.Load("example.test"); err != nil || !equalPolicy(got, p) {
		t.Fatalf("Load of expired = %+v, %v", got, err)
	}
	// max_age 0: expired at once
	zero := testPolicy(clk.Now())
	zero.MaxAge = 0
	if err := c.Put("zero.test", zero); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Get("zero.test"); ok {
		t.Fatal("a policy of max_age 0 is used")
	}
}

func TestCacheSurvivesNewValue(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()
	p := testPolicy(clk.Now().Add(-time.Hour))
	if err := (&Cache{Dir: dir, Now: clk.Now}).Put("example.test", p); err != nil {
		t.Fatal(err)
	}
	c := &Cache{Dir: dir, Now: clk.Now}
	if got, ok := c.Get("example.test"); !ok || !equalPolicy(got, p) {
		t.Fatalf("Get from a new Cache = %+v, %v", got, ok)
	}
	// the fetch time is kept to the nanosecond, in any zone
	p.Fetched = time.Date(2030, 6, 1, 11, 30, 0, 123456789, time.FixedZone("X", 3600))
	if err := c.Put("example.test", p); err != nil {
		t.Fatal(err)
	}
	if got, ok := c.Get("example.test"); !ok || !got.Fetched.Equal(p.Fetched) {
		t.Fatalf("Get = %+v, %v", got, ok)
	}
}

func TestCacheCorrupt(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()
	c := &Cache{Dir: dir, Now: clk.Now}
	good := `{"domain":"example.test","id":"1","fetched":"2030-06-01T11:00:00Z","mode":"enforce","mx":["mx.example.test"],"max_age":86400}`
	tests := []struct {
		name, content string
	}{
		{"empty", ""},
		{"truncated", good[:40]},
		{"not JSON", "version: STSv1\n"},
		{"other domain", strings.Replace(good, `"domain":"example.test"`, `"domain":"other.test"`, 1)},
		{"bad mode", strings.Replace(good, `"enforce"`, `"strict"`, 1)},
		{"no mx", strings.Replace(good, `["mx.example.test"]`, `[]`, 1)},
		{"bad mx", strings.Replace(good, `mx.example.test`, `mx example`, 1)},
		{"max_age negative", strings.Replace(good, `86400`, `-1`, 1)},
		{"max_age too large", strings.Replace(good, `86400`, `31557601`, 1)},
		{"no fetch time", strings.Replace(good, `"fetched":"2030-06-01T11:00:00Z",`, ``, 1)},
		{"bad id", strings.Replace(good, `"id":"1"`, `"id":"a-b"`, 1)},
		{"huge", `{"domain":"example.test","x":"` + strings.Repeat("x", maxCacheFile) + `"}`},
	}
	path := filepath.Join(dir, "example.test")
	if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Get("example.test"); !ok {
		t.Fatal("the good entry is not read")
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if p, ok := c.Get("example.test"); ok {
				t.Fatalf("Get of a corrupt entry = %+v", p)
			}
			if _, err := c.Load("example.test"); !errors.Is(err, ErrCacheCorrupt) {
				t.Fatalf("Load error %v, want ErrCacheCorrupt", err)
			}
		})
	}
	// a Put replaces the corrupt file
	p := testPolicy(clk.Now())
	if err := c.Put("example.test", p); err != nil {
		t.Fatal(err)
	}
	if got, ok := c.Get("example.test"); !ok || !equalPolicy(got, p) {
		t.Fatalf("Get after Put over a corrupt file = %+v, %v", got, ok)
	}
	// an unreadable entry (a directory here) is absent too, not corrupt
	if err := os.Mkdir(filepath.Join(dir, "dir.test"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Get("dir.test"); ok {
		t.Fatal("Get of a directory succeeds")
	}
	if _, err := c.Load("dir.test"); err == nil || errors.Is(err, ErrCacheCorrupt) {
		t.Fatalf("Load of a directory: %v", err)
	}
}

func TestCacheNames(t *testing.T) {
	dir := t.TempDir()
	c := &Cache{Dir: filepath.Join(dir, "cache")}
	p := testPolicy(time.Now())
	for _, d := range []string{"", ".", "..", "../x.test", "a/b.test", ".hidden.test", "x..test", "a b.test", "a\x00.test", `a\b.test`, "ü.test"} {
		if err := c.Put(d, p); err == nil {
			t.Errorf("Put(%q) succeeded", d)
		}
		if _, ok := c.Get(d); ok {
			t.Errorf("Get(%q) succeeded", d)
		}
		if err := c.Remove(d); err == nil {
			t.Errorf("Remove(%q) succeeded", d)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("files made: %v", ents)
	}
	if err := (&Cache{}).Put("example.test", p); err == nil {
		t.Error("Put into a Cache without Dir succeeded")
	}
}

func TestCacheRejectsInvalidPolicy(t *testing.T) {
	c := &Cache{Dir: t.TempDir()}
	for _, p := range []*Policy{
		{Mode: "bogus", MX: []string{"a.test"}, MaxAge: time.Hour, Fetched: time.Now()},
		{Mode: ModeEnforce, MaxAge: time.Hour, Fetched: time.Now()},
		{Mode: ModeEnforce, MX: []string{"a.test"}, MaxAge: time.Hour},
		{Mode: ModeEnforce, MX: []string{"a.test"}, MaxAge: MaxMaxAge + time.Second, Fetched: time.Now()},
		{Mode: ModeEnforce, MX: []string{"a/b"}, MaxAge: time.Hour, Fetched: time.Now()},
		{Mode: ModeEnforce, MX: []string{"a.test"}, MaxAge: time.Hour, Fetched: time.Now(), ID: "not valid"},
	} {
		if err := c.Put("example.test", p); err == nil {
			t.Errorf("Put(%+v) succeeded", p)
		}
	}
}

func TestCacheDomainsRemove(t *testing.T) {
	clk := newClock()
	c := &Cache{Dir: filepath.Join(t.TempDir(), "missing"), Now: clk.Now}
	if ds, err := c.Domains(); err != nil || len(ds) != 0 {
		t.Fatalf("Domains of a missing directory = %v, %v", ds, err)
	}
	for _, d := range []string{"b.test", "a.test", "C.test"} {
		if err := c.Put(d, testPolicy(clk.Now())); err != nil {
			t.Fatal(err)
		}
	}
	// what is not an entry: temporaries, other names, directories
	stale := filepath.Join(c.Dir, ".a.test.0123.tmp")
	fresh := filepath.Join(c.Dir, ".b.test.4567.tmp")
	for _, name := range []string{stale, fresh, filepath.Join(c.Dir, "Upper.test"), filepath.Join(c.Dir, "x y")} {
		if err := os.WriteFile(name, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	os.Chtimes(stale, clk.Now().Add(-2*time.Hour), clk.Now().Add(-2*time.Hour))
	os.Chtimes(fresh, clk.Now(), clk.Now())
	if err := os.Mkdir(filepath.Join(c.Dir, "d.test"), 0o700); err != nil {
		t.Fatal(err)
	}
	ds, err := c.Domains()
	slices.Sort(ds)
	if err != nil || !slices.Equal(ds, []string{"a.test", "b.test", "c.test"}) {
		t.Fatalf("Domains = %v, %v", ds, err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stale temporary file kept: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("fresh temporary file removed: %v", err)
	}
	if err := c.Remove("B.test."); err != nil {
		t.Fatal(err)
	}
	if err := c.Remove("b.test"); err != nil {
		t.Fatalf("Remove of a missing entry: %v", err)
	}
	if _, ok := c.Get("b.test"); ok {
		t.Fatal("removed entry still there")
	}
	ds, _ = c.Domains()
	slices.Sort(ds)
	if !slices.Equal(ds, []string{"a.test", "c.test"}) {
		t.Fatalf("Domains after Remove = %v", ds)
	}
}
