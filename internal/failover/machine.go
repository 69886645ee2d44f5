package failover

import (
	"slices"
	"time"
)

// Status is a node's place in the failover workflow. It is what the node's
// heartbeat reports, so a fenced node never reports itself healthy.
type Status string

const (
	StatusStarting   Status = "Starting"
	StatusPrimary    Status = "Primary"    // serves writes
	StatusFencing    Status = "Fencing"    // fence under way: may still serve
	StatusFenced     Status = "Fenced"     // proven not to accept writes
	StatusReplica    Status = "Replica"    // follows the primary
	StatusPromoting  Status = "Promoting"  // compare-and-set on cluster-state under way
	StatusActivating Status = "Activating" // won; PostgreSQL being promoted
	StatusFailed     Status = "Failed"     // a replica whose own checks fail: not promotable
)

// ClusterState is the value of the failover bucket's cluster-state key.
type ClusterState struct {
	Primary string
	// Sync is the standby the primary replicates to synchronously; in
	// AbsoluteConsistency only it may be promoted.
	Sync  string
	Epoch uint64
	// Paused: automatic failover is off (maintenance); replicas never
	// promote on their own while it is set.
	Paused bool
	// Handoff: the previous primary stepped down and named this primary
	// itself (a planned switchover), so it may activate at once.
	Handoff bool
	// Rev is the store revision of this value (0: there is none yet).
	Rev uint64
}

// Result is the outcome of an action, as the loop reports it.
type Result int

const (
	ResultOK          Result = iota
	ResultUnhealthy          // the local PostgreSQL check failed
	ResultUnreachable        // the store did not answer in time
	ResultConflict           // a compare-and-set lost
	ResultUnknown            // a write whose outcome is unknown
	ResultFailed             // an action failed (fence, promote, follow)
)

// ActionKind names what a node must do.
type ActionKind string

const (
	// ActBeat: check PostgreSQL, read cluster-state from the stream leader
	// (primary only), and compare-and-set the node's own heartbeat; each step
	// bounded by HeartbeatTimeout. When the store does not answer and the
	// action is Failsafe, ask every node in Peers for a promise (bounded by
	// HeartbeatTimeout as well). Result: EvBeatResult, with Started and,
	// when every peer promised, Covered.
	ActBeat ActionKind = "beat"
	// ActFence: make PostgreSQL refuse writes, escalating with each retry
	// (fast shutdown, immediate shutdown, kill the postmaster).
	ActFence ActionKind = "fence"
	// ActUnfence: claim the role again by compare-and-set of cluster-state
	// (BaseRev, same content): a replica's promotion from an older revision
	// then fails, and replicas restart their timers on seeing the write;
	// only then let PostgreSQL accept writes. Result: ResultOK; ResultConflict
	// with CS (replaced meanwhile); ResultFailed when PostgreSQL did not
	// start (the node then stands aside for two failover timeouts); another
	// failure otherwise.
	ActUnfence ActionKind = "unfence"
	// ActPromote: read the primary's heartbeat from the stream leader and
	// give up (ResultConflict, Rev: the revision read) if it moved past
	// BeatRev with a status that holds the primary role (the primary is
	// alive: this node was frozen, or handled its tick before queued
	// heartbeats); else compare-and-set cluster-state to name this node,
	// epoch+1.
	ActPromote ActionKind = "promote"
	// ActActivate: read cluster-state from the stream leader and, only if it
	// still names this node at Epoch, promote the local PostgreSQL (a node
	// frozen between winning and activating may have been overtaken).
	// Result: ResultOK, ResultConflict (overtaken), or a failure.
	ActActivate ActionKind = "activate"
	// ActFollow: (re)join Target as a streaming replica (pg_rewind first
	// when the node was primary).
	ActFollow ActionKind = "follow"
	// ActReadState: read cluster-state from the stream leader.
	ActReadState ActionKind = "read-state"
	// ActSetSync: name Target the synchronous standby: configure PostgreSQL
	// to wait for it first, wait until it has flushed everything written
	// before, then compare-and-set cluster-state (BaseRev), which makes it
	// promotable. A promotion clears the name: until the new primary names a
	// standby, it acknowledges commits alone and no replica is promotable,
	// so a replica that missed acknowledged writes can never be promoted.
	// Target "": stop naming one (compare-and-set first, so the old one is
	// no longer promotable), then acknowledge alone.
	ActSetSync ActionKind = "set-sync"
	// ActHandOff: a planned switchover to Target: stop PostgreSQL cleanly
	// (its last WAL reaches the standbys), then compare-and-set
	// cluster-state (BaseRev) to name Target at Epoch with Handoff set.
	// Result: ResultOK; ResultFailed when PostgreSQL could not be stopped;
	// otherwise the stop happened and CS is what the store holds now.
	ActHandOff ActionKind = "handoff"
)

// Action is one thing to do. A new action replaces (cancels) the one in
// flight: actions are serialized and the latest decision wins.
type Action struct {
	Kind       ActionKind
	Epoch      uint64 // ActPromote: the epoch to claim; ActActivate: the epoch won
	BaseRev    uint64 // ActPromote: the cluster-state revision it replaces
	BeatRev    uint64 // ActPromote: the primary's heartbeat revision last seen
	Target     string // ActFollow: the primary to follow
	Escalation int    // ActFence: 0, 1, 2: ever harder
	// Failsafe (ActBeat of a serving AbsoluteConsistency primary): when the
	// store fails, ask Peers (every node that could be promoted in this
	// node's place; possibly none) for a promise not to promote.
	Failsafe bool
	Peers    []string
}

// EventKind says what happened.
type EventKind int

const (
	EvStart         EventKind = iota // CS: cluster-state read first thing (Result: could it be read)
	EvTick                           // the heartbeat timer fired
	EvBeatResult                     // Result of ActBeat; CS: the leader read (primary)
	EvClusterState                   // the watch delivered a cluster-state value
	EvPrimaryBeat                    // the watch saw member Node's heartbeat at Rev
	EvPromoteResult                  // Result of ActPromote; CS: the value now stored
	EvActionDone                     // Result of Action (fence, unfence, activate, follow, read-state, handoff)
	EvSwitchover                     // an operator asked for a switchover to Target at CS.Epoch
)

// Event is one observation. Now is the node's monotonic clock: the machine
// never looks at wall-clock time, so clock steps cannot move its decisions.
type Event struct {
	Kind   EventKind
	Now    time.Duration
	CS     ClusterState
	Result Result
	Rev    uint64
	Action ActionKind
	// Writable (EvStart): PostgreSQL accepts writes right now; (ActUnfence
	// not OK): PostgreSQL was started although the role was lost.
	Writable bool
	// Status (EvPrimaryBeat): what the heartbeat says its sender is;
	// Node: who sent it.
	Status Status
	Node   string
	// Standbys (EvBeatResult of a primary): the replicas streaming from it;
	// PGSync: the synchronous standby PostgreSQL is configured to wait for.
	Standbys []string
	PGSync   string
	// Lagging (EvBeatResult of a replica): it is further behind the
	// primary's last published position than max_lag_on_failover.
	Lagging bool
	// Target (EvSwitchover): the node to hand the primary role to.
	Target string
	// Started (EvBeatResult, EvActionDone): when the action began, on the
	// node's clock.
	Started time.Duration
	// Held and Covered (EvBeatResult of a failsafe beat whose store steps
	// failed): every peer asked promised not to promote before Covered on
	// this node's clock (the time the promises were asked plus the lease).
	Held    bool
	Covered time.Duration
	// NotStreaming (EvBeatResult of a replica): its PostgreSQL receives no
	// WAL from the primary right now.
	NotStreaming bool
	// Confirmed (EvActionDone of ActSetSync): when its compare-and-set of
	// cluster-state, which confirmed the role, was sent.
	Confirmed time.Duration
}

// HoldsPrimary: a heartbeat with this status holds a failover off. A
// serving primary does, and so does one whose fence is not proven yet (its
// PostgreSQL may still accept writes). A fenced primary does not: it is
// proven not to serve, so replacing it is safe, and a primary whose
// PostgreSQL cannot come back must be replaced. Nor does a node that
// believes itself a replica.
func HoldsPrimary(s Status) bool {
	return s == StatusPrimary || s == StatusFencing
}

// Node is one member's decision state.
type Node struct {
	Name     string
	T        Timings
	Strategy Strategy

	Status    Status
	CS        ClusterState
	Failures  int // consecutive failed beats
	Successes int // consecutive good beats (counted while fenced or failed)
	BeatRev   uint64
	BeatSeen  time.Duration // when the primary's heartbeat last advanced (replica)
	Pending   ActionKind    // the action in flight
	Escalated int           // fence escalation level reached
	// Attempted is the epoch this node last tried to claim by promotion.
	Attempted uint64
	// Lagging: the last beat found this replica too far behind to promote.
	Lagging bool
	// SyncMissing counts beats of a primary that found its synchronous
	// standby not streaming.
	SyncMissing int
	// Failing is the action that failed last and has not succeeded since.
	Failing ActionKind
	// UnfenceAfter: a fenced node whose PostgreSQL failed to start does not
	// claim the role again before this time.
	UnfenceAfter time.Duration

	// ConfirmedAt (serving primary): the start of the last beat the store
	// confirmed (or of the action that made this node primary).
	ConfirmedAt time.Duration
	// Covered and CoveredUntil (serving primary, AbsoluteConsistency):
	// every node that could be promoted in its place promised not to
	// before CoveredUntil, so it may serve without the store until then
	// (the failsafe).
	Covered      bool
	CoveredUntil time.Duration
	// SyncUnsure: a change of the synchronous standby may have landed
	// without this node knowing (its outcome was unknown): until a beat
	// reads cluster-state again, the failsafe cannot know whom to ask.
	SyncUnsure bool
	// PromisedUntil (replica): this node promised a primary not to
	// promote before this time; a restarted node assumes it may have.
	PromisedUntil time.Duration
	// BlindAt (replica): the last time its beat could not reach the store.
	// The primary's heartbeat is judged stale only over time the replica
	// could see the store, so an outage everyone saw causes no failover.
	BlindAt time.Duration
	// NotStreaming counts the beats of a replica whose PostgreSQL was not
	// streaming from the primary while the primary was alive.
	NotStreaming int
}

// NewNode returns a node that has not started.
func NewNode(name string, t Timings, s Strategy) Node {
	return Node{Name: name, T: t, Strategy: s, Status: StatusStarting}
}

// MayServe reports whether, by the machine's own account, PostgreSQL may be
// accepting writes (the loop keeps PostgreSQL in line with it).
func (n Node) MayServe() bool {
	return n.Status == StatusPrimary || n.Status == StatusFencing || n.Status == StatusActivating
}

// ServeUntil is the time (node clock) until which this node's PostgreSQL
// may serve as far as its agent, alive at now, can vouch: a guard that stops
// PostgreSQL when the agent has not renewed this in time covers an agent
// that died or froze. ok is false when nothing may serve.
//   - SplitBrainAllowed: the agent's liveness alone (a primary serves cut
//     off anyway).
//   - AbsoluteConsistency: the last confirmation by the store plus the
//     unconfirmed-serve bound, or the peers' promises; and while no node
//     could be promoted in its place (no synchronous standby named), as
//     long as the agent lives, less one step: a compare-and-set naming one
//     may land up to a step before the agent hears of it. This also covers
//     an activation (pg_ctl promote) that outlasts the bound.
func (n Node) ServeUntil(now time.Duration) (until time.Duration, ok bool) {
	if !n.MayServe() {
		return 0, false
	}
	bound := n.T.MaxUnconfirmedServe()
	if n.Strategy == SplitBrainAllowed {
		return now + bound, true
	}
	until = n.ConfirmedAt + bound
	if n.Covered {
		until = max(until, n.CoveredUntil)
	}
	if n.Status != StatusFencing && n.CS.Sync == "" && !n.SyncUnsure {
		// Serving or activating (a promotion or a hand-over names no
		// synchronous standby): nobody could be promoted in its place.
		until = max(until, now+bound-n.T.HeartbeatTimeout)
	}
	return until, true
}

// Promise answers primary from's request (at its epoch) for a promise not
// to promote before now + lease + safety margin on this node's clock. Only
// a replica of that very primary and epoch that is not itself trying to
// become primary promises; the promise holds until it expires, whatever the
// store shows meanwhile.
func (n Node) Promise(from string, epoch uint64, now time.Duration) (Node, bool) {
	if n.Status != StatusReplica && n.Status != StatusFailed {
		return n, false
	}
	if n.CS.Primary != from || n.CS.Epoch != epoch || from == n.Name {
		return n, false
	}
	n.PromisedUntil = max(n.PromisedUntil, now+n.T.PromiseLease()+n.T.SafetyMargin)
	return n, true
}

// failsafePeers are the nodes that could be promoted in this serving
// primary's place: in AbsoluteConsistency only the synchronous standby
// cluster-state names (none while it names none). ok is false when the
// node cannot know them (a change of the name has an unknown outcome).
func (n Node) failsafePeers() (peers []string, ok bool) {
	if n.Strategy != AbsoluteConsistency || n.Status != StatusPrimary || n.SyncUnsure {
		return nil, false
	}
	if n.CS.Sync == "" || n.CS.Sync == n.Name {
		return nil, true
	}
	return []string{n.CS.Sync}, true
}

func (n Node) beat() (Node, []Action) {
	peers, ok := n.failsafePeers()
	return n.do(Action{Kind: ActBeat, Failsafe: ok, Peers: peers})
}

func (n Node) do(a Action) (Node, []Action) {
	n.Pending = a.Kind
	return n, []Action{a}
}

// Step is the whole decision function: given the node and one event, the
// next node and what to do.
func Step(n Node, ev Event) (Node, []Action) {
	switch ev.Kind {
	case EvStart:
		return n.start(ev)
	case EvTick:
		return n.tick(ev)
	case EvBeatResult:
		if n.Pending != ActBeat {
			return n, nil // a cancelled beat
		}
		n.Pending = ""
		return n.beatResult(ev)
	case EvClusterState:
		return n.clusterState(ev.CS, ev.Now)
	case EvPrimaryBeat:
		// Only a heartbeat from a node holding the primary role (serving,
		// fencing, or fenced and about to unfence) proves the primary alive;
		// a node that believes itself a replica must not hold a failover off.
		if ev.Node != n.CS.Primary || ev.Node == n.Name {
			return n, nil
		}
		if ev.Rev != n.BeatRev && HoldsPrimary(ev.Status) {
			n.BeatRev, n.BeatSeen = ev.Rev, ev.Now
		}
		return n, nil
	case EvPromoteResult:
		if n.Pending != ActPromote {
			return n, nil
		}
		n.Pending = ""
		return n.promoteResult(ev)
	case EvActionDone:
		if n.Pending != ev.Action {
			return n, nil
		}
		n.Pending = ""
		return n.actionDone(ev)
	case EvSwitchover:
		return n.switchover(ev)
	}
	return n, nil
}

// switchover: only a serving primary hands over, only in its own epoch,
// only to another member, and in AbsoluteConsistency only to its
// synchronous standby (which has every acknowledged write). A beat in
// flight is abandoned; any other action in flight refuses the request.
func (n Node) switchover(ev Event) (Node, []Action) {
	if n.Status != StatusPrimary || ev.CS.Epoch != n.CS.Epoch || ev.Target == "" || ev.Target == n.Name {
		return n, nil
	}
	if n.Pending != "" && n.Pending != ActBeat {
		return n, nil
	}
	if n.Strategy == AbsoluteConsistency && ev.Target != n.CS.Sync {
		return n, nil
	}
	n.Status = StatusFencing
	return n.do(Action{Kind: ActHandOff, Target: ev.Target, Epoch: n.CS.Epoch + 1, BaseRev: n.CS.Rev})
}

// start reconciles with cluster-state first: a restarted agent whose node
// still owns the epoch and whose PostgreSQL still serves resumes without a
// failover; one whose PostgreSQL does not serve (the whole node restarted)
// starts fenced and unfences after SuccessThreshold good beats; a node that
// serves but is no longer named fences at once.
func (n Node) start(ev Event) (Node, []Action) {
	n.BeatSeen, n.BlindAt, n.ConfirmedAt = ev.Now, ev.Now, ev.Now
	// The agent that ran before may have promised a primary not to promote
	// (and answers given over the network may still be on their way).
	n.PromisedUntil = ev.Now + n.T.PromiseLease() + n.T.SafetyMargin
	if ev.Result != ResultOK && n.CS.Rev > 0 {
		// The watch delivered cluster-state before the first read failed:
		// that value is as good as a read.
		ev.Result, ev.CS = ResultOK, n.CS
	}
	if ev.Result != ResultOK {
		// Cluster-state could not be read. A serving node cannot prove it
		// still owns the cluster: in AbsoluteConsistency it fences (and
		// unfences after SuccessThreshold good beats if it does own it).
		switch {
		case ev.Writable && n.Strategy == AbsoluteConsistency:
			n.Status = StatusPrimary
			return n.fence()
		case ev.Writable:
			n.Status = StatusPrimary
		default:
			n.Status = StatusReplica
		}
		return n, nil
	}
	n.CS = ev.CS
	switch {
	case ev.CS.Primary == n.Name && ev.Writable:
		n.Status = StatusPrimary
		n.ConfirmedAt = ev.Now // cluster-state was just read
		return n.beat()
	case ev.CS.Primary == n.Name:
		n.Status = StatusFenced
		return n.do(Action{Kind: ActBeat})
	case ev.Writable:
		n.Status = StatusPrimary
		return n.fence()
	}
	n.Status = StatusReplica
	if ev.CS.Primary == "" {
		return n, nil
	}
	return n.do(Action{Kind: ActFollow, Target: ev.CS.Primary})
}

func (n Node) tick(ev Event) (Node, []Action) {
	if n.Status == StatusPrimary && n.Strategy == AbsoluteConsistency && n.Failures >= n.T.FailureThreshold &&
		(n.Pending == "" || n.Pending == ActBeat) && (!n.Covered || ev.Now+n.T.HeartbeatInterval >= n.CoveredUntil) {
		// Served on the failsafe, which lapses before the next tick: fence
		// now, even with a beat in flight (it may bring a promise too late).
		return n.fence()
	}
	if n.Pending != "" {
		return n, nil
	}
	if n.Status == StatusReplica && n.promotable() && ev.Now >= n.PromisedUntil &&
		ev.Now-max(n.BeatSeen, n.BlindAt) >= n.T.FailoverTimeout {
		n.Status = StatusPromoting
		n.Attempted = n.CS.Epoch + 1
		return n.do(Action{Kind: ActPromote, Epoch: n.Attempted, BaseRev: n.CS.Rev, BeatRev: n.BeatRev})
	}
	if n.Status == StatusReplica && n.Failing == ActFollow && n.CS.Primary != "" && n.CS.Primary != n.Name {
		// A follow failed (the primary was not ready): try again, one tick
		// at a time, so that a replica whose primary died still promotes.
		return n.do(Action{Kind: ActFollow, Target: n.CS.Primary})
	}
	switch n.Status {
	case StatusPrimary, StatusFenced, StatusReplica, StatusFailed:
		return n.beat()
	}
	return n, nil
}

// promotable: a healthy replica that follows the current primary and, in
// AbsoluteConsistency, is its synchronous standby (so it has every
// acknowledged write).
func (n Node) promotable() bool {
	if n.CS.Primary == "" || n.CS.Primary == n.Name {
		return false
	}
	if n.CS.Paused {
		return false
	}
	if n.Strategy == AbsoluteConsistency {
		// The synchronous standby holds every acknowledged commit: the
		// lag bound matters only where replication is asynchronous.
		return n.CS.Sync == n.Name
	}
	return !n.Lagging
}

func (n Node) beatResult(ev Event) (Node, []Action) {
	switch n.Status {
	case StatusPrimary, StatusFencing, StatusFenced:
		return n.primaryBeat(ev)
	case StatusReplica, StatusFailed:
		return n.replicaBeat(ev)
	}
	return n, nil
}

func (n Node) primaryBeat(ev Event) (Node, []Action) {
	if ev.Result == ResultConflict || (ev.Result == ResultOK && ev.CS.Primary != n.Name) {
		// Someone else owns the cluster: a zombie fences at once.
		if ev.Result == ResultOK {
			n.CS = ev.CS
		}
		return n.fence()
	}
	if ev.Result == ResultOK {
		n.CS = ev.CS
		n.Failures = 0
		n.SyncUnsure, n.Covered = false, false
		if n.Status == StatusPrimary {
			n.ConfirmedAt = max(n.ConfirmedAt, ev.Started)
		}
		if n.Status == StatusFenced {
			n.Successes++
			if n.Successes >= n.T.SuccessThreshold && (n.UnfenceAfter == 0 || ev.Now >= n.UnfenceAfter) {
				n.Successes = 0
				return n.do(Action{Kind: ActUnfence, BaseRev: n.CS.Rev})
			}
		}
		if n.Status == StatusPrimary && n.Strategy == AbsoluteConsistency {
			if slices.Contains(ev.Standbys, n.CS.Sync) {
				n.SyncMissing = 0
			}
			switch {
			case n.CS.Sync == "" && len(ev.Standbys) > 0:
				return n.do(Action{Kind: ActSetSync, Target: ev.Standbys[0], BaseRev: n.CS.Rev})
			case n.CS.Sync == "" && ev.PGSync != "":
				// A standby was being named but is gone: acknowledge alone
				// again (nobody is promotable while none is named).
				return n.do(Action{Kind: ActSetSync, Target: "", BaseRev: n.CS.Rev})
			case n.CS.Sync != "" && !slices.Contains(ev.Standbys, n.CS.Sync):
				// The synchronous standby stopped streaming: commits wait.
				// After FailureThreshold beats, stop naming it (by CAS first,
				// so it is not promotable) and acknowledge alone until
				// another standby is named.
				n.SyncMissing++
				if n.SyncMissing >= n.T.FailureThreshold {
					n.SyncMissing = 0
					return n.do(Action{Kind: ActSetSync, Target: "", BaseRev: n.CS.Rev})
				}
				return n, nil
			case n.CS.Sync != "" && ev.PGSync != n.CS.Sync:
				// Recorded but not configured (PostgreSQL restarted with
				// other settings): configure PostgreSQL to match.
				return n.do(Action{Kind: ActSetSync, Target: n.CS.Sync, BaseRev: n.CS.Rev})
			}
		}
		return n, nil
	}
	// A failed beat. In SplitBrainAllowed a primary cut off from the store
	// keeps serving; only its own PostgreSQL failing counts.
	if n.Strategy == SplitBrainAllowed && ev.Result != ResultUnhealthy {
		return n, nil
	}
	n.Successes = 0
	n.Failures++
	if n.Status == StatusPrimary {
		if ev.Result != ResultUnhealthy && ev.Held && (!n.Covered || ev.Covered > n.CoveredUntil) {
			n.Covered, n.CoveredUntil = true, ev.Covered
		}
		if n.Covered && ev.Now+n.T.HeartbeatInterval < n.CoveredUntil && ev.Result != ResultUnhealthy {
			// The failsafe holds: serve on, beating at the usual pace
			// (each beat renews the promises while the store is away).
			return n, nil
		}
		if n.Failures >= n.T.FailureThreshold {
			return n.fence()
		}
		// Retry at once: the unconfirmed time is bounded by the thresholds.
		return n.beat()
	}
	return n, nil
}

func (n Node) fence() (Node, []Action) {
	if n.Status == StatusFenced {
		return n.afterFenced()
	}
	n.Status = StatusFencing
	n.Successes = 0
	n.Covered = false // a failsafe never outlives the role
	return n.do(Action{Kind: ActFence, Escalation: n.Escalated})
}

// afterFenced: a fenced node that is no longer named primary rejoins the new
// primary as a replica.
func (n Node) afterFenced() (Node, []Action) {
	if n.CS.Primary != "" && n.CS.Primary != n.Name {
		return n.do(Action{Kind: ActFollow, Target: n.CS.Primary})
	}
	return n, nil
}

func (n Node) replicaBeat(ev Event) (Node, []Action) {
	if ev.Result == ResultUnreachable || ev.Result == ResultUnknown {
		n.BlindAt = ev.Now
	}
	if ev.Result == ResultOK {
		n.Failures = 0
		n.Lagging = ev.Lagging
		// Not streaming while the primary beats (its heartbeat advanced
		// within the last failover timeout): the replication link is
		// broken (a rejoin that did not take): follow the primary again.
		if ev.NotStreaming && n.Status == StatusReplica && ev.Now-n.BeatSeen < n.T.FailoverTimeout {
			n.NotStreaming++
		} else {
			n.NotStreaming = 0
		}
		if n.NotStreaming >= 4*n.T.FailureThreshold && n.CS.Primary != "" && n.CS.Primary != n.Name {
			n.NotStreaming = 0
			return n.do(Action{Kind: ActFollow, Target: n.CS.Primary})
		}
		if n.Status == StatusFailed {
			n.Successes++
			if n.Successes >= n.T.SuccessThreshold {
				n.Successes = 0
				n.Status = StatusReplica
				n.BeatSeen = ev.Now // judge the primary afresh
			}
		}
		return n, nil
	}
	if ev.Result == ResultConflict {
		return n, nil // our own heartbeat raced a restart of ours; next beat re-reads
	}
	n.Successes = 0
	n.Failures++
	if n.Failures >= n.T.FailureThreshold {
		n.Status = StatusFailed
	}
	return n, nil
}

func (n Node) clusterState(cs ClusterState, now time.Duration) (Node, []Action) {
	if cs.Rev <= n.CS.Rev {
		return n, nil // old news (watches may redeliver)
	}
	prev := n.CS
	n.CS = cs
	switch n.Status {
	case StatusPrimary, StatusFencing:
		if cs.Primary != n.Name {
			return n.fence()
		}
	case StatusFenced:
		if cs.Primary != n.Name {
			return n.afterFenced()
		}
	case StatusPromoting:
		if cs.Primary == n.Name {
			return n.activate(now, cs.Epoch)
		}
		n.Status = StatusReplica
		n.BeatSeen = now
		return n.do(Action{Kind: ActFollow, Target: cs.Primary})
	case StatusReplica, StatusFailed:
		// Any write of cluster-state by the primary (an unfence, a new
		// synchronous standby) proves it alive then: judge it afresh.
		n.BeatSeen = now
		if cs.Primary == n.Name && cs.Handoff && cs.Epoch > prev.Epoch {
			// The primary stepped down cleanly and named us.
			return n.activate(now, cs.Epoch)
		}
		if cs.Primary == n.Name && cs.Epoch == n.Attempted {
			// Our own promotion, whose outcome looked lost (it landed after
			// we read), has in fact won. Take the role rather than leave the
			// cluster without a primary.
			return n.activate(now, cs.Epoch)
		}
		if cs.Primary == n.Name {
			// Named primary while not serving (this node restarted without
			// reaching the store): take the role the safe way, fenced,
			// unfencing only after SuccessThreshold beats that confirm it.
			n.Status = StatusFenced
			n.Successes = 0
			return n.do(Action{Kind: ActBeat})
		}
		if cs.Primary != prev.Primary && cs.Primary != "" {
			n.BeatSeen = now // give the new primary a full timeout
			return n.do(Action{Kind: ActFollow, Target: cs.Primary})
		}
	}
	return n, nil
}

// activate: this node won epoch (just confirmed by the store): promote the
// local PostgreSQL.
func (n Node) activate(now time.Duration, epoch uint64) (Node, []Action) {
	n.Status = StatusActivating
	n.ConfirmedAt, n.Covered, n.SyncUnsure = now, false, false
	return n.do(Action{Kind: ActActivate, Epoch: epoch})
}

func (n Node) promoteResult(ev Event) (Node, []Action) {
	switch ev.Result {
	case ResultOK:
		n.CS = ev.CS
		return n.activate(ev.Now, ev.CS.Epoch)
	case ResultUnknown, ResultUnreachable:
		// The write may have landed: read before deciding.
		return n.do(Action{Kind: ActReadState})
	default:
		n.Status = StatusReplica
		n.BeatSeen = ev.Now
		if ev.Rev != 0 {
			// The primary's heartbeat had advanced: it is alive; judge it
			// afresh from the revision just read.
			n.BeatRev = ev.Rev
		}
		if ev.CS.Rev > n.CS.Rev {
			n.CS = ev.CS
		}
		if n.CS.Primary != "" && n.CS.Primary != n.Name {
			return n.do(Action{Kind: ActFollow, Target: n.CS.Primary})
		}
		return n, nil
	}
}

func (n Node) actionDone(ev Event) (Node, []Action) {
	// A failing action is part of the node's state (its heartbeat and
	// endpoints show it) until an action succeeds.
	if ev.Result == ResultOK {
		n.Failing = ""
	} else if ev.Result != ResultConflict {
		n.Failing = ev.Action
	}
	switch ev.Action {
	case ActFence:
		if ev.Result != ResultOK {
			// Not proven fenced: escalate and stay Fencing.
			if n.Escalated < 2 {
				n.Escalated++
			}
			return n.do(Action{Kind: ActFence, Escalation: n.Escalated})
		}
		n.Status = StatusFenced
		n.Escalated = 0
		n.Failures = 0
		return n.afterFenced()
	case ActUnfence:
		if ev.CS.Rev > n.CS.Rev {
			n.CS = ev.CS
		}
		if ev.Result == ResultOK && n.CS.Primary == n.Name {
			n.Status = StatusPrimary
			n.ConfirmedAt = max(n.ConfirmedAt, ev.Started)
			return n, nil
		}
		if ev.Writable {
			// PostgreSQL started but the role could not be confirmed:
			// it may serve, so fence it again at once.
			n.Status = StatusPrimary
			return n.fence()
		}
		if ev.Result == ResultFailed {
			// PostgreSQL did not come back: stand aside long enough for
			// a replica to take over instead of claiming the role again.
			n.UnfenceAfter = ev.Now + 2*n.T.FailoverTimeout
		}
		return n.afterFenced() // replaced meanwhile: follow the new primary
	case ActActivate:
		if ev.Result == ResultConflict {
			// Overtaken while we were not looking: follow whoever holds it.
			if ev.CS.Rev > n.CS.Rev {
				n.CS = ev.CS
			}
			n.Status = StatusReplica
			n.BeatSeen = ev.Now
			return n.do(Action{Kind: ActFollow, Target: n.CS.Primary})
		}
		if ev.Result != ResultOK {
			return n.do(Action{Kind: ActActivate, Epoch: n.CS.Epoch})
		}
		n.Status = StatusPrimary
		n.Failures, n.Successes = 0, 0
		n.ConfirmedAt = max(n.ConfirmedAt, ev.Started)
		// Beat at once: the heartbeat announces the new primary (and its
		// fork point) to the others.
		return n.beat()
	case ActFollow:
		if ev.Result != ResultOK {
			if n.Status == StatusReplica {
				// Retried from the next tick: a replica must stay free to
				// promote when the primary it cannot follow is dead.
				return n, nil
			}
			return n.do(Action{Kind: ActFollow, Target: n.CS.Primary})
		}
		if n.Status == StatusFenced || n.Status == StatusStarting {
			n.Status = StatusReplica
			n.BeatSeen = ev.Now
		}
		return n, nil
	case ActHandOff:
		if ev.Result == ResultFailed {
			// PostgreSQL did not stop: fence the hard way. Still named
			// primary, the node unfences once its beats confirm that.
			return n.fence()
		}
		n.Status = StatusFenced
		if ev.CS.Rev > n.CS.Rev {
			n.CS = ev.CS
		}
		return n.afterFenced()
	case ActSetSync:
		if ev.CS.Rev > n.CS.Rev {
			n.CS = ev.CS
		}
		if ev.Result != ResultOK && ev.Result != ResultConflict {
			// The name may have changed in the store without us knowing.
			n.SyncUnsure = true
		}
		if ev.Result == ResultOK && n.Status == StatusPrimary {
			// Its compare-and-set confirmed the role when it was sent.
			n.ConfirmedAt = max(n.ConfirmedAt, ev.Confirmed)
		}
		if ev.Result == ResultConflict && n.CS.Primary != n.Name {
			return n.fence()
		}
		return n, nil
	case ActReadState:
		if ev.Result != ResultOK {
			return n.do(Action{Kind: ActReadState})
		}
		if ev.CS.Rev >= n.CS.Rev {
			n.CS = ev.CS
		}
		if n.Status == StatusPromoting {
			if n.CS.Primary == n.Name {
				return n.activate(ev.Now, n.CS.Epoch)
			}
			n.Status = StatusReplica
			n.BeatSeen = ev.Now
			return n.do(Action{Kind: ActFollow, Target: n.CS.Primary})
		}
	}
	return n, nil
}
