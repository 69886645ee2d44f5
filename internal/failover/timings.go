// Package failover holds the PostgreSQL high-availability role of the agent.
// This file and machine.go are pure: they decide, from what a node has
// observed, what it must do next, without any I/O, so they can be explored
// exhaustively in tests. A thin loop (later) carries out the actions against
// the store and PostgreSQL.
package failover

import (
	"fmt"
	"time"
)

// Strategy chooses between consistency and availability.
type Strategy string

const (
	// AbsoluteConsistency: synchronous replication; a primary cut off from
	// the mesh fences; no acknowledged write is ever lost.
	AbsoluteConsistency Strategy = "AbsoluteConsistency"
	// SplitBrainAllowed: the primary keeps serving when cut off;
	// divergence is reconciled and counted when the partition heals.
	SplitBrainAllowed Strategy = "SplitBrainAllowed"
)

// Timings are the knobs of failure detection.
type Timings struct {
	// HeartbeatInterval between two heartbeats of a healthy node.
	HeartbeatInterval time.Duration
	// HeartbeatTimeout bounds each step of a heartbeat (health check, store
	// read, store write).
	HeartbeatTimeout time.Duration
	// FailureThreshold consecutive failed heartbeats fence a primary (or
	// fail a replica).
	FailureThreshold int
	// SuccessThreshold consecutive good heartbeats bring a node back.
	SuccessThreshold int
	// FailoverTimeout: a replica that has not seen the primary's heartbeat
	// advance for this long tries to take over.
	FailoverTimeout time.Duration
	// SafetyMargin is added to the longest time a primary can serve
	// unconfirmed; it covers fencing itself and scheduling delays.
	SafetyMargin time.Duration
}

// MaxUnconfirmedServe is the longest a primary can keep accepting writes
// after its last successful heartbeat became visible to the replicas: the
// acknowledgement of that heartbeat may take up to one HeartbeatTimeout, the
// primary then waits one interval, then each of FailureThreshold attempts
// (made back to back once one has failed) takes at most HeartbeatTimeout,
// and the last failure fences. The safety margin must cover the fence itself.
func (t Timings) MaxUnconfirmedServe() time.Duration {
	return t.HeartbeatInterval + time.Duration(t.FailureThreshold+1)*t.HeartbeatTimeout
}

// PromiseLease is how long a replica's promise not to promote lasts (the
// failsafe): as long as a primary may serve unconfirmed, so that a primary
// renewing the promise at every beat keeps it with room to spare. The
// replica adds the safety margin on its side.
func (t Timings) PromiseLease() time.Duration { return t.MaxUnconfirmedServe() }

// Validate refuses timings under which a replica could promote while the old
// primary still serves, showing the arithmetic.
func (t Timings) Validate() error {
	switch {
	case t.HeartbeatInterval <= 0:
		return fmt.Errorf("heartbeat_interval: must be positive")
	case t.HeartbeatTimeout <= 0:
		return fmt.Errorf("heartbeat_timeout: must be positive")
	case t.FailureThreshold < 1:
		return fmt.Errorf("failure_threshold: must be at least 1")
	case t.SuccessThreshold < 1:
		return fmt.Errorf("success_threshold: must be at least 1")
	case t.SafetyMargin < 0:
		return fmt.Errorf("safety_margin: must not be negative")
	}
	need := t.MaxUnconfirmedServe() + t.SafetyMargin
	if t.FailoverTimeout <= need {
		return fmt.Errorf("failover_timeout: %s must exceed heartbeat_interval (%s) + heartbeat_timeout (%s) x (failure_threshold (%d) + 1) + safety_margin (%s) = %s",
			t.FailoverTimeout, t.HeartbeatInterval, t.HeartbeatTimeout, t.FailureThreshold, t.SafetyMargin, need)
	}
	return nil
}

// DefaultTimings: a primary serves at most 0.25 + 0.25 x (3 + 1) = 1.25 s
// unconfirmed; 0.4 s of margin covers fencing; the replica waits 1.8 s, so a
// dead primary is replaced about 2 s after its last heartbeat.
func DefaultTimings() Timings {
	return Timings{HeartbeatInterval: 250 * time.Millisecond, HeartbeatTimeout: 250 * time.Millisecond,
		FailureThreshold: 3, SuccessThreshold: 3, FailoverTimeout: 1800 * time.Millisecond, SafetyMargin: 400 * time.Millisecond}
}

// FastTimings: for a quiet local network: 0.1 + 0.1 x 4 = 0.5 s unconfirmed,
// 0.2 s margin, the replica waits 0.75 s.
func FastTimings() Timings {
	return Timings{HeartbeatInterval: 100 * time.Millisecond, HeartbeatTimeout: 100 * time.Millisecond,
		FailureThreshold: 3, SuccessThreshold: 3, FailoverTimeout: 750 * time.Millisecond, SafetyMargin: 200 * time.Millisecond}
}
