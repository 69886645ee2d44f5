package failover

import (
	"container/heap"
	"fmt"
	"math/rand"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"
)

// The simulation runs three nodes' decision machines against a simulated
// store (linearizable compare-and-set, watches with delays), simulated
// PostgreSQL (writable or not, following whom) and a simulated clock, with
// seeded schedules of crashes, freezes, partitions, slow stores and agent
// restarts. After every event it checks the invariants:
//   - AbsoluteConsistency: at most one node can acknowledge a write at any
//     instant (PostgreSQL writable, running, and its synchronous standby
//     attached);
//   - no promoted node misses an acknowledged write;
//   - once faults heal, some node acknowledges writes again (no missed
//     failover, no endless fencing).

type simEvent struct {
	at   time.Duration
	seq  int
	node int // -1: the simulator itself
	fn   func()
}

type eventQueue []*simEvent

func (q eventQueue) Len() int { return len(q) }
func (q eventQueue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}
func (q eventQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)   { *q = append(*q, x.(*simEvent)) }
func (q *eventQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

type simNode struct {
	m           Node
	pgUp        bool
	writable    bool
	following   string
	upToDate    bool   // holds every acknowledged write
	pgSync      string // synchronous_standby_names as PostgreSQL has it
	down        bool   // crashed (agent and PostgreSQL)
	frozenUntil time.Duration
	cutUntil    time.Duration // cut off from the store until then
	actionGen   int           // bumps when an action is replaced (cancels its result)
	// pgStopped: PostgreSQL is not running (it died) until the agent
	// starts it (unfence, follow, activate), which works once pgUp.
	pgStopped bool
	// clock is this node's monotonic clock's offset from simulated time:
	// nodes' clocks are minutes apart, and a clock may jump forward.
	clock time.Duration
}

// reporter is the part of testing.T the simulation uses.
type reporter interface {
	Errorf(format string, args ...any)
	Failed() bool
}

// fakeT records failures instead of failing the test.
type fakeT struct{ failed bool }

func (f *fakeT) Errorf(string, ...any) { f.failed = true }
func (f *fakeT) Failed() bool          { return f.failed }

type sim struct {
	t         reporter
	rng       *rand.Rand
	now       time.Duration
	q         eventQueue
	seq       int
	nodes     []*simNode
	names     []string
	cs        ClusterState
	rev       uint64
	strategy  Strategy
	timings   Timings
	slowUntil time.Duration
	// slowLinksUntil: the direct links between nodes are slow until then.
	slowLinksUntil time.Duration
	log            []string
	acks           int
	// strict: no node has been frozen in this schedule, so at most one
	// PostgreSQL may be writable at any instant (the timing argument alone,
	// without counting on synchronous replication).
	strict bool
	// lastBeat is every node's heartbeat as the store holds it.
	lastBeat map[string]simBeat
	// linkCut: the direct link between two nodes (the failsafe's requests)
	// is down until then; key: the lower index first.
	linkCut map[[2]int]time.Duration
	// brokenPromises: replicas answer failsafe requests but do not keep
	// their promise (a mutation: the checks must then find a violation).
	brokenPromises bool
	// noFailsafe: primaries never ask (today's behaviour before the
	// failsafe, to compare availability).
	noFailsafe bool
	// gapStart, maxGap: the longest time no node could acknowledge a
	// write, measured from watchFrom on.
	watchFrom, gapStart, maxGap time.Duration
	inGap                       bool
	promises                    int // promises granted
}

func (s *sim) linked(i, j int) bool {
	if i > j {
		i, j = j, i
	}
	return s.now >= s.linkCut[[2]int{i, j}]
}

func (s *sim) cutLink(i, j int, d time.Duration) {
	if i > j {
		i, j = j, i
	}
	s.linkCut[[2]int{i, j}] = s.now + d
}

type simBeat struct {
	rev    uint64
	status Status
}

func newSim(t reporter, seed int64, strategy Strategy, tm Timings) *sim {
	s := &sim{t: t, rng: rand.New(rand.NewSource(seed)), strategy: strategy, timings: tm, names: []string{"n1", "n2", "n3"}, strict: true,
		lastBeat: map[string]simBeat{}, linkCut: map[[2]int]time.Duration{}}
	s.rev = 1
	s.cs = ClusterState{Primary: "n1", Sync: "n2", Epoch: 1, Rev: 1}
	for i, name := range s.names {
		n := &simNode{m: NewNode(name, tm, strategy), pgUp: true, upToDate: true,
			clock: time.Duration(s.rng.Int63n(int64(20*time.Minute))) - 10*time.Minute}
		if i == 0 {
			n.writable, n.pgSync = true, "n2"
		} else {
			n.following = "n1"
		}
		s.nodes = append(s.nodes, n)
	}
	for i := range s.nodes {
		s.deliver(i, 0, Event{Kind: EvStart, CS: s.cs, Writable: s.nodes[i].writable})
		s.scheduleTick(i)
	}
	return s
}

func (s *sim) at(d time.Duration, node int, fn func()) {
	s.seq++
	heap.Push(&s.q, &simEvent{at: s.now + d, seq: s.seq, node: node, fn: fn})
}

func (s *sim) logf(format string, args ...any) {
	s.log = append(s.log, fmt.Sprintf("%8s ", s.now)+fmt.Sprintf(format, args...))
}

func (s *sim) jitter(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(s.rng.Int63n(int64(hi-lo)))
}

// deliver hands an event to node i's machine (deferred while it is frozen,
// dropped while it is down) and carries out the resulting actions.
func (s *sim) deliver(i int, d time.Duration, ev Event) {
	s.at(d, i, func() {
		n := s.nodes[i]
		if n.down {
			return
		}
		if s.now < n.frozenUntil {
			// Woken up, it handles what queued meanwhile in any order (as
			// Go's select picks among ready channels).
			s.deliver(i, n.frozenUntil-s.now+s.jitter(0, 5*time.Millisecond), ev)
			return
		}
		ev.Now = s.now + n.clock
		before := n.m.Status
		var acts []Action
		n.m, acts = Step(n.m, ev)
		if n.m.Status != before {
			s.logf("%s %s -> %s (event %d result %d)", n.m.Name, before, n.m.Status, ev.Kind, ev.Result)
		}
		for _, a := range acts {
			n.actionGen++
			s.run(i, a, n.actionGen)
		}
		s.check()
	})
}

func (s *sim) scheduleTick(i int) {
	s.at(s.timings.HeartbeatInterval, i, func() {
		s.deliver(i, 0, Event{Kind: EvTick})
		s.scheduleTick(i)
	})
}

func (s *sim) reachable(i int) bool { return s.now >= s.nodes[i].cutUntil }

// storeOp simulates one store round trip started now by node i: it lands (or
// not) after a latency; the node hears back within HeartbeatTimeout, or hears
// "unknown" when the latency exceeds it.
func (s *sim) storeOp(i, gen int, apply func() (Result, ClusterState), done func(Result, ClusterState)) {
	timeout := s.timings.HeartbeatTimeout
	if !s.reachable(i) {
		s.at(timeout, i, func() { s.result(i, gen, func() { done(ResultUnreachable, ClusterState{}) }) })
		return
	}
	hi := timeout / 3
	if s.now < s.slowUntil {
		hi = timeout * 2
	}
	lat := s.jitter(time.Millisecond, hi)
	if lat <= timeout {
		s.at(lat, i, func() {
			r, cs := apply()
			s.result(i, gen, func() { done(r, cs) })
		})
		return
	}
	s.at(lat, i, func() { apply() })
	s.at(timeout, i, func() { s.result(i, gen, func() { done(ResultUnknown, ClusterState{}) }) })
}

// result reports an action's result unless the action was replaced.
func (s *sim) result(i, gen int, report func()) {
	if s.nodes[i].actionGen != gen || s.nodes[i].down {
		return
	}
	report()
}

func (s *sim) setCS(cs ClusterState) {
	s.rev++
	cs.Rev = s.rev
	s.cs = cs
	for j := range s.nodes {
		s.watch(j, Event{Kind: EvClusterState, CS: cs})
	}
}

// watch delivers a watch event after a delay, or once the node can reach the
// store again.
func (s *sim) watch(j int, ev Event) {
	d := s.jitter(time.Millisecond, 30*time.Millisecond)
	if cut := s.nodes[j].cutUntil; cut > s.now {
		d += cut - s.now
	}
	s.deliver(j, d, ev)
}

func (s *sim) heartbeatWritten(i int) {
	s.rev++
	rev := s.rev
	status := s.nodes[i].m.Status
	s.lastBeat[s.names[i]] = simBeat{rev: rev, status: status}
	for j := range s.nodes {
		if j == i {
			continue
		}
		j := j
		d := s.jitter(time.Millisecond, 30*time.Millisecond)
		if cut := s.nodes[j].cutUntil; cut > s.now {
			d += cut - s.now
		}
		s.at(d, j, func() {
			s.deliver(j, 0, Event{Kind: EvPrimaryBeat, Rev: rev, Status: status, Node: s.names[i]})
		})
	}
}

func (s *sim) run(i int, a Action, gen int) {
	n := s.nodes[i]
	me := s.names[i]
	switch a.Kind {
	case ActBeat:
		// As the loop: a fenced node does not check PostgreSQL (it is down).
		healthy := (n.pgUp && !n.pgStopped) || n.m.Status == StatusFenced
		var standbys []string
		for j, other := range s.nodes {
			if j != i && s.alive(j) && other.following == me && other.upToDate == n.upToDate {
				standbys = append(standbys, s.names[j])
			}
		}
		started := s.now + n.clock
		s.storeOp(i, gen, func() (Result, ClusterState) {
			if !healthy {
				return ResultUnhealthy, ClusterState{}
			}
			s.heartbeatWritten(i)
			return ResultOK, s.cs
		}, func(r Result, cs ClusterState) {
			ev := Event{Kind: EvBeatResult, Result: r, CS: cs, Standbys: standbys, PGSync: n.pgSync, Started: started}
			if a.Failsafe && !s.noFailsafe && (r == ResultUnreachable || r == ResultUnknown) {
				s.askPromises(i, gen, a.Peers, ev)
				return
			}
			s.deliver(i, 0, ev)
		})
	case ActSetSync:
		// PostgreSQL first (commits wait for the target from now on), then
		// the target must have caught up, then the compare-and-set.
		s.at(s.jitter(5*time.Millisecond, 50*time.Millisecond), i, func() {
			if n.down || n.actionGen != gen {
				return
			}
			if s.cs.Primary != me || (s.cs.Sync != a.Target && s.cs.Rev != a.BaseRev) {
				s.deliver(i, 0, Event{Kind: EvActionDone, Action: ActSetSync, Result: ResultConflict, CS: s.cs})
				return
			}
			if a.Target == "" && s.cs.Sync != "" {
				// Un-name by CAS first, then acknowledge alone.
				s.storeOp(i, gen, func() (Result, ClusterState) {
					if s.cs.Rev != a.BaseRev || s.cs.Primary != me {
						return ResultConflict, s.cs
					}
					cs := s.cs
					cs.Sync, cs.Handoff = "", false
					s.setCS(cs)
					return ResultOK, s.cs
				}, func(r Result, cs ClusterState) {
					if r == ResultOK {
						n.pgSync = ""
					}
					if r == ResultUnknown {
						r = ResultFailed
					}
					s.deliver(i, 0, Event{Kind: EvActionDone, Action: ActSetSync, Result: r, CS: cs})
				})
				return
			}
			n.pgSync = a.Target
			if a.Target == "" || s.cs.Sync == a.Target {
				s.deliver(i, 0, Event{Kind: EvActionDone, Action: ActSetSync, Result: ResultOK, CS: s.cs})
				return
			}
			caughtUp := false
			for j, name := range s.names {
				if name == a.Target && s.alive(j) && s.nodes[j].following == me {
					s.nodes[j].upToDate = s.nodes[j].upToDate || n.upToDate
					caughtUp = true
				}
			}
			if !caughtUp {
				s.deliver(i, 0, Event{Kind: EvActionDone, Action: ActSetSync, Result: ResultFailed})
				return
			}
			s.storeOp(i, gen, func() (Result, ClusterState) {
				if s.cs.Rev != a.BaseRev || s.cs.Primary != me {
					return ResultConflict, s.cs
				}
				cs := s.cs
				cs.Sync = a.Target
				cs.Handoff = false
				s.setCS(cs)
				return ResultOK, s.cs
			}, func(r Result, cs ClusterState) {
				if r == ResultUnknown {
					r = ResultFailed
				}
				s.deliver(i, 0, Event{Kind: EvActionDone, Action: ActSetSync, Result: r, CS: cs})
			})
		})
	case ActPromote:
		var seen uint64
		s.storeOp(i, gen, func() (Result, ClusterState) {
			if b := s.lastBeat[n.m.CS.Primary]; b.rev != 0 && b.rev != a.BeatRev && HoldsPrimary(b.status) {
				seen = b.rev
				return ResultConflict, s.cs // the primary is alive after all
			}
			if s.cs.Rev != a.BaseRev {
				return ResultConflict, s.cs
			}
			s.setCS(ClusterState{Primary: me, Sync: "", Epoch: a.Epoch})
			return ResultOK, s.cs
		}, func(r Result, cs ClusterState) {
			s.deliver(i, 0, Event{Kind: EvPromoteResult, Result: r, CS: cs, Rev: seen})
		})
	case ActHandOff:
		// A clean stop (its last WAL reaches the standbys), then the CAS.
		s.at(s.jitter(5*time.Millisecond, 100*time.Millisecond), i, func() {
			if n.down || n.actionGen != gen {
				return
			}
			n.writable = false
			s.storeOp(i, gen, func() (Result, ClusterState) {
				if s.cs.Rev != a.BaseRev {
					return ResultConflict, s.cs
				}
				s.setCS(ClusterState{Primary: a.Target, Epoch: a.Epoch, Handoff: true})
				return ResultOK, s.cs
			}, func(r Result, cs ClusterState) {
				s.deliver(i, 0, Event{Kind: EvActionDone, Action: ActHandOff, Result: r, CS: cs})
			})
		})
	case ActReadState:
		s.storeOp(i, gen, func() (Result, ClusterState) { return ResultOK, s.cs }, func(r Result, cs ClusterState) {
			if r == ResultUnknown {
				r = ResultFailed
			}
			s.deliver(i, 0, Event{Kind: EvActionDone, Action: ActReadState, Result: r, CS: cs})
		})
	case ActFence:
		// Three escalating attempts fit in the safety margin.
		d := s.jitter(5*time.Millisecond, s.timings.SafetyMargin/4)
		ok := s.rng.Intn(10) > 0 || a.Escalation >= 2 // the last resort always works
		s.at(d, i, func() {
			if n.down || n.actionGen != gen {
				return
			}
			if ok {
				n.writable = false
			}
			r := ResultOK
			if !ok {
				r = ResultFailed
			}
			s.deliver(i, 0, Event{Kind: EvActionDone, Action: ActFence, Result: r})
		})
	case ActUnfence:
		// Claim the role by CAS (same content, new revision), then start.
		s.storeOp(i, gen, func() (Result, ClusterState) {
			if s.cs.Primary != me || s.cs.Rev != a.BaseRev {
				return ResultConflict, s.cs
			}
			s.setCS(s.cs)
			return ResultOK, s.cs
		}, func(r Result, cs ClusterState) {
			if r == ResultOK {
				if !n.pgUp {
					r = ResultFailed
				} else {
					n.writable, n.following, n.pgSync, n.pgStopped = true, "", cs.Sync, false
				}
			}
			if r == ResultUnknown {
				r = ResultUnreachable
			}
			s.deliver(i, 0, Event{Kind: EvActionDone, Action: ActUnfence, Result: r, CS: cs})
		})
	case ActActivate:
		s.at(s.jitter(50*time.Millisecond, 300*time.Millisecond), i, func() {
			if n.down || n.actionGen != gen {
				return
			}
			if s.cs.Primary != me || s.cs.Epoch != a.Epoch || !s.reachable(i) {
				r := ResultConflict
				if !s.reachable(i) {
					r = ResultFailed
				}
				s.deliver(i, 0, Event{Kind: EvActionDone, Action: ActActivate, Result: r, CS: s.cs})
				return
			}
			if !n.pgUp {
				s.deliver(i, 0, Event{Kind: EvActionDone, Action: ActActivate, Result: ResultFailed})
				return
			}
			if s.strategy == AbsoluteConsistency && !n.upToDate {
				s.t.Errorf("%s promoted without every acknowledged write\n%s", me, s.dump())
			}
			n.writable, n.following, n.pgSync, n.pgStopped = true, "", n.m.CS.Sync, false
			s.deliver(i, 0, Event{Kind: EvActionDone, Action: ActActivate, Result: ResultOK})
		})
	case ActFollow:
		s.at(s.jitter(50*time.Millisecond, 300*time.Millisecond), i, func() {
			if n.down || n.actionGen != gen {
				return
			}
			n.writable = false
			if !n.pgUp {
				s.deliver(i, 0, Event{Kind: EvActionDone, Action: ActFollow, Result: ResultFailed})
				return
			}
			n.pgStopped = false
			// Streaming from a primary brings everything that primary has;
			// following the same primary again loses nothing.
			same := n.following == a.Target
			for j, name := range s.names {
				if name == a.Target {
					n.upToDate = (same && n.upToDate) || s.nodes[j].upToDate
				}
			}
			n.following = a.Target
			s.logf("%s follows %s, upToDate=%v", me, a.Target, n.upToDate)
			s.deliver(i, 0, Event{Kind: EvActionDone, Action: ActFollow, Result: ResultOK})
		})
	}
}

// askPromises simulates the failsafe requests of node i's beat to peers
// over the direct links: each answer arrives after two link latencies, and
// only answers within HeartbeatTimeout count. A peer handles the request
// when it arrives (its promise holds from then on, answered or not).
func (s *sim) askPromises(i, gen int, peers []string, ev Event) {
	n := s.nodes[i]
	asked := s.now + n.clock
	lease := s.timings.PromiseLease()
	if len(peers) == 0 {
		ev.Held, ev.Covered = true, asked+lease
		s.deliver(i, 0, ev)
		return
	}
	timeout := s.timings.HeartbeatTimeout
	epoch, from := n.m.CS.Epoch, s.names[i]
	pending, held := len(peers), true
	var slowest time.Duration
	finish := func() {
		if held {
			ev.Held, ev.Covered = true, asked+lease
		}
		s.result(i, gen, func() { s.deliver(i, 0, ev) })
	}
	answered := func(ok bool, after time.Duration) {
		held = held && ok && after <= timeout
		slowest = max(slowest, after)
		if pending--; pending == 0 {
			s.at(min(slowest, timeout), i, finish)
		}
	}
	for _, name := range peers {
		j := slices.Index(s.names, name)
		if j < 0 || j == i {
			answered(false, timeout)
			continue
		}
		there, back := s.jitter(time.Millisecond, 20*time.Millisecond), s.jitter(time.Millisecond, 20*time.Millisecond)
		if s.now < s.slowLinksUntil {
			// A loaded network: answers may come too late.
			there, back = s.jitter(time.Millisecond, timeout), s.jitter(time.Millisecond, timeout)
		}
		if !s.linked(i, j) {
			answered(false, timeout)
			continue
		}
		s.at(there, -1, func() {
			p := s.nodes[j]
			ok := false
			if !p.down && s.now >= p.frozenUntil && s.linked(i, j) {
				var m Node
				m, ok = p.m.Promise(from, epoch, s.now+p.clock)
				if !s.brokenPromises {
					p.m = m
				}
				if ok {
					s.promises++
				}
			}
			// The answer travels back; the link must still be up then.
			s.at(back, -1, func() { answered(ok && s.linked(i, j), there+back) })
		})
	}
}

func (s *sim) alive(i int) bool {
	n := s.nodes[i]
	return !n.down && n.pgUp && s.now >= n.frozenUntil
}

// canAck reports whether node i could acknowledge a write now.
func (s *sim) canAck(i int) (bool, int) {
	n := s.nodes[i]
	if !s.alive(i) || !n.writable {
		return false, -1
	}
	if s.strategy == SplitBrainAllowed || n.pgSync == "" {
		return true, -1 // acknowledged alone
	}
	for j, name := range s.names {
		if name == n.pgSync && j != i && s.alive(j) && s.nodes[j].following == s.names[i] {
			return true, j
		}
	}
	return false, -1
}

// check asserts the invariants and simulates a client writing to whoever
// can acknowledge.
func (s *sim) check() {
	var ackers []int
	for i := range s.nodes {
		if ok, sync := s.canAck(i); ok {
			ackers = append(ackers, i)
			// A write acknowledged now is on the primary and its sync standby.
			s.acks++
			for j := range s.nodes {
				if s.strategy == AbsoluteConsistency {
					was := s.nodes[j].upToDate
					s.nodes[j].upToDate = j == i || j == sync
					if was != s.nodes[j].upToDate {
						s.logf("%s upToDate=%v (ack by %s, sync %d)", s.names[j], s.nodes[j].upToDate, s.names[i], sync)
					}
				}
			}
		}
	}
	if s.watchFrom > 0 && s.now >= s.watchFrom {
		switch {
		case len(ackers) == 0 && !s.inGap:
			s.inGap, s.gapStart = true, s.now
		case len(ackers) > 0 && s.inGap:
			s.inGap = false
			s.maxGap = max(s.maxGap, s.now-s.gapStart)
		}
	}
	if s.strategy == AbsoluteConsistency && len(ackers) > 1 {
		s.t.Errorf("split brain at %s: %v can all acknowledge writes\n%s", s.now, ackers, s.dump())
	}
	if s.strategy == AbsoluteConsistency && s.strict {
		var writable []string
		for i, n := range s.nodes {
			if s.alive(i) && n.writable {
				writable = append(writable, s.names[i])
			}
		}
		if len(writable) > 1 {
			s.t.Errorf("two writable primaries at %s: %v\n%s", s.now, writable, s.dump())
		}
	}
}

func (s *sim) dump() string {
	out := ""
	start := 0
	if len(s.log) > 40 {
		start = len(s.log) - 40
	}
	for _, l := range s.log[start:] {
		out += l + "\n"
	}
	for i, n := range s.nodes {
		out += fmt.Sprintf("%s: %s pending=%q failing=%q successes=%d writable=%v following=%q down=%v frozen=%v cut=%v cs=%+v\n", s.names[i], n.m.Status, n.m.Pending, n.m.Failing, n.m.Successes, n.writable, n.following, n.down, s.now < n.frozenUntil, s.now < n.cutUntil, n.m.CS)
	}
	return out + fmt.Sprintf("store: %+v", s.cs)
}

func (s *sim) runUntil(end time.Duration) {
	for s.q.Len() > 0 && !s.t.Failed() {
		ev := heap.Pop(&s.q).(*simEvent)
		if ev.at > end {
			heap.Push(&s.q, ev)
			s.now = end
			return
		}
		s.now = ev.at
		ev.fn()
	}
}

// fault injects one random fault starting now.
func (s *sim) fault() string {
	i := s.rng.Intn(len(s.nodes))
	if s.rng.Intn(2) == 0 {
		// Aim at whoever is primary now: the interesting case.
		for j, name := range s.names {
			if name == s.cs.Primary {
				i = j
			}
		}
	}
	n := s.nodes[i]
	d := s.jitter(200*time.Millisecond, 6*time.Second)
	switch s.rng.Intn(11) {
	case 8: // the store is away for everyone (a server restart, an election)
		for _, m := range s.nodes {
			m.cutUntil = max(m.cutUntil, s.now+d)
		}
		return fmt.Sprintf("store away for everyone for %s", d)
	case 9: // the direct link between two nodes fails
		j := (i + 1 + s.rng.Intn(len(s.nodes)-1)) % len(s.nodes)
		s.cutLink(i, j, d)
		return fmt.Sprintf("link %s-%s down for %s", s.names[i], s.names[j], d)
	case 10: // cut off from the store and from every peer
		n.cutUntil = s.now + d
		for j := range s.nodes {
			if j != i {
				s.cutLink(i, j, d)
			}
		}
		return fmt.Sprintf("isolate %s for %s", s.names[i], d)
	case 0: // the whole node crashes, comes back with PostgreSQL read-only
		n.down, n.pgUp, n.writable = true, false, false
		s.at(d, -1, func() {
			n.down, n.pgUp = false, true
			s.restartAgent(i)
		})
		return fmt.Sprintf("crash %s for %s", s.names[i], d)
	case 1: // SIGSTOP of agent and PostgreSQL, then SIGCONT
		n.frozenUntil = s.now + d
		s.strict = false
		return fmt.Sprintf("freeze %s for %s", s.names[i], d)
	case 2: // cut off from the store only
		n.cutUntil = s.now + d
		return fmt.Sprintf("partition %s from the store for %s", s.names[i], d)
	case 3: // the store answers slowly, and maybe the links between nodes too
		s.slowUntil = s.now + d
		if s.rng.Intn(2) == 0 {
			s.slowLinksUntil = s.now + d
			return fmt.Sprintf("slow store and links for %s", d)
		}
		return fmt.Sprintf("slow store for %s", d)
	case 5: // the node's clock jumps forward (a VM resumed, a bad time source)
		// A replica may then see a timeout that did not happen and take
		// over from a live primary: both may be writable for a moment,
		// and only synchronous replication keeps acknowledged writes safe.
		jump := s.jitter(time.Second, 5*time.Minute)
		n.clock += jump
		s.strict = false
		return fmt.Sprintf("clock of %s jumps %s", s.names[i], jump)
	case 6: // PostgreSQL dies and cannot start for a while; the agent runs
		n.pgUp, n.writable, n.pgStopped = false, false, true
		s.at(d, -1, func() { n.pgUp = true }) // it could start again
		return fmt.Sprintf("PostgreSQL of %s down for %s", s.names[i], d)
	case 4: // an operator asks the primary for a switchover
		var to string
		for j, name := range s.names {
			if j != i && (s.strategy == SplitBrainAllowed || name == s.cs.Sync) {
				to = name
			}
		}
		for j, name := range s.names {
			if name == s.cs.Primary {
				s.watch(j, Event{Kind: EvSwitchover, Target: to, CS: s.cs})
			}
		}
		return fmt.Sprintf("switchover to %q", to)
	default: // the agent restarts; PostgreSQL keeps running
		// While no agent runs, nothing fences this PostgreSQL: only
		// synchronous replication keeps writes safe (see timingSafe).
		if n.writable {
			s.strict = false
		}
		n.down = true // the old agent is gone at once
		s.at(s.jitter(10*time.Millisecond, 500*time.Millisecond), -1, func() {
			n.down = false
			s.restartAgent(i)
		})
		return fmt.Sprintf("restart agent %s", s.names[i])
	}
}

// restartAgent starts a fresh machine that reads cluster-state first (when
// it can reach the store), then follows it with a watch whose first value
// is the current one.
func (s *sim) restartAgent(i int) {
	n := s.nodes[i]
	n.m = NewNode(s.names[i], s.timings, s.strategy)
	n.actionGen++
	if !s.reachable(i) {
		s.deliver(i, s.timings.HeartbeatTimeout, Event{Kind: EvStart, Result: ResultUnreachable, Writable: n.writable})
	} else {
		s.deliver(i, 0, Event{Kind: EvStart, CS: s.cs, Writable: n.writable})
	}
	// A new watch starts with the value current when it is delivered.
	d := s.jitter(time.Millisecond, 30*time.Millisecond)
	if n.cutUntil > s.now {
		d += n.cutUntil - s.now
	}
	s.at(d, -1, func() {
		s.deliver(i, 0, Event{Kind: EvClusterState, CS: s.cs})
		// The heartbeat watch replays every member's last heartbeat.
		for _, name := range s.names {
			if b, ok := s.lastBeat[name]; ok && name != s.names[i] {
				s.deliver(i, 0, Event{Kind: EvPrimaryBeat, Rev: b.rev, Status: b.status, Node: name})
			}
		}
	})
}

func exploreSchedules(t *testing.T, strategy Strategy, tm Timings, seeds int) {
	for seed := int64(1); seed <= int64(seeds); seed++ {
		if t.Failed() {
			return
		}
		s := newSim(t, seed, strategy, tm)
		var faults []string
		s.runUntil(2 * time.Second)
		for k := 0; k < 1+s.rng.Intn(3); k++ {
			faults = append(faults, s.fault())
			s.runUntil(s.now + s.jitter(100*time.Millisecond, 4*time.Second))
		}
		// Heal everything, then the cluster must serve again.
		s.runUntil(s.now + 8*time.Second)
		s.runUntil(s.now + 8*time.Second)
		if t.Failed() {
			t.Fatalf("seed %d, faults %v", seed, faults)
		}
		ackers := 0
		for i := range s.nodes {
			if ok, _ := s.canAck(i); ok {
				ackers++
			}
		}
		if ackers != 1 {
			t.Fatalf("seed %d, faults %v: %d nodes can acknowledge writes after healing\n%s", seed, faults, ackers, s.dump())
		}
	}
}

// seeds is how many schedules each exploration runs: 2,000 by default (a few
// seconds), more with HARMONY_EXPLORE_SEEDS for a long hunt.
func seeds(t *testing.T) int {
	if v := os.Getenv("HARMONY_EXPLORE_SEEDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("HARMONY_EXPLORE_SEEDS=%q: want a positive number", v)
		}
		return n
	}
	return 2000
}

func TestExploreAbsoluteConsistency(t *testing.T) {
	exploreSchedules(t, AbsoluteConsistency, DefaultTimings(), seeds(t))
}

func TestExploreAbsoluteConsistencyFast(t *testing.T) {
	exploreSchedules(t, AbsoluteConsistency, FastTimings(), seeds(t))
}

func TestExploreSplitBrainAllowed(t *testing.T) {
	exploreSchedules(t, SplitBrainAllowed, DefaultTimings(), seeds(t))
}

// The exploration must be able to fail: with a failover timeout shorter than
// the arithmetic requires, it finds two writable primaries.
func TestExplorationCatchesUnsafeTimings(t *testing.T) {
	bad := DefaultTimings()
	bad.FailoverTimeout = bad.MaxUnconfirmedServe() / 2
	if bad.Validate() == nil {
		t.Fatal("Validate accepted unsafe timings")
	}
	found := false
	for seed := int64(1); seed <= 300 && !found; seed++ {
		ft := &fakeT{}
		s := newSim(ft, seed, AbsoluteConsistency, bad)
		s.runUntil(2 * time.Second)
		for k := 0; k < 3; k++ {
			s.fault()
			s.runUntil(s.now + s.jitter(100*time.Millisecond, 4*time.Second))
		}
		found = ft.failed
	}
	if !found {
		t.Fatal("300 schedules with unsafe timings found no violation: the invariant checks cannot fail")
	}
}

// A switchover in a calm cluster hands the role to the named standby, and
// the cluster serves again with exactly one primary; requests that may not
// be honoured change nothing.
func TestSwitchoverInCalmCluster(t *testing.T) {
	for _, strategy := range []Strategy{AbsoluteConsistency, SplitBrainAllowed} {
		s := newSim(t, 7, strategy, DefaultTimings())
		s.runUntil(2 * time.Second)
		// Not the synchronous standby (AbsoluteConsistency), a stale epoch,
		// and the primary itself: all refused.
		bad := []Event{{Kind: EvSwitchover, Target: "n1", CS: s.cs}, {Kind: EvSwitchover, Target: "n2", CS: ClusterState{Epoch: s.cs.Epoch + 5}}}
		if strategy == AbsoluteConsistency {
			bad = append(bad, Event{Kind: EvSwitchover, Target: "n3", CS: s.cs})
		}
		for _, ev := range bad {
			s.deliver(0, 0, ev)
			s.runUntil(s.now + time.Second)
			if s.cs.Primary != "n1" || s.cs.Epoch != 1 {
				t.Fatalf("%s: request %+v moved the primary: %+v", strategy, ev, s.cs)
			}
		}
		s.deliver(0, 0, Event{Kind: EvSwitchover, Target: "n2", CS: s.cs})
		s.runUntil(s.now + 8*time.Second)
		if s.cs.Primary != "n2" || s.cs.Epoch != 2 {
			t.Fatalf("%s: after switchover cluster-state is %+v", strategy, s.cs)
		}
		var ackers []string
		for i := range s.nodes {
			if ok, _ := s.canAck(i); ok {
				ackers = append(ackers, s.names[i])
			}
		}
		if len(ackers) != 1 || ackers[0] != "n2" {
			t.Fatalf("%s: after switchover %v acknowledge writes\n%s", strategy, ackers, s.dump())
		}
		if s.nodes[0].following != "n2" {
			t.Fatalf("%s: old primary follows %q\n%s", strategy, s.nodes[0].following, s.dump())
		}
	}
}

// A replica frozen while the primary stays healthy wakes up with a stale
// view (its tick may be handled before the heartbeats queued meanwhile): it
// must not take over from a live primary.
func TestFrozenReplicaDoesNotDeposeLivePrimary(t *testing.T) {
	for seed := int64(1); seed <= 200; seed++ {
		for _, strategy := range []Strategy{AbsoluteConsistency, SplitBrainAllowed} {
			s := newSim(t, seed, strategy, DefaultTimings())
			s.runUntil(2 * time.Second)
			victim := 1 // n2, the synchronous standby
			if strategy == SplitBrainAllowed && seed%2 == 0 {
				victim = 2
			}
			s.nodes[victim].frozenUntil = s.now + s.jitter(3*time.Second, 10*time.Second)
			s.runUntil(s.now + 15*time.Second)
			if s.cs.Primary != "n1" || s.cs.Epoch != 1 {
				t.Fatalf("seed %d %s: a frozen replica deposed the live primary: %+v\n%s", seed, strategy, s.cs, s.dump())
			}
		}
	}
}

// runScenario warms a three-node cluster up, applies fault, and runs 20 s,
// measuring the longest time no node could acknowledge a write from the
// fault on.
func runScenario(t reporter, seed int64, tm Timings, fault func(s *sim)) *sim {
	s := newSim(t, seed, AbsoluteConsistency, tm)
	s.runUntil(2 * time.Second)
	s.watchFrom = s.now
	fault(s)
	s.runUntil(s.now + 20*time.Second)
	if s.inGap {
		s.maxGap = max(s.maxGap, s.now-s.gapStart)
	}
	return s
}

// The failsafe: a store outage that every node sees (a server restart, a
// NATS election), or one that cuts only the primary off, stops no write
// and causes no failover; the primary keeps the promises of its
// synchronous standby over the direct link. Without the failsafe the same
// outages stop writes (the comparison shows the scenario bites).
func TestFailsafeRidesOutStoreOutages(t *testing.T) {
	outages := map[string]func(s *sim){
		"store away for everyone": func(s *sim) {
			for _, n := range s.nodes {
				n.cutUntil = s.now + 10*time.Second
			}
		},
		"primary cut off from the store": func(s *sim) { s.nodes[0].cutUntil = s.now + 10*time.Second },
		"store answers slowly":           func(s *sim) { s.slowUntil = s.now + 10*time.Second },
	}
	for name, outage := range outages {
		for _, tm := range []Timings{DefaultTimings(), FastTimings()} {
			for seed := int64(1); seed <= 50; seed++ {
				s := runScenario(t, seed, tm, outage)
				if t.Failed() {
					t.Fatalf("%s, seed %d", name, seed)
				}
				if s.cs.Epoch != 1 || s.cs.Primary != "n1" {
					t.Fatalf("%s, seed %d: a failover happened: %+v\n%s", name, seed, s.cs, s.dump())
				}
				if s.maxGap > 0 && name != "store answers slowly" {
					t.Fatalf("%s, seed %d: writes stopped for %s\n%s", name, seed, s.maxGap, s.dump())
				}
				if s.maxGap > tm.FailoverTimeout {
					t.Fatalf("%s, seed %d: writes stopped for %s\n%s", name, seed, s.maxGap, s.dump())
				}
				if s.promises == 0 {
					t.Fatalf("%s, seed %d: no promise was given: the failsafe was not exercised", name, seed)
				}
			}
		}
		off := &fakeT{}
		s := runScenario(off, 1, DefaultTimings(), func(s *sim) { s.noFailsafe = true; outage(s) })
		if name != "store answers slowly" && s.maxGap == 0 {
			t.Fatalf("%s without the failsafe: writes never stopped: the scenario does not bite", name)
		}
	}
}

// The failsafe is no licence to serve alone: a primary cut off from the
// store and from its standby fences, the standby takes over, and at no
// instant are two nodes writable.
func TestFailsafeIsolatedPrimaryStillFences(t *testing.T) {
	for seed := int64(1); seed <= 100; seed++ {
		s := runScenario(t, seed, DefaultTimings(), func(s *sim) {
			s.nodes[0].cutUntil = s.now + 10*time.Second
			s.cutLink(0, 1, 10*time.Second)
			s.cutLink(0, 2, 10*time.Second)
		})
		if t.Failed() {
			t.Fatalf("seed %d", seed)
		}
		if s.cs.Primary != "n2" || s.cs.Epoch != 2 {
			t.Fatalf("seed %d: the isolated primary was not replaced: %+v\n%s", seed, s.cs, s.dump())
		}
	}
}

// The mutation check: replicas that answer but do not keep their promises
// let a primary cut off from the store serve while its standby promotes;
// the invariants must catch it.
func TestExplorationCatchesBrokenPromises(t *testing.T) {
	found := false
	for seed := int64(1); seed <= 300 && !found; seed++ {
		ft := &fakeT{}
		s := newSim(ft, seed, AbsoluteConsistency, DefaultTimings())
		s.brokenPromises = true
		s.runUntil(2 * time.Second)
		s.nodes[0].cutUntil = s.now + s.jitter(3*time.Second, 8*time.Second)
		s.runUntil(s.now + 12*time.Second)
		found = ft.failed
	}
	if !found {
		t.Fatal("300 schedules with broken promises found no violation: the invariant checks cannot see the failsafe")
	}
}
