//go:build !linux

package mesh

import "syscall"

// userTimeout: only Linux has TCP_USER_TIMEOUT; keepalives and pings
// notice a dead link elsewhere.
func userTimeout(_, _ string, _ syscall.RawConn) error { return nil }
