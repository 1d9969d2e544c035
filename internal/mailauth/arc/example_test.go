package arc_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"os"
	"strings"

	"github.com/emersion/go-msgauth/authres"

	"smtpd/internal/dns"
	"smtpd/internal/mailauth/arc"
)

// An MTA validates the chain of a message it receives, records the
// result in its Authentication-Results, and seals the message when it
// forwards it.
func Example() {
	r, err := dns.New(nil) // the servers of /etc/resolv.conf
	if err != nil {
		fmt.Println(err)
		return
	}
	msg := "From: a@example.net\r\nSubject: hi\r\n\r\nhello\r\n"

	v := &arc.Validator{Resolver: r}
	chain, err := v.Validate(context.Background(), strings.NewReader(msg))
	if err != nil {
		fmt.Println(err) // the message could not be read
		return
	}
	if chain.Status == arc.StatusTempError {
		fmt.Println("451 4.4.3 try again later:", chain.Reason)
		return
	}
	results := []authres.Result{
		&authres.SPFResult{Value: authres.ResultPass, From: "example.net"},
		chain.AuthResult(),
	}
	ar := authres.Format("mx.example.org", results)
	msg = "Authentication-Results: " + ar + "\r\n" + msg

	_, key, _ := ed25519.GenerateKey(nil)
	s := &arc.Sealer{Domain: "example.org", Selector: "arc2025", Signer: key}
	_, payload, _ := strings.Cut(ar, ";")
	set, err := s.Seal(strings.NewReader(msg), "mx.example.org", payload, chain)
	if err != nil {
		fmt.Println(err) // arc.ErrChainFailed: forward unsealed
		return
	}
	os.Stdout.WriteString(set.String() + msg)
}
