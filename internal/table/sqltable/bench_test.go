package sqltable

import (
	"context"
	"testing"

	"smtpd/internal/table"
)

// BenchmarkLookup measures lookups per second of each backend, from as
// many goroutines as GOMAXPROCS, alternating a found multi-row alias, a
// found userinfo and a domain not found.
func BenchmarkLookup(b *testing.B) {
	keys := []lookupCase{
		{service: table.Alias, key: "postmaster@example.org", found: true},
		{service: table.Userinfo, key: "alice", found: true},
		{service: table.Domain, key: "example.com", found: false},
	}
	for _, driver := range drivers {
		b.Run(driver, func(b *testing.B) {
			tbl := open(b, Options{Driver: driver, DSN: newDSN(b, driver), Queries: queries})
			ctx := context.Background()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					c := keys[i%len(keys)]
					i++
					if _, found, err := tbl.Lookup(ctx, c.service, c.key); err != nil || found != c.found {
						b.Errorf("Lookup(%s, %q): %v, %v", c.service, c.key, found, err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lookups/s")
		})
	}
}
