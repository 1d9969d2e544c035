// Package arc validates and extends the Authenticated Received Chain of
// RFC 8617: a Validator judges the ARC Sets a message arrives with
// (§5.2), a Sealer adds the set of the next instance to a message we
// forward (§5.1). Signatures are DKIM's (RFC 6376), with rsa-sha256 or
// ed25519-sha256 (RFC 8463) keys published in DNS TXT records at
// selector._domainkey.domain.
//
// Both read the message once: the header, bounded in size, is held;
// the body only streams through the hashes.
package arc

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/emersion/go-msgauth/authres"
)

// MaxInstance is the highest instance an ARC Set can have (RFC 8617
// §4.2.1): a chain of more sets fails.
const MaxInstance = 50

// DefaultMaxHeaderBytes bounds the header a Validator or Sealer holds
// when the caller sets no other limit.
const DefaultMaxHeaderBytes = 1 << 20

// Resolver looks up DNS TXT records. *smtpd/internal/dns.Resolver
// satisfies it: an error wrapping dns.ErrNoSuchDomain means the name
// does not exist, any other error is taken as temporary.
type Resolver interface {
	TXT(ctx context.Context, name string) ([]string, error)
}

// Status is a Chain Validation Status (RFC 8617 §4.4), or temperror when
// a DNS failure kept the chain from being judged.
type Status string

// The chain validation statuses. The values are those of the "arc"
// method of Authentication-Results (RFC 8617 §6, RFC 8601 §2.7).
const (
	// StatusNone: the message has no ARC Sets.
	StatusNone Status = "none"
	// StatusPass: the chain validated.
	StatusPass Status = "pass"
	// StatusFail: the chain is malformed or a signature did not verify.
	StatusFail Status = "fail"
	// StatusTempError: a key could not be fetched for a reason other
	// than its absence. RFC 8617 §5.2.1 makes every error permanent
	// (fail); we keep it apart so that a caller can defer the message
	// and try again, or record it as fail, as it chooses.
	StatusTempError Status = "temperror"
)

// ErrTemporary marks a DNS failure that may pass: a server failure or a
// timeout, not an answer that the key does not exist.
var ErrTemporary = errors.New("arc: temporary DNS failure")

// ErrHeaderTooLarge is returned for a message whose header exceeds the
// configured bound.
var ErrHeaderTooLarge = errors.New("arc: header too large")

// Result is the outcome of validating a message's chain.
type Result struct {
	// Status is the Chain Validation Status.
	Status Status
	// Instance is N, the highest instance of the chain's ARC Sets; 0
	// when the message has none. For a malformed chain it is the
	// highest instance found.
	Instance int
	// OldestPass is the oldest-pass value of RFC 8617 §5.2 step 5, set
	// when Status is pass: the lowest instance from which on every AMS
	// still verifies, or 0 if all of them do.
	OldestPass int
	// Reason says why the chain failed, or "" when it did not.
	Reason string
	// Err is the cause of a fail or temperror; errors.Is(Err,
	// ErrTemporary) holds for temperror.
	Err error
	// Sets describes the ARC Sets 1..N when their structure is valid.
	Sets []SetInfo
}

// SetInfo describes one ARC Set of a chain.
type SetInfo struct {
	Instance int
	// AMSDomain and AMSSelector name the key of the ARC-Message-Signature.
	AMSDomain, AMSSelector string
	// SealDomain and SealSelector name the key of the ARC-Seal.
	SealDomain, SealSelector string
	// CV is the chain validation status the sealer recorded.
	CV Status
	// AuthResults is the ARC-Authentication-Results value after its
	// instance tag: "authserv-id; results", still folded.
	AuthResults string
}

// ParseAuthResults parses the set's ARC-Authentication-Results payload
// (RFC 8601 syntax) into its authserv-id and results.
func (s *SetInfo) ParseAuthResults() (authServID string, results []authres.Result, err error) {
	id, rs, err := authres.Parse(unfold(s.AuthResults))
	if err != nil {
		return "", nil, fmt.Errorf("arc: ARC-Authentication-Results i=%d: %w", s.Instance, err)
	}
	return id, rs, nil
}

// AuthResult returns the result to record in Authentication-Results
// (RFC 8617 §6), for authres.Format: arc=<status>, with
// header.oldest-pass when the chain passed and an older AMS no longer
// verifies. RFC 8617 §6 would also write header.oldest-pass=0 when all
// verify, but authres (v0.7.0) refuses to parse 0, and an AAR that our
// own ParseAuthResults cannot read helps nobody: 0 is left out.
func (r *Result) AuthResult() authres.Result {
	params := map[string]string{}
	if r.Status == StatusPass && r.OldestPass > 0 {
		params["header.oldest-pass"] = strconv.Itoa(r.OldestPass)
	}
	// authres.ARCResult cannot be used: authres.Format (v0.7.0) does not
	// know its method name.
	return &authres.GenericResult{Method: "arc", Value: authres.ResultValue(r.Status), Params: params}
}
