// Package retry polls a condition until it holds or a deadline passes, the
// way tests wait for asynchronous effects without sleeping a fixed time.
package retry

import (
	"testing"
	"time"
)

// Until calls f until it returns nil, failing t with f's last error when
// timeout passes. The pause between calls grows from 5 ms to 200 ms.
func Until(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	pause := 5 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %s: %v", timeout, err)
		}
		time.Sleep(pause)
		if pause < 200*time.Millisecond {
			pause *= 2
		}
	}
}

// Holds calls f until d has passed, failing t at the first error: a
// condition that must stay true for a while (no failover, still fenced),
// checked with the same pacing as Until.
func Holds(t testing.TB, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	pause := 5 * time.Millisecond
	for {
		if err := f(); err != nil {
			t.Fatalf("condition broke %s before the end of its %s: %v", time.Until(deadline).Round(time.Millisecond), d, err)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return
		}
		time.Sleep(min(pause, left))
		if pause < 200*time.Millisecond {
			pause *= 2
		}
	}
}
