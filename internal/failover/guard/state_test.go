package guard

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestApply(t *testing.T) {
	const s = time.Second
	armed := func(u time.Duration) state { return state{Armed: true, Until: u} }
	tests := []struct {
		name      string
		st        state
		now       time.Duration
		op        op
		until     time.Duration
		want      state
		wantFence bool
	}{
		{"arm from disarmed", state{}, 10 * s, opArm, 12 * s, state{Armed: true, Until: 12 * s, Fed: 1}, false},
		{"extend", armed(12 * s), 11 * s, opArm, 13 * s, state{Armed: true, Until: 13 * s, Fed: 1}, false},
		{"shorten", armed(12 * s), 11 * s, opArm, 11500 * time.Millisecond, state{Armed: true, Until: 11500 * time.Millisecond, Fed: 1}, false},
		{"arm in the past fences at once", state{}, 10 * s, opArm, 9 * s, state{Fed: 1, Fired: 1}, true},
		{"arm at now fences", state{}, 10 * s, opArm, 10 * s, state{Fed: 1, Fired: 1}, true},
		{"late arm cannot rescue", armed(10 * s), 11 * s, opArm, 20 * s, state{Armed: true, Until: 20 * s, Fed: 1, Fired: 1}, true},
		{"late disarm cannot rescue", armed(10 * s), 11 * s, opDisarm, 0, state{Fired: 1}, true},
		{"late arm in the past: one fence", armed(10 * s), 11 * s, opArm, 5 * s, state{Fed: 1, Fired: 1}, true},
		{"disarm in time", armed(12 * s), 11 * s, opDisarm, 0, state{}, false},
		{"status before deadline", armed(12 * s), 11 * s, opStatus, 0, armed(12 * s), false},
		{"status after deadline fires", armed(12 * s), 12 * s, opStatus, 0, state{Fired: 1}, true},
		{"disarmed status", state{}, 99 * s, opStatus, 0, state{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, fence := tt.st.apply(tt.now, tt.op, tt.until)
			if got != tt.want || fence != tt.wantFence {
				t.Fatalf("apply = %+v, %v; want %+v, %v", got, fence, tt.want, tt.wantFence)
			}
		})
	}
}

// TestApplyRandom explores random sequences against the two rules: a
// deadline that has passed fires exactly once before anything else
// happens, and the guard fences only when a deadline has passed.
func TestApplyRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for run := 0; run < 2000; run++ {
		var st state
		now := time.Duration(0)
		for i := 0; i < 50; i++ {
			now += time.Duration(r.IntN(300)) * time.Millisecond
			o := []op{opArm, opDisarm, opStatus}[r.IntN(3)]
			until := now + time.Duration(r.IntN(1000)-200)*time.Millisecond
			expired := st.Armed && now >= st.Until
			before := st
			var fence bool
			st, fence = st.apply(now, o, until)
			wantFence := expired || (o == opArm && until <= now)
			if fence != wantFence {
				t.Fatalf("run %d step %d: %+v %s(%s) at %s: fence %v, want %v", run, i, before, o, until, now, fence, wantFence)
			}
			if fence && st.Fired != before.Fired+1 {
				t.Fatalf("one fence must count once: %+v -> %+v", before, st)
			}
			if st.Armed && st.Until <= now {
				t.Fatalf("armed with a passed deadline: %+v at %s", st, now)
			}
		}
	}
}
