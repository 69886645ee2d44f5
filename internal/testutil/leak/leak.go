// Package leak checks, at the end of a test binary, that no goroutine
// outlived the tests (go.uber.org/goleak), allowing for the few process-wide
// goroutines an embedded nats-server keeps after shutdown.
package leak

import (
	"testing"

	"go.uber.org/goleak"
)

// VerifyTestMain runs the tests and fails the binary if goroutines leaked.
func VerifyTestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
	)
}
