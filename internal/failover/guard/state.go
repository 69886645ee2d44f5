package guard

import "time"

// The guard's decision state, pure: no I/O, no clock of its own.
//
//	          arm(U)                     now >= U: fence once
//	disarmed ───────► armed(U) ──────────────────────────────► disarmed (fired+1)
//	   ▲                │  ▲ │
//	   │     disarm     │  └─┘ arm(U'): U' replaces U (later or earlier)
//	   └────────────────┘
//
// Two rules make it safe:
//
//  1. An expired deadline always fires. Every input first settles the
//     deadline against the clock, so a disarm or an arm that arrives after
//     the deadline (a frozen agent resuming, a message queued behind a
//     slow fence) cannot rescue a primary that should already be fenced.
//  2. The latest message wins. The agent alone knows how long its primary
//     may serve: it must be able to shorten the deadline (it learned it
//     lost coverage), not only extend it. Deadlines are absolute readings
//     of one system-wide clock computed from when the agent last proved
//     ownership, so a message delayed in transit carries an earlier
//     deadline, never a later one.

// state is what the guard knows.
type state struct {
	Armed bool
	Until time.Duration // CLOCK_BOOTTIME; zero while disarmed
	Fed   uint64        // arm messages accepted
	Fired uint64        // fences started
}

// op is a request kind on the wire.
type op string

const (
	opArm    op = "arm"
	opDisarm op = "disarm"
	opStatus op = "status"
)

// settle fires an expired deadline: it reports whether to fence now.
func (s state) settle(now time.Duration) (state, bool) {
	if s.Armed && now >= s.Until {
		s.Armed, s.Until = false, 0
		s.Fired++
		return s, true
	}
	return s, false
}

// apply settles the deadline, then applies one request. fence: stop the
// postmaster now (at most once per call, whatever caused it).
func (s state) apply(now time.Duration, o op, until time.Duration) (next state, fence bool) {
	s, fence = s.settle(now)
	switch o {
	case opArm:
		s.Armed, s.Until = true, until
		s.Fed++
		// A deadline already past fences at once (the agent shortened it).
		var again bool
		if s, again = s.settle(now); again && fence {
			s.Fired-- // one fence covers both
		}
		fence = fence || again
	case opDisarm:
		s.Armed, s.Until = false, 0
	}
	return s, fence
}
