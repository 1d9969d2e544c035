package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"

	"smtpd/internal/address"
)

// Rate is a number of events per period, written "20/s", "100/m" or
// "1000/h". The zero Rate is no limit.
type Rate struct {
	Events int
	Per    time.Duration
}

// IsZero reports whether r sets no limit.
func (r Rate) IsZero() bool { return r.Events == 0 }

// Every is the mean time between two events at rate r.
func (r Rate) Every() time.Duration { return r.Per / time.Duration(r.Events) }

func (r Rate) String() string {
	if r.IsZero() {
		return "unlimited"
	}
	unit := map[time.Duration]string{time.Second: "s", time.Minute: "m", time.Hour: "h", 24 * time.Hour: "d"}[r.Per]
	return fmt.Sprintf("%d/%s", r.Events, unit)
}

// parseRate reads "N/s", "N/m", "N/h" or "N/d".
func parseRate(s string) (Rate, error) {
	n, unit, ok := strings.Cut(strings.TrimSpace(s), "/")
	per := map[string]time.Duration{"s": time.Second, "m": time.Minute, "h": time.Hour, "d": 24 * time.Hour}[unit]
	events, err := strconv.Atoi(n)
	if !ok || per == 0 || err != nil || events < 1 {
		return Rate{}, fmt.Errorf("%q is not a rate such as \"20/s\", \"100/m\", \"1000/h\" or \"5000/d\"", s)
	}
	return Rate{Events: events, Per: per}, nil
}

func (d *decoder) rate(attrs hcl.Attributes, name string, dst *Rate) {
	var s string
	if !d.decode(attrs, name, &s) {
		return
	}
	r, err := parseRate(s)
	if err != nil {
		d.errorf(attrs[name].Expr.Range(), "Invalid rate", "%v.", err)
	}
	*dst = r
}

// Throttle bounds how fast one client may go; the zero value bounds
// nothing. Keys are client addresses and user names, of which the
// daemon remembers a bounded number (the least recently seen go first).
type Throttle struct {
	// ConnectRate is the rate of new sessions from one client address.
	ConnectRate Rate
	// MessageRate is the rate of messages from one client address,
	// UserMessageRate from one authenticated user.
	MessageRate, UserMessageRate Rate
}

var throttleSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "connect_rate"}, {Name: "message_rate"}, {Name: "user_message_rate"},
}}

func (d *decoder) throttle(b *hcl.Block) {
	content, diags := b.Body.Content(throttleSchema)
	d.diags = append(d.diags, diags...)
	t := &d.cfg.Throttle
	d.rate(content.Attributes, "connect_rate", &t.ConnectRate)
	d.rate(content.Attributes, "message_rate", &t.MessageRate)
	d.rate(content.Attributes, "user_message_rate", &t.UserMessageRate)
}

// Destination bounds outbound mail to one domain, so that a burst to a
// large provider is spread out rather than taken for spam. The domain
// "*" sets the bounds of every domain without a block of its own.
type Destination struct {
	Domain string
	// Sessions is the number of concurrent sessions to the domain's
	// mail exchangers; 0 keeps the default.
	Sessions int
	// MessageRate is the rate of messages sent to the domain.
	MessageRate Rate
	// TLS is the outbound TLS policy for the domain (PolicyAuto...).
	TLS   string
	Range hcl.Range
}

var destinationSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "sessions"}, {Name: "message_rate"}, {Name: "tls"},
}}

func (d *decoder) destination(b *hcl.Block) {
	dst := &Destination{Domain: strings.ToLower(strings.TrimSuffix(b.Labels[0], ".")), Range: b.DefRange}
	if dst.Domain != "*" && !address.IsHostname(dst.Domain) {
		d.errorf(b.LabelRanges[0], "Invalid domain", "%q is not a domain name or \"*\".", b.Labels[0])
	}
	for _, prev := range d.cfg.Destinations {
		if prev.Domain == dst.Domain {
			d.errorf(b.LabelRanges[0], "Duplicate destination", "Domain %q already has a destination block, at line %d.", dst.Domain, prev.Range.Start.Line)
		}
	}
	d.cfg.Destinations = append(d.cfg.Destinations, dst)
	content, diags := b.Body.Content(destinationSchema)
	d.diags = append(d.diags, diags...)
	attrs := content.Attributes
	if d.decode(attrs, "sessions", &dst.Sessions) && dst.Sessions < 1 {
		d.errorf(attrs["sessions"].Expr.Range(), "Limit too low", "sessions must be at least 1.")
	}
	d.rate(attrs, "message_rate", &dst.MessageRate)
	d.destinationTLS(attrs, dst)
}

// DestinationFor returns the bounds for mail to domain: its own block,
// else that of "*", else nil.
func (c *Config) DestinationFor(domain string) *Destination {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	var any *Destination
	for _, d := range c.Destinations {
		switch d.Domain {
		case domain:
			return d
		case "*":
			any = d
		}
	}
	return any
}

// Overload is when the daemon refuses new mail from unauthenticated
// clients: it engages when the queue holds more than QueueHigh
// envelopes or the spool file system has less than SpoolFreeLow bytes
// free, and disengages once both are back past QueueLow and
// SpoolFreeHigh. Zero marks are off.
type Overload struct {
	QueueHigh, QueueLow         int
	SpoolFreeLow, SpoolFreeHigh int64
}

// Enabled reports whether any mark is set.
func (o Overload) Enabled() bool { return o.QueueHigh > 0 || o.SpoolFreeLow > 0 }

var overloadSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "queue_high"}, {Name: "queue_low"}, {Name: "spool_free_low"}, {Name: "spool_free_high"},
}}

func (d *decoder) overload(b *hcl.Block) {
	content, diags := b.Body.Content(overloadSchema)
	d.diags = append(d.diags, diags...)
	attrs, o := content.Attributes, &d.cfg.Overload
	if d.decode(attrs, "queue_high", &o.QueueHigh) && o.QueueHigh < 1 {
		d.errorf(attrs["queue_high"].Expr.Range(), "Limit too low", "queue_high must be at least 1.")
	}
	o.QueueLow = o.QueueHigh * 9 / 10
	if d.decode(attrs, "queue_low", &o.QueueLow) && (o.QueueLow < 0 || o.QueueLow > o.QueueHigh) {
		d.errorf(attrs["queue_low"].Expr.Range(), "Invalid low mark", "queue_low must be between 0 and queue_high (%d).", o.QueueHigh)
	}
	for _, s := range []struct {
		name string
		dst  *int64
	}{{"spool_free_low", &o.SpoolFreeLow}, {"spool_free_high", &o.SpoolFreeHigh}} {
		var v string
		if !d.decode(attrs, s.name, &v) {
			continue
		}
		n, err := parseSize(v)
		if err != nil {
			d.errorf(attrs[s.name].Expr.Range(), "Invalid size", "%v.", err)
		}
		*s.dst = n
	}
	if _, ok := attrs["spool_free_high"]; !ok {
		o.SpoolFreeHigh = o.SpoolFreeLow + o.SpoolFreeLow/2
	} else if o.SpoolFreeHigh < o.SpoolFreeLow {
		d.errorf(attrs["spool_free_high"].Expr.Range(), "Invalid high mark", "spool_free_high must be at least spool_free_low.")
	}
	if !o.Enabled() {
		d.errorf(b.DefRange, "Empty overload block", "Set queue_high, spool_free_low or both.")
	}
}
