package peer

import (
	"testing"

	"go.uber.org/goleak"
)

// Every server and client a test starts is stopped by its cleanup: no
// goroutine (connection, handler) may outlive the tests.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
