// Package natsperm helps tests observe NATS permission refusals: the
// server reports them asynchronously (-ERR), so a test records what a
// connection's error handler is given and waits for the refusal it
// expects.
package natsperm

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// Errors records what a connection's error handler is given; pass
// Record to nats.ErrorHandler.
type Errors struct {
	mu   sync.Mutex
	errs []error
}

// Record is a nats.ErrHandler.
func (a *Errors) Record(_ *nats.Conn, _ *nats.Subscription, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.errs = append(a.errs, err)
}

// All returns the errors recorded so far.
func (a *Errors) All() []error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]error(nil), a.errs...)
}

// Violated waits until the server has reported a permissions violation
// for what ("Publish to" or "Subscription to") on subject. For a publish,
// subject may be a NATS filter (consumer names are random). The subject is
// only given in the error's text, so it is read from there.
func (a *Errors) Violated(t testing.TB, what, subject string) {
	t.Helper()
	retry.Until(t, 5*time.Second, func() error {
		var seen []string
		for _, err := range a.All() {
			if !errors.Is(err, nats.ErrPermissionViolation) {
				seen = append(seen, err.Error())
				continue
			}
			_, rest, ok := strings.Cut(err.Error(), "Permissions Violation for "+what+" \"")
			got, _, _ := strings.Cut(rest, "\"")
			if ok && (got == subject || what == "Publish to" && server.SubjectMatchesFilter(got, subject)) {
				return nil
			}
			seen = append(seen, err.Error())
		}
		return fmt.Errorf("no permissions violation for %s %q; errors: %q", what, subject, seen)
	})
}
