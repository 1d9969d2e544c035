package parent

import (
	"fmt"
	"testing"
	"time"

	"smtpd/proto"
)

func TestAccountCache(t *testing.T) {
	var c accountCache
	now := time.Unix(1000, 0)
	k := accountKey{"local", "alice"}
	if _, ok := c.get(k, now); ok {
		t.Fatal("an empty cache answered")
	}
	c.put(k, proto.Account{Name: "alice", UID: 1001}, now)
	if a, ok := c.get(k, now.Add(accountTTL)); !ok || a.UID != 1001 {
		t.Fatalf("got %+v, %v", a, ok)
	}
	if _, ok := c.get(accountKey{"other", "alice"}, now); ok {
		t.Fatal("another action's account answered")
	}
	if _, ok := c.get(k, now.Add(accountTTL+time.Nanosecond)); ok {
		t.Fatal("an expired account answered")
	}
	for i := range accountCacheMax + 1 {
		c.put(accountKey{"local", fmt.Sprint("user", i)}, proto.Account{}, now)
	}
	if len(c.m) > accountCacheMax {
		t.Fatalf("%d accounts kept", len(c.m))
	}
	c.put(k, proto.Account{UID: 1}, now)
	c.clear()
	if _, ok := c.get(k, now); ok {
		t.Fatal("a cleared cache answered")
	}
}
