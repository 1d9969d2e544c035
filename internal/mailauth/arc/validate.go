package arc

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/emersion/go-msgauth/dkim"
)

// Validator validates the Authenticated Received Chain of messages (RFC
// 8617 §5.2). Its zero value is not usable: Resolver must be set. It is
// safe for concurrent use if its Resolver is.
type Validator struct {
	// Resolver fetches the keys.
	Resolver Resolver
	// MaxHeaderBytes bounds the header held; 0 means
	// DefaultMaxHeaderBytes.
	MaxHeaderBytes int
	// Now returns the time against which x= is checked; nil means
	// time.Now.
	Now func() time.Time
}

// Validate reads msg and judges its chain. It stops reading early when
// the verdict does not depend on the body. The error is non-nil only
// when msg could not be read or its header exceeds MaxHeaderBytes
// (ErrHeaderTooLarge); a temporary DNS failure is a Result with
// StatusTempError.
func (v *Validator) Validate(ctx context.Context, msg io.Reader) (*Result, error) {
	if v.Resolver == nil {
		return nil, errors.New("arc: Validator without Resolver")
	}
	fields, body, err := readHeader(bufio.NewReader(msg), maxHeader(v.MaxHeaderBytes))
	if err != nil {
		return nil, fmt.Errorf("arc: reading the header: %w", err)
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	ch := parseChain(fields)
	res := &Result{Status: StatusNone, Instance: ch.n}
	switch {
	case !ch.present:
		return res, nil // §5.2 step 1: no sets, status none
	case ch.err != nil:
		return res.fail(ch.err), nil
	}
	n := ch.n
	for _, s := range ch.sets {
		res.Sets = append(res.Sets, setInfo(s))
	}

	// Parse every AMS now, so that one pass over the body feeds the body
	// hashes of all of them; the latest must be valid (§5.2 step 4), the
	// others only count for oldest-pass (step 5).
	amss := make([]*signature, n+1)
	amsErrs := make([]error, n+1)
	bodies := map[bodyKey]*bodyHash{}
	for i := n; i >= 1; i-- {
		amss[i], amsErrs[i] = parseAMS(ch.sets[i-1].amsTags, now())
		if amsErrs[i] != nil {
			if i == n {
				return res.fail(fmt.Errorf("%s i=%d: %w", nameAMS, i, amsErrs[i])), nil
			}
			continue
		}
		for _, c := range amss[i].bodyCanons() {
			k := bodyKey{c, amss[i].limit}
			if bodies[k] == nil {
				bodies[k] = newBodyHash(k)
			}
		}
	}
	ws := make([]io.Writer, 0, len(bodies))
	for _, bh := range bodies {
		ws = append(ws, bh.canon)
	}
	if _, err := io.Copy(io.MultiWriter(ws...), body); err != nil {
		return nil, fmt.Errorf("arc: reading the body: %w", err)
	}
	for _, bh := range bodies {
		if err := bh.canon.Close(); err != nil {
			return nil, fmt.Errorf("arc: hashing the body: %w", err)
		}
	}

	keys := &keyLookup{r: v.Resolver, cache: map[string]keyAnswer{}}
	verifyAMS := func(i int) error {
		if amsErrs[i] != nil {
			return amsErrs[i]
		}
		sig := amss[i]
		err := errors.New("body hash mismatch")
		for j, c := range sig.bodyCanons() {
			if !bytes.Equal(bodies[bodyKey{c, sig.limit}].sum(), sig.bh) {
				continue
			}
			key, kerr := keys.get(ctx, sig.selector, sig.domain)
			if kerr != nil {
				return kerr
			}
			hc := sig.hc
			if j > 0 {
				hc = relaxed // the draft-01 reading of a missing c=
			}
			digest := headerHash(hc, fields, sig.headers, fields[ch.sets[i-1].ams].raw)
			if err = key.verify(sig.alg, digest, sig.b); err == nil {
				return nil
			}
		}
		return err
	}

	// §5.2 step 4: the latest AMS
	if err := verifyAMS(n); err != nil {
		return res.fail(fmt.Errorf("%s i=%d: %w", nameAMS, n, err)), nil
	}
	// §5.2 step 5 (optional): oldest-pass. A temporary failure here
	// stops the search as a failure would: we claim only what verified.
	for i := n - 1; i >= 1; i-- {
		if verifyAMS(i) != nil {
			res.OldestPass = i + 1
			break
		}
	}
	// §5.2 step 6: every AS, from the latest down, over the sets up to
	// its own in increasing order (§5.1.1), itself last with b= emptied
	verifyAS := func(i int) error {
		sig, err := parseAS(ch.sets[i-1].asTags)
		if err != nil {
			return err
		}
		key, err := keys.get(ctx, sig.selector, sig.domain)
		if err != nil {
			return err
		}
		var sealed []string
		for _, t := range ch.sets[:i] {
			sealed = append(sealed, fields[t.aar].raw, fields[t.ams].raw, fields[t.as].raw)
		}
		return key.verify(sig.alg, sealHash(sealed[:len(sealed)-1], sealed[len(sealed)-1]), sig.b)
	}
	for i := n; i >= 1; i-- {
		if err := verifyAS(i); err != nil {
			return res.fail(fmt.Errorf("%s i=%d: %w", nameAS, i, err)), nil
		}
	}
	res.Status = StatusPass // §5.2 step 7
	return res, nil
}

// fail turns res into a failure for err: temperror if err wraps
// ErrTemporary, fail otherwise.
func (res *Result) fail(err error) *Result {
	res.Status, res.Err, res.Reason, res.OldestPass = StatusFail, err, err.Error(), 0
	if errors.Is(err, ErrTemporary) {
		res.Status = StatusTempError
	}
	return res
}

func setInfo(s *arcSet) SetInfo {
	return SetInfo{
		Instance:     s.instance,
		AMSDomain:    unfold(tagValue(s.amsTags, "d")),
		AMSSelector:  unfold(tagValue(s.amsTags, "s")),
		SealDomain:   unfold(tagValue(s.asTags, "d")),
		SealSelector: unfold(tagValue(s.asTags, "s")),
		CV:           s.cv,
		AuthResults:  trimFWS(s.aarPayload),
	}
}

func maxHeader(n int) int {
	if n <= 0 {
		return DefaultMaxHeaderBytes
	}
	return n
}

// bodyKey identifies a body hash: the canonicalization and the l= limit
// (-1 for none); the hash is always SHA-256.
type bodyKey struct {
	c     dkim.Canonicalization
	limit int64
}

// bodyHash is the hash of a canonicalized body (RFC 6376 §3.7), fed as
// the body streams.
type bodyHash struct {
	h     hash.Hash
	canon *bodyCanon
}

func newBodyHash(k bodyKey) *bodyHash {
	bh := &bodyHash{h: sha256.New()}
	var w io.Writer = bh.h
	if k.limit >= 0 {
		w = &limitWriter{w: w, n: k.limit}
	}
	bh.canon = newBodyCanon(k.c, w)
	return bh
}

func (bh *bodyHash) sum() []byte { return bh.h.Sum(nil) }
