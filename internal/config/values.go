package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// parseSize reads a byte count such as "35M", "512K", "1G" or "1000".
// The suffixes are binary (K = 1024), as in OpenSMTPD's max-message-size.
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	if n := len(s); n > 0 {
		switch strings.ToUpper(s[n-1:]) {
		case "K":
			mult = 1 << 10
		case "M":
			mult = 1 << 20
		case "G":
			mult = 1 << 30
		}
		if mult != 1 {
			s = s[:n-1]
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 || v > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size such as 35M, 512K or 1048576", s)
	}
	return v * mult, nil
}

// parseDuration reads a duration such as "4d", "90m" or "1h30m". It is
// time.ParseDuration with days added, since queue lifetimes are in days.
func parseDuration(s string) (time.Duration, error) {
	orig := s
	var days time.Duration
	if i := strings.Index(s, "d"); i > 0 {
		n, err := strconv.Atoi(s[:i])
		if err != nil || n < 0 {
			return 0, fmt.Errorf("%q is not a duration such as 4d, 4h or 90s", orig)
		}
		days = time.Duration(n) * 24 * time.Hour
		s = s[i+1:]
		if s == "" {
			return days, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q is not a duration such as 4d, 4h or 90s", orig)
	}
	return days + d, nil
}
