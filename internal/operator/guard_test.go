package operator

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

var testLimits = GuardLimits{Min: 10, Fraction: 0.10, Window: 10 * time.Minute}

func TestOrphanCause(t *testing.T) {
	for _, c := range []struct {
		known, exists bool
		want          Cause
	}{
		{false, true, CauseDeviceGone},
		{false, false, CauseDeviceGone}, // a gone device comes first
		{true, false, CauseDeploymentGone},
		{true, true, CauseNoMatch},
	} {
		if got := orphanCause(c.known, c.exists); got != c.want {
			t.Errorf("orphanCause(known=%v, exists=%v) = %s, want %s", c.known, c.exists, got, c.want)
		}
	}
}

func TestBound(t *testing.T) {
	for _, c := range []struct{ stored, want int }{{0, 10}, {20, 10}, {100, 10}, {101, 11}, {1000, 100}, {5000, 500}} {
		if got := testLimits.Bound(c.stored); got != c.want {
			t.Errorf("Bound(%d) = %d, want %d", c.stored, got, c.want)
		}
	}
}

// removals makes n removals d<from>.web ... of one cause.
func removals(from, n int, cause Cause, full bool) []removal {
	var out []removal
	for i := from; i < from+n; i++ {
		out = append(out, removal{key: fmt.Sprintf("d%04d.web", i), rev: uint64(i + 1), cause: cause, full: full})
	}
	return out
}

// pass is one render pass's removals and what the guard must do with them.
type pass struct {
	at         time.Duration // since the start
	stored     int
	ready      []removal
	release    bool // release the hold (by its fingerprint) before the pass
	wantRemove int
	wantHeld   int  // held after the pass
	wantBegan  bool // the pass began a hold
}

func TestGuardDecide(t *testing.T) {
	cases := []struct {
		name   string
		passes []pass
	}{
		{"restart: a few orphans of a full pass are removed", []pass{
			{stored: 1000, ready: removals(0, 9, CauseDeploymentGone, true), wantRemove: 9},
		}},
		{"restart: a wiped device-info bucket is held", []pass{
			{stored: 1000, ready: removals(0, 1000, CauseDeviceGone, true), wantHeld: 1000, wantBegan: true},
		}},
		{"restart: at the bound, every cause is held", []pass{
			{stored: 1000, ready: removals(0, 100, CauseDeploymentGone, true), wantHeld: 100, wantBegan: true},
		}},
		{"restart: one below the bound passes", []pass{
			{stored: 1000, ready: removals(0, 99, CauseNoMatch, true), wantRemove: 99},
		}},
		{"small fleet: the minimum applies", []pass{
			{stored: 12, ready: removals(0, 10, CauseDeviceGone, true), wantHeld: 10, wantBegan: true},
		}},
		{"running: a deployment deleted is removed at once, however many", []pass{
			{stored: 1000, ready: removals(0, 1000, CauseDeploymentGone, false), wantRemove: 1000},
		}},
		{"running: a relabelling is removed at once", []pass{
			{stored: 1000, ready: removals(0, 500, CauseNoMatch, false), wantRemove: 500},
		}},
		{"running: one device gone is removed", []pass{
			{stored: 1000, ready: removals(0, 1, CauseDeviceGone, false), wantRemove: 1},
		}},
		{"running: many devices gone at once are held", []pass{
			{stored: 1000, ready: removals(0, 100, CauseDeviceGone, false), wantHeld: 100, wantBegan: true},
		}},
		{"running: only the device-gone removals of a mixed pass are held", []pass{
			{stored: 1000, ready: append(removals(0, 300, CauseDeploymentGone, false), removals(300, 100, CauseDeviceGone, false)...),
				wantRemove: 300, wantHeld: 100, wantBegan: true},
		}},
		{"a trickle of devices gone within the window is held once it reaches the bound", []pass{
			{at: 0, stored: 100, ready: removals(0, 4, CauseDeviceGone, false), wantRemove: 4},
			{at: 3 * time.Minute, stored: 96, ready: removals(4, 5, CauseDeviceGone, false), wantRemove: 5},
			{at: 6 * time.Minute, stored: 91, ready: removals(9, 1, CauseDeviceGone, false), wantHeld: 1, wantBegan: true},
		}},
		{"a trickle slower than the window passes", []pass{
			{at: 0, stored: 100, ready: removals(0, 9, CauseDeviceGone, false), wantRemove: 9},
			{at: 10 * time.Minute, stored: 91, ready: removals(9, 9, CauseDeviceGone, false), wantRemove: 9},
			{at: 20 * time.Minute, stored: 82, ready: removals(18, 9, CauseDeviceGone, false), wantRemove: 9},
		}},
		{"device-gone removals of a full pass count in the window", []pass{
			{at: 0, stored: 100, ready: removals(0, 5, CauseDeviceGone, true), wantRemove: 5},
			{at: time.Minute, stored: 95, ready: removals(5, 5, CauseDeviceGone, false), wantHeld: 5, wantBegan: true},
		}},
		{"while a hold is in force, a single device gone joins it; a deployment deleted does not", []pass{
			{stored: 1000, ready: removals(0, 100, CauseDeviceGone, true), wantHeld: 100, wantBegan: true},
			{at: time.Hour, stored: 1000, ready: removals(100, 1, CauseDeviceGone, false), wantHeld: 101},
			{at: time.Hour, stored: 1000, ready: removals(200, 50, CauseDeploymentGone, false), wantRemove: 50, wantHeld: 101},
		}},
		{"a held key stays held even when it comes back as unguarded", []pass{
			{stored: 1000, ready: removals(0, 100, CauseDeviceGone, true), wantHeld: 100, wantBegan: true},
			{stored: 1000, ready: removals(0, 100, CauseDeploymentGone, false), wantHeld: 100},
		}},
		{"a released hold is removed at the next pass", []pass{
			{stored: 1000, ready: removals(0, 100, CauseDeviceGone, true), wantHeld: 100, wantBegan: true},
			{stored: 1000, ready: removals(0, 100, CauseDeviceGone, true), release: true, wantRemove: 100},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := newGuard(testLimits)
			t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			for i, p := range c.passes {
				if p.release {
					if keys := g.release(g.fingerprint()); len(keys) == 0 {
						t.Fatalf("pass %d: the release released nothing", i)
					}
				}
				remove, began := g.decide(t0.Add(p.at), p.stored, p.ready)
				if len(remove) != p.wantRemove || len(g.held) != p.wantHeld || began != p.wantBegan {
					t.Fatalf("pass %d: removed %d, held %d, began %v; want %d, %d, %v",
						i, len(remove), len(g.held), began, p.wantRemove, p.wantHeld, p.wantBegan)
				}
				for _, r := range remove {
					g.forget(r.key) // gone from the store
				}
			}
		})
	}
}

func TestGuardForgetClearsTheHold(t *testing.T) {
	g := newGuard(testLimits)
	now := time.Now()
	g.decide(now, 20, removals(0, 12, CauseDeviceGone, true))
	h := g.view()
	if h.Held != 12 || h.Causes[CauseDeviceGone] != 12 || h.Since == nil || !h.Since.Equal(now) || len(h.Examples) != holdExamples ||
		h.Examples[0] != "d0000.web" || h.Fingerprint == "" || h.Bound != 10 {
		t.Fatalf("view %+v", h)
	}
	for i := range 11 {
		if g.forget(fmt.Sprintf("d%04d.web", i)) {
			t.Fatalf("the hold cleared with %d keys still held", 11-i)
		}
	}
	if !g.forget("d0011.web") {
		t.Fatal("the last key came back, yet the hold did not clear")
	}
	if h := g.view(); h.Held != 0 || h.Since != nil || h.Fingerprint != "" {
		t.Fatalf("view after the hold cleared: %+v", h)
	}
}

func TestGuardFingerprint(t *testing.T) {
	a, b := newGuard(testLimits), newGuard(testLimits)
	now := time.Now()
	a.decide(now, 20, removals(0, 12, CauseDeviceGone, true))
	r := removals(0, 12, CauseDeviceGone, true)
	slices.Reverse(r)
	b.decide(now.Add(time.Hour), 20, r)
	if a.fingerprint() != b.fingerprint() {
		t.Fatal("the same keys and revisions, in another order and at another time, have another fingerprint")
	}
	b.decide(now, 20, []removal{{key: "d0003.web", rev: 99, cause: CauseDeviceGone, full: true}})
	if a.fingerprint() == b.fingerprint() {
		t.Fatal("a key written again did not change the fingerprint")
	}
	if keys := a.release(b.fingerprint()); keys != nil {
		t.Fatal("a release of another hold released this one")
	}
}

// A release record applies only to a hold that began before it was
// written: one left from an earlier hold never releases a new one.
func TestGuardReleaseRecords(t *testing.T) {
	g := newGuard(testLimits)
	now := time.Now()
	old := removals(0, 12, CauseDeviceGone, true)
	g.decide(now, 20, old)
	fp := g.fingerprint()
	if keys := g.see(releaseSeen{rev: 7, fingerprint: "someother"}); keys != nil {
		t.Fatal("a release of another fingerprint applied")
	}
	if keys := g.see(releaseSeen{rev: 8, fingerprint: fp}); len(keys) != 12 {
		t.Fatalf("the release for this hold released %d keys", len(keys))
	}
	if g.view().Approved != 12 || g.view().Held != 0 {
		t.Fatalf("after the release: %+v", g.view())
	}
	remove, _ := g.decide(now, 20, old)
	if len(remove) != 12 {
		t.Fatalf("approved keys: %d removed", len(remove))
	}
	for _, r := range remove {
		g.forget(r.key)
	}
	// The same keys at the same revisions held again (the devices came
	// back and vanished again): the old record must not release them.
	if _, began := g.decide(now, 20, old); !began || g.fingerprint() != fp {
		t.Fatal("the same hold did not begin again")
	}
	if keys := g.pending(); keys != nil {
		t.Fatal("a record left from the earlier hold released the new one")
	}
	if keys := g.see(releaseSeen{rev: 8, fingerprint: fp}); keys != nil {
		t.Fatal("the old record, seen again, released the new hold")
	}
	if keys := g.see(releaseSeen{rev: 9, fingerprint: fp}); len(keys) != 12 {
		t.Fatal("a new release did not release the new hold")
	}
}

// A record found in the store when the operator starts is older than any
// hold of that operator, even one that begins before the record is read.
func TestGuardRecordsFoundAtStartReleaseNothing(t *testing.T) {
	g := newGuard(testLimits)
	now := time.Now()
	g.decide(now, 20, removals(0, 12, CauseDeviceGone, true))
	fp := g.fingerprint()
	g.seeOld(releaseSeen{rev: 5, fingerprint: fp})
	if keys := g.pending(); keys != nil || g.view().Held != 12 {
		t.Fatal("a record found at start released the hold")
	}
	if keys := g.see(releaseSeen{rev: 6, fingerprint: fp}); len(keys) != 12 {
		t.Fatal("a release written afterwards did not release the hold")
	}
}

// Whatever happens, without a release the guard never lets through as
// many device-gone removals within one window as the bound, nor a full
// pass's worth at or above it.
func TestGuardNeverLetsAFloodThrough(t *testing.T) {
	const stored = 200 // bound 20
	bound := testLimits.Bound(stored)
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 1))
		g := newGuard(testLimits)
		t0 := time.Now()
		now := t0
		var gone []time.Time // device-gone removals let through
		next := 0
		for range 50 {
			now = now.Add(time.Duration(rng.IntN(int(3 * time.Minute))))
			var ready []removal
			full := rng.IntN(10) == 0
			for range rng.IntN(8) {
				cause := AllCauses()[rng.IntN(3)]
				ready = append(ready, removals(next, 1, cause, full)...)
				next++
			}
			// Some held keys come back as ready ones.
			for _, r := range g.held {
				if rng.IntN(4) == 0 {
					ready = append(ready, r)
				}
			}
			remove, _ := g.decide(now, stored, ready)
			guarded := 0
			for _, r := range remove {
				if r.guarded() {
					guarded++
				}
				if r.cause == CauseDeviceGone {
					gone = append(gone, now)
				}
				g.forget(r.key)
			}
			if guarded >= bound {
				t.Fatalf("seed %d: one pass let %d guarded removals through (bound %d)", seed, guarded, bound)
			}
			in := 0
			for _, at := range gone {
				if now.Sub(at) < testLimits.Window {
					in++
				}
			}
			if in >= bound {
				t.Fatalf("seed %d: %d device-gone removals let through within one window (bound %d)", seed, in, bound)
			}
		}
	}
}
