package arc

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// FuzzValidate feeds messages to the validator: it must not panic, and
// must answer one of the statuses, with a reason when it is not none or
// pass.
func FuzzValidate(f *testing.F) {
	scenarios := loadSuite(f, "testdata/arc-draft-validation-tests.yml")
	keys := memResolver{}
	for name, v := range scenarios[0].txt {
		keys[name] = v
	}
	for _, c := range scenarios[0].tests[:12] {
		f.Add(c.fields["message"])
	}
	f.Add("ARC-Seal: i=1\r\nARC-Message-Signature: i=1; a=rsa-sha256; b=; h=\r\n\r\n")
	v := &Validator{Resolver: keys}
	f.Fuzz(func(t *testing.T, msg string) {
		res, err := v.Validate(context.Background(), strings.NewReader(msg))
		if errors.Is(err, ErrHeaderTooLarge) {
			return
		}
		if err != nil {
			t.Fatal(err) // a string reader never fails
		}
		switch res.Status {
		case StatusNone, StatusPass:
		case StatusFail, StatusTempError:
			if res.Reason == "" {
				t.Fatalf("%s without a reason", res.Status)
			}
		default:
			t.Fatalf("status %q", res.Status)
		}
	})
}
