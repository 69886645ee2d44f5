package identity_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every server, connection and Follow a test starts is stopped by its
// cleanup: nothing may outlive the tests.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
