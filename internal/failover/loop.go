package failover

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/harmony-fleet/harmony/internal/failover/guard"
	"github.com/harmony-fleet/harmony/internal/failover/pg"
	"github.com/harmony-fleet/harmony/internal/store"
)

// Keys of the failover bucket.
const (
	KeyClusterState = "cluster-state"
	// KeySwitchover holds an operator's request (SwitchoverRequest).
	KeySwitchover = "switchover"
	// HeartbeatPrefix + node is a member's heartbeat (Heartbeat).
	HeartbeatPrefix = "heartbeat."
	// EventPrefix + kind + "." + node records a notable event (Event).
	EventPrefix = "event."
)

// BucketName is the bucket of one cluster: two clusters never collide.
func BucketName(cluster string) string { return "failover-" + cluster }

// MaxBucketBytes bounds a cluster's bucket on the server's disk: its
// members write it through the relay, and a member gone rogue must not
// fill the disk every other device shares. A cluster of five nodes keeps
// well under 1 MiB (64 revisions of a few small keys each).
const MaxBucketBytes = 64 << 20

// EnsureBucket creates (or checks) a cluster's bucket: file storage, 64
// revisions of history (the flight recorder), no TTL, republished for
// members to follow (a member holds no consumer).
func EnsureBucket(ctx context.Context, st store.Store, cluster string, replicas int) (store.KV, error) {
	return st.Ensure(ctx, store.BucketConfig{Name: BucketName(cluster), History: 64, Replicas: replicas,
		MaxValueSize: 64 << 10, MaxBytes: MaxBucketBytes, Republish: store.RepublishPrefix(BucketName(cluster)),
		Description: "Harmony failover state of cluster " + cluster})
}

// StateRecord is the stored form of cluster-state. Since is informational
// (the writer's wall clock): no decision reads it.
type StateRecord struct {
	V       int       `json:"v"`
	Primary string    `json:"primary"`
	Sync    string    `json:"sync,omitempty"`
	Epoch   uint64    `json:"epoch"`
	Paused  bool      `json:"paused,omitempty"`
	Handoff bool      `json:"handoff,omitempty"`
	Since   time.Time `json:"since"`
	Reason  string    `json:"reason"`
}

// DecodeState reads a stored cluster-state.
func DecodeState(e store.Entry) (ClusterState, StateRecord, error) {
	var v StateRecord
	if err := json.Unmarshal(e.Value, &v); err != nil {
		return ClusterState{}, v, fmt.Errorf("cluster-state: %w", err)
	}
	if v.Primary == "" || v.Epoch == 0 {
		return ClusterState{}, v, fmt.Errorf("cluster-state: primary and epoch are required")
	}
	return ClusterState{Primary: v.Primary, Sync: v.Sync, Epoch: v.Epoch, Paused: v.Paused, Handoff: v.Handoff, Rev: e.Revision}, v, nil
}

// EncodeState is the stored form of cs.
func EncodeState(cs ClusterState, reason string) []byte {
	b, _ := json.Marshal(StateRecord{V: 1, Primary: cs.Primary, Sync: cs.Sync, Epoch: cs.Epoch, Paused: cs.Paused, Handoff: cs.Handoff,
		Since: time.Now().UTC(), Reason: reason})
	return b
}

// SwitchoverRequest asks the primary of Epoch to hand over to To.
type SwitchoverRequest struct {
	To    string `json:"to"`
	Epoch uint64 `json:"epoch"`
}

// EventRecord is a notable event (today: transactions that diverged on a
// primary cut off in SplitBrainAllowed, discarded when it rejoined).
type EventRecord struct {
	Kind         string    `json:"kind"`
	Node         string    `json:"node"`
	Epoch        uint64    `json:"epoch"`
	Transactions uint64    `json:"transactions"`
	At           time.Time `json:"at"`
}

// Bootstrap names the first primary and its synchronous standby when the
// cluster has no state yet; an existing state is left alone.
func Bootstrap(ctx context.Context, kv store.KV, primary, sync string) error {
	_, err := kv.Create(ctx, KeyClusterState, EncodeState(ClusterState{Primary: primary, Sync: sync, Epoch: 1}, "bootstrap"))
	if errors.Is(err, store.ErrConflict) {
		return nil
	}
	return err
}

// Heartbeat is a node's heartbeat: its status says what it is, so a fenced
// node never reports itself healthy. It also tells the others how to reach
// its PostgreSQL and where its WAL stands.
type Heartbeat struct {
	V      int    `json:"v"`
	Status Status `json:"status"`
	// Failing: an action that keeps failing (fence, follow, activate...).
	Failing ActionKind `json:"failing,omitempty"`
	Epoch   uint64     `json:"epoch"`
	Seq     uint64     `json:"seq"`
	// Host, Port, User: how peers reach this node's PostgreSQL (a host
	// name, an address or a Unix socket directory).
	Host string `json:"host"`
	Port int    `json:"port"`
	User string `json:"user,omitempty"`
	// LSN: the primary's write position or the replica's received one.
	LSN      uint64 `json:"lsn"`
	Timeline uint32 `json:"tli,omitempty"`
	// Lag: how far (bytes) a replica is behind the primary's last
	// published position.
	Lag uint64 `json:"lag,omitempty"`
	// ForkXID: on a node promoted by failover, the next transaction id at
	// promotion (to count transactions a cut-off old primary diverged by).
	ForkXID uint64 `json:"fork_xid,omitempty"`
	// Streaming (replica): its PostgreSQL receives WAL from the primary.
	Streaming bool `json:"streaming,omitempty"`
	// Strategy the member runs with.
	Strategy Strategy `json:"strategy,omitempty"`
	// Strangers (primary): replication connections streaming from it that
	// are no member of the cluster (a replica connecting under another
	// application_name, a base backup): never named synchronous standby.
	Strangers []string `json:"strangers,omitempty"`
	// Peer and PeerKey: where this member answers other members' failsafe
	// requests (host:port) and the public key its TLS certificate carries.
	Peer    string `json:"peer,omitempty"`
	PeerKey string `json:"peer_key,omitempty"`
}

// DecodeHeartbeat reads a stored heartbeat.
func DecodeHeartbeat(b []byte) (Heartbeat, error) {
	var hb Heartbeat
	err := json.Unmarshal(b, &hb)
	return hb, err
}

// Postgres is what the loop does to the local PostgreSQL (pg.Instance in
// production; a fake in the loop's unit tests).
type Postgres interface {
	Role(ctx context.Context) (pg.Role, error)
	Observe(ctx context.Context) (pg.Observation, error)
	WALPosition(ctx context.Context) (pg.Position, error)
	Standbys(ctx context.Context) ([]pg.Standby, error)
	Fence(ctx context.Context, level int) error
	Running() (bool, error)
	Start(ctx context.Context) error
	Promote(ctx context.Context) error
	SetSyncStandby(ctx context.Context, name string) error
	Follow(ctx context.Context, primary *pg.Instance) (string, error)
}

// PromiseRequest is a primary's request for a failsafe promise.
type PromiseRequest struct {
	Cluster string
	From    string
	Epoch   uint64
}

// Promiser asks another member, at addr and holding key, for a promise not
// to promote (the failsafe's transport: authenticated and encrypted).
type Promiser interface {
	Ask(ctx context.Context, addr, key string, req PromiseRequest) (granted bool, lease time.Duration, err error)
}

// Guard stops the local PostgreSQL when the agent has not renewed the
// time until which it may serve (an agent that died or froze). Times are
// readings of the loop's clock (Now).
type Guard interface {
	Arm(until time.Duration) error
	Disarm() error
}

// LoopConfig configures one node's failover role.
type LoopConfig struct {
	Cluster  string
	Node     string
	Timings  Timings
	Strategy Strategy
	PG       Postgres
	// Port and User: how peers reach this node's PostgreSQL, with
	// AdvertiseHost (default: SocketDir, for members on one machine).
	Port          int
	User          string
	SocketDir     string
	AdvertiseHost string
	// Failsafe asks peers for promises (nil: no failsafe: a primary cut off
	// from the store fences). PeerAddr and PeerKey are where and as whom
	// this member answers (published in its heartbeat).
	Failsafe Promiser
	PeerAddr string
	PeerKey  string
	// Guard, when set, is armed while the local PostgreSQL may serve.
	Guard Guard
	// Open opens (or creates) the cluster's bucket. With it, NewLoop takes
	// no bucket: the loop opens it itself, retrying, so that it starts and
	// decides (fences a primary that cannot prove its role) while the store
	// does not answer. Bootstrap: the local PostgreSQL was a primary when
	// the agent started; once the bucket is open, it is named the first
	// primary if cluster-state does not exist yet.
	Open      func(ctx context.Context) (store.KV, error)
	Bootstrap bool
	// MaxLag (bytes): in SplitBrainAllowed, a replica further behind the
	// primary's last published position does not promote. 0: no bound.
	MaxLag uint64
	// Peers override where the other members' PostgreSQL is; by default
	// it is learnt from their heartbeats.
	Peers map[string]*pg.Instance
	// PassFile gives the passwords of connections to the other members
	// ("": none needed).
	PassFile string
}

// Loop carries out the decisions of one node's machine against the store
// and the local PostgreSQL. Actions run one at a time; a new decision
// cancels the action in flight.
type Loop struct {
	cfg LoopConfig
	kv  store.KV
	// opening is the bucket while the loop opens it itself (cfg.Open);
	// bounded is kv: every call held to its deadline.
	opening *openingKV
	bounded *boundedKV
	log     *slog.Logger
	// guardOrders carries what the guard must hold to the goroutine that
	// tells it (latest wins), so that its I/O never holds up a decision.
	guardOrders chan guardOrder

	events chan Event
	mu     sync.Mutex
	node   Node
	seq    uint64 // heartbeats written
	hbRev  uint64 // our heartbeat key's revision
	hbKnow bool

	members map[string]Heartbeat // the latest heartbeat of every member (under mu)
	pos     pg.Position          // our WAL position at the last beat (under mu)
	forkXID uint64               // next xid when we were promoted (under mu)
	stats   Stats                // under mu
	lastOK  bool                 // the last beat found PostgreSQL healthy (under mu)
}

// Stats are counters for metrics.
type Stats struct {
	Transitions uint64
	// LastFailover: from the last advance of the old primary's heartbeat
	// this node saw to this node serving writes.
	LastFailover time.Duration
	// Diverged counts transactions discarded when this node rejoined after
	// serving cut off (SplitBrainAllowed).
	Diverged uint64
	// FailsafeHeld: beats of this primary that found the store away and
	// every promotable peer's promise in hand; FailsafeLost: fences because
	// the store was away and the promises were not.
	FailsafeHeld, FailsafeLost uint64
	// PromisesGiven and PromisesRefused: requests of primaries answered.
	PromisesGiven, PromisesRefused uint64
	// GuardArmed: renewals sent to the guard; GuardErrors: ones that failed.
	GuardArmed, GuardErrors uint64
}

// NewLoop returns a loop over the cluster's bucket.
func NewLoop(cfg LoopConfig, kv store.KV, log *slog.Logger) (*Loop, error) {
	if err := cfg.Timings.Validate(); err != nil {
		return nil, err
	}
	if in, ok := cfg.PG.(*pg.Instance); ok {
		cfg.Port = cmp.Or(cfg.Port, in.Port)
		cfg.User = cmp.Or(cfg.User, in.Superuser)
		cfg.SocketDir = cmp.Or(cfg.SocketDir, in.SocketDir)
	}
	cfg.AdvertiseHost = cmp.Or(cfg.AdvertiseHost, cfg.SocketDir)
	var opening *openingKV
	if cfg.Open != nil {
		opening = &openingKV{bucket: BucketName(cfg.Cluster)}
		kv = opening
	}
	bkv := &boundedKV{kv: kv}
	return &Loop{cfg: cfg, kv: bkv, bounded: bkv, opening: opening, log: log, events: make(chan Event, 64), node: NewNode(cfg.Node, cfg.Timings, cfg.Strategy),
		members: map[string]Heartbeat{}, guardOrders: make(chan guardOrder, 1)}, nil
}

// Snapshot is what the loop's HTTP endpoints and metrics show.
type Snapshot struct {
	Node    Node
	Healthy bool
	Pos     pg.Position
	Stats   Stats
}

// Snapshot returns the loop's current state.
func (l *Loop) Snapshot() Snapshot {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Snapshot{Node: l.node, Healthy: l.lastOK, Pos: l.pos, Stats: l.stats}
}

// Node returns the machine's current state.
func (l *Loop) Node() Node {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.node
}

type running struct {
	cancel   context.CancelFunc
	id       uint64
	action   Action
	done     bool          // its result has been handled
	finished chan struct{} // closed when its goroutine has returned
}

func sameAction(a, b Action) bool {
	return a.Kind == b.Kind && a.Epoch == b.Epoch && a.BaseRev == b.BaseRev && a.BeatRev == b.BeatRev &&
		a.Target == b.Target && a.Escalation == b.Escalation && a.Failsafe == b.Failsafe && slices.Equal(a.Peers, b.Peers)
}

// Promise answers a primary's failsafe request (see Node.Promise): the
// lease granted, or false.
func (l *Loop) Promise(from string, epoch uint64) (bool, time.Duration) {
	l.mu.Lock()
	n, ok := l.node.Promise(from, epoch, l.now())
	l.node = n
	if ok {
		l.stats.PromisesGiven++
	} else {
		l.stats.PromisesRefused++
	}
	l.mu.Unlock()
	if !ok {
		l.log.Info("failsafe promise refused", "primary", from, "epoch", epoch, "status", n.Status, "known_primary", n.CS.Primary, "known_epoch", n.CS.Epoch)
	}
	return ok, l.cfg.Timings.PromiseLease()
}

// MemberByKey names the member whose heartbeat publishes peer key key.
func (l *Loop) MemberByKey(key string) (string, bool) {
	if key == "" {
		return "", false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for name, hb := range l.members {
		if hb.PeerKey == key && name != l.cfg.Node {
			return name, true
		}
	}
	return "", false
}

// Run reconciles with cluster-state first, then follows the bucket and
// heartbeats until ctx ends.
func (l *Loop) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer l.bounded.Wait() // calls abandoned at their deadline
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	if l.opening != nil {
		// A first bounded try; when the store does not answer, the
		// machine decides without it and the bucket is opened later.
		if err := l.openBucket(ctx); err != nil {
			l.log.Warn("store not answering at start; deciding without it", "err", err)
			wg.Add(1)
			go func() { defer wg.Done(); l.keepOpening(ctx) }()
		}
	}
	// Start-up: read cluster-state first.
	start := Event{Kind: EvStart}
	rctx, rcancel := context.WithTimeout(ctx, l.cfg.Timings.HeartbeatTimeout*2)
	e, err := l.kv.Get(rctx, KeyClusterState)
	rcancel()
	if err == nil {
		start.CS, _, err = DecodeState(e)
	}
	if err != nil {
		start.Result = ResultUnreachable
	}
	if role, rerr := l.cfg.PG.Role(ctx); rerr == nil && role == pg.RolePrimary {
		start.Writable = true
	}

	wg.Add(5)
	go func() { defer wg.Done(); l.feedGuard(ctx) }()
	go func() { defer wg.Done(); l.retainRewindWAL(ctx) }()
	go func() { defer wg.Done(); l.watch(ctx, KeyClusterState) }()
	go func() { defer wg.Done(); l.watch(ctx, HeartbeatPrefix+"*") }()
	go func() { defer wg.Done(); l.watch(ctx, KeySwitchover) }()

	tick := time.NewTicker(l.cfg.Timings.HeartbeatInterval)
	defer tick.Stop()
	var cur *running
	var nextID uint64
	results := make(chan struct {
		id uint64
		ev Event
	}, 8)
	var ordered guardOrder
	handle := func(ev Event) {
		l.mu.Lock()
		before := l.node
		n, acts := Step(l.node, ev)
		l.node = n
		storeAway := ev.Kind == EvTick || (ev.Kind == EvBeatResult && (ev.Result == ResultUnreachable || ev.Result == ResultUnknown))
		if before.Status == StatusPrimary && n.Status == StatusFencing && n.Strategy == AbsoluteConsistency && storeAway {
			l.stats.FailsafeLost++
		}
		if ev.Kind == EvBeatResult && ev.Held && n.Status == StatusPrimary {
			l.stats.FailsafeHeld++
		}
		if n.Status != before.Status {
			l.stats.Transitions++
			if n.Status == StatusPrimary && before.Status == StatusActivating && !n.CS.Handoff {
				l.stats.LastFailover = ev.Now - before.BeatSeen
			}
		}
		l.mu.Unlock()
		if n.Status != before.Status {
			l.log.Info("failover state", "from", before.Status, "to", n.Status, "epoch", n.CS.Epoch, "primary", n.CS.Primary)
		}
		if o, ok := l.guardOrder(n); ok && o != ordered {
			ordered = o
			l.orderGuard(o)
		}
		for _, a := range acts {
			if cur != nil && !cur.done && sameAction(cur.action, a) && a.Kind != ActBeat {
				// The same decision again (a follow of the same primary, a
				// fence at the same level): let the one in flight finish
				// rather than kill it half-way (pg_rewind, say).
				continue
			}
			if cur != nil {
				// One action at a time: the replaced one is cancelled and
				// waited for (its steps honour cancellation), so two never
				// touch PostgreSQL or the heartbeat at once.
				cur.cancel()
				<-cur.finished
			}
			nextID++
			actx, acancel := context.WithCancel(ctx)
			cur = &running{cancel: acancel, id: nextID, action: a, finished: make(chan struct{})}
			id, a, finished := nextID, a, cur.finished
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer close(finished)
				defer acancel()
				started := l.now()
				ev := l.execute(actx, a)
				ev.Started = started
				if failed(ev) {
					// The machine may retry a failed action at once: pace it.
					select {
					case <-actx.Done():
					case <-time.After(l.cfg.Timings.HeartbeatInterval / 2):
					}
				}
				select {
				case results <- struct {
					id uint64
					ev Event
				}{id, ev}:
				case <-actx.Done(): // replaced: nobody wants the result
				}
			}()
		}
	}
	start.Now = l.now()
	handle(start)
	for {
		select {
		case <-ctx.Done():
			if cur != nil {
				cur.cancel()
			}
			return nil
		case <-tick.C:
			handle(Event{Kind: EvTick, Now: l.now()})
		case ev := <-l.events:
			ev.Now = l.now()
			handle(ev)
		case r := <-results:
			if cur == nil || r.id != cur.id {
				continue // a cancelled action's late result
			}
			cur.done = true
			r.ev.Now = l.now()
			handle(r.ev)
		}
	}
}

// now is the loop's clock: CLOCK_BOOTTIME, monotonic and shared by every
// process of the machine (a guard reads the same clock), and it keeps
// counting while the machine is suspended.
func (l *Loop) now() time.Duration { return Now() }

// Now reads the loop's clock (the guard's: CLOCK_BOOTTIME).
func Now() time.Duration { return guard.Now() }

// guardStatus is what the guard held at its last answer (never a request:
// a metrics scrape must not wait for the guard, nor start one).
func (l *Loop) guardStatus() (guard.Status, bool) {
	g, ok := l.cfg.Guard.(interface{ Last() (guard.Status, bool) })
	if !ok {
		return guard.Status{}, false
	}
	return g.Last()
}

// guardOrder is what the guard must hold.
type guardOrder struct {
	serving bool
	until   time.Duration // while serving
}

// guardOrder: until when the local PostgreSQL may serve (with half the
// safety margin on top, so that the agent's own fence comes first), or that
// it does not serve at all; false while neither is known (starting,
// promoting's first steps keep what the guard holds).
func (l *Loop) guardOrder(n Node) (guardOrder, bool) {
	if l.cfg.Guard == nil {
		return guardOrder{}, false
	}
	if until, serving := n.ServeUntil(l.now()); serving {
		return guardOrder{serving: true, until: until + l.cfg.Timings.SafetyMargin/2}, true
	}
	switch n.Status {
	case StatusReplica, StatusFenced, StatusFailed, StatusPromoting:
		return guardOrder{}, true
	}
	return guardOrder{}, false
}

// orderGuard hands o to feedGuard without waiting, replacing an order it
// has not taken yet.
func (l *Loop) orderGuard(o guardOrder) {
	for {
		select {
		case l.guardOrders <- o:
			return
		default:
		}
		select {
		case <-l.guardOrders:
		default:
		}
	}
}

// feedGuard tells the guard the latest order until ctx ends. A failure is
// logged and counted, and the order sent again a heartbeat interval later
// unless a newer one came (the loop's own fencing never depends on the
// guard).
func (l *Loop) feedGuard(ctx context.Context) {
	var retry <-chan time.Time
	var o guardOrder
	for {
		select {
		case <-ctx.Done():
			return
		case o = <-l.guardOrders:
		case <-retry:
		}
		retry = nil
		var err error
		if o.serving {
			err = l.cfg.Guard.Arm(o.until)
		} else {
			err = l.cfg.Guard.Disarm()
		}
		l.mu.Lock()
		if err != nil {
			l.stats.GuardErrors++
		} else if o.serving {
			l.stats.GuardArmed++
		}
		l.mu.Unlock()
		if err != nil {
			l.log.Warn("guard not reached", "err", err)
			retry = time.After(l.cfg.Timings.HeartbeatInterval)
		}
	}
}

// openBucket opens the bucket, bounded, and names this node the first
// primary of a cluster that has no cluster-state yet when its PostgreSQL
// was (or is) a primary.
func (l *Loop) openBucket(ctx context.Context) error {
	octx, cancel := context.WithTimeout(ctx, max(2*l.cfg.Timings.HeartbeatTimeout, 2*time.Second))
	defer cancel()
	kv, err := l.cfg.Open(octx)
	if err != nil {
		return err
	}
	bootstrap := l.cfg.Bootstrap
	if role, err := l.cfg.PG.Role(octx); err == nil && role == pg.RolePrimary {
		bootstrap = true // (PostgreSQL may have been starting at the first look)
	}
	if bootstrap {
		if err := Bootstrap(octx, kv, l.cfg.Node, ""); err != nil {
			return fmt.Errorf("first cluster-state: %w", err)
		}
	}
	l.opening.set(kv)
	return nil
}

// every runs fn every period until it reports done or ctx ends; an error
// is logged with msg when it differs from the one logged last.
func (l *Loop) every(ctx context.Context, period time.Duration, msg string, fn func() (done bool, err error)) {
	tick := time.NewTicker(period)
	defer tick.Stop()
	var last string
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		done, err := fn()
		switch {
		case done:
			return
		case err != nil && err.Error() != last && ctx.Err() == nil:
			l.log.Warn(msg, "err", err)
			last = err.Error()
		case err == nil:
			last = ""
		}
	}
}

// keepOpening retries openBucket until it succeeds or ctx ends.
func (l *Loop) keepOpening(ctx context.Context) {
	l.every(ctx, l.cfg.Timings.HeartbeatInterval, "cannot open the failover bucket yet; retrying", func() (bool, error) {
		err := l.openBucket(ctx)
		if err == nil {
			l.log.Info("store answers: failover bucket open")
		}
		return err == nil, err
	})
}

// retainRewindWAL keeps, about once a second, the WAL a rejoin by
// pg_rewind needs (pg.Instance.RetainRewindWAL: a local slot trailing one
// checkpoint behind), on whatever node's PostgreSQL runs, off the beat's
// path. Failures only cost a later rejoin a base backup: logged once.
func (l *Loop) retainRewindWAL(ctx context.Context) {
	r, ok := l.cfg.PG.(interface{ RetainRewindWAL(context.Context) error })
	if !ok {
		return
	}
	l.every(ctx, 4*l.cfg.Timings.HeartbeatInterval, "cannot keep the WAL a rewind needs; a rejoin may need a base backup", func() (bool, error) {
		if s := l.Node().Status; s == StatusStarting || s == StatusFenced || s == StatusFencing {
			return false, nil
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		return false, r.RetainRewindWAL(rctx)
	})
}

// watch follows keys of the bucket, restarting the watch when it ends.
func (l *Loop) watch(ctx context.Context, filter string) {
	for ctx.Err() == nil {
		w, err := l.kv.Watch(ctx, filter, store.WatchOptions{})
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(l.cfg.Timings.HeartbeatInterval):
			}
			continue
		}
		for ev := range w.Events() {
			if ev.Entry.Op != store.OpPut {
				continue
			}
			var out Event
			switch {
			case ev.Entry.Key == KeyClusterState:
				if ev.Replayed {
					continue
				}
				cs, _, err := DecodeState(ev.Entry)
				if err != nil {
					l.log.Warn("unreadable cluster-state ignored", "err", err)
					continue
				}
				out = Event{Kind: EvClusterState, CS: cs}
			case ev.Entry.Key == KeySwitchover:
				if ev.Replayed {
					continue // only requests made while we run count
				}
				var req SwitchoverRequest
				if json.Unmarshal(ev.Entry.Value, &req) != nil {
					continue
				}
				out = Event{Kind: EvSwitchover, Target: req.To, CS: ClusterState{Epoch: req.Epoch}}
			default:
				name := strings.TrimPrefix(ev.Entry.Key, HeartbeatPrefix)
				hb, err := DecodeHeartbeat(ev.Entry.Value)
				if err != nil {
					continue
				}
				l.mu.Lock()
				l.members[name] = hb
				l.mu.Unlock()
				if name == l.cfg.Node {
					continue
				}
				// Every member's beat goes to the machine, which keeps the
				// primary's (replayed ones too: a replica that starts while
				// the primary is dead learns the revision to compare with
				// before promoting; events queue until start is handled).
				out = Event{Kind: EvPrimaryBeat, Rev: ev.Entry.Revision, Status: hb.Status, Node: name}
			}
			select {
			case l.events <- out:
			case <-ctx.Done():
				return
			}
		}
	}
}

// execute carries out one action and reports its result as an event.
func (l *Loop) execute(ctx context.Context, a Action) Event {
	switch a.Kind {
	case ActBeat:
		return l.beat(ctx, a)
	case ActFence:
		own := l.divergedFrom(ctx)
		err := l.cfg.PG.Fence(ctx, a.Escalation)
		if err != nil {
			l.log.Error("fence failed; escalating", "level", a.Escalation, "err", err)
		} else if own > 0 {
			l.countDivergence(ctx, own)
		}
		return done(ActFence, err)
	case ActUnfence:
		return l.unfence(ctx, a)
	case ActPromote:
		return l.promote(ctx, a)
	case ActActivate:
		return l.activate(ctx, a)
	case ActHandOff:
		return l.handOff(ctx, a)
	case ActFollow:
		peer, ok := l.peer(a.Target)
		if !ok {
			l.log.Warn("cannot follow: no heartbeat tells where its PostgreSQL is yet", "primary", a.Target)
			return done(ActFollow, fmt.Errorf("no PostgreSQL known for %q", a.Target))
		}
		how, err := l.cfg.PG.Follow(ctx, peer)
		if err != nil {
			l.log.Warn("follow failed", "primary", a.Target, "err", err)
		}
		if err == nil {
			l.log.Info("following the primary", "primary", a.Target, "by", how)
		}
		return done(ActFollow, err)
	case ActReadState:
		cs, err := l.readState(ctx)
		ev := done(ActReadState, err)
		ev.CS = cs
		return ev
	case ActSetSync:
		return l.setSync(ctx, a)
	}
	return done(a.Kind, fmt.Errorf("unknown action %q", a.Kind))
}

// failed: an action (not a beat, whose failures the machine counts) that
// did not succeed.
func failed(ev Event) bool {
	return ev.Kind == EvActionDone && ev.Result != ResultOK && ev.Result != ResultConflict
}

func done(kind ActionKind, err error) Event {
	r := ResultOK
	if err != nil {
		r = ResultFailed
	}
	return Event{Kind: EvActionDone, Action: kind, Result: r}
}

func (l *Loop) step(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, l.cfg.Timings.HeartbeatTimeout)
}

func (l *Loop) readState(ctx context.Context) (ClusterState, error) {
	sctx, cancel := l.step(ctx)
	defer cancel()
	e, err := l.kv.Get(sctx, KeyClusterState)
	if err != nil {
		return ClusterState{}, err
	}
	cs, _, err := DecodeState(e)
	return cs, err
}

// casState writes next over the cluster-state revision base, bounded by one
// step, and returns it with its new revision.
func (l *Loop) casState(ctx context.Context, next ClusterState, reason string, base uint64) (ClusterState, error) {
	wctx, cancel := l.step(ctx)
	defer cancel()
	rev, err := l.kv.Update(wctx, KeyClusterState, EncodeState(next, reason), base)
	next.Rev = rev
	return next, err
}

func (l *Loop) startPG(ctx context.Context) error {
	if running, _ := l.cfg.PG.Running(); running {
		return nil
	}
	return l.cfg.PG.Start(ctx)
}

// beat: check PostgreSQL (when it should run), read cluster-state (as a
// primary), and compare-and-set our heartbeat; each step bounded.
func (l *Loop) beat(ctx context.Context, a Action) Event {
	ev := l.beatOnce(ctx)
	if a.Failsafe && (ev.Result == ResultUnreachable || ev.Result == ResultUnknown) {
		ev.Covered, ev.Held = l.askPromises(ctx, a.Peers)
	}
	return ev
}

// askPromises asks every peer at once for a promise not to promote; it
// returns until when all of them hold (on this node's clock, from the
// moment they were asked), and false when one did not promise in time.
func (l *Loop) askPromises(ctx context.Context, peers []string) (time.Duration, bool) {
	asked := l.now()
	lease := l.cfg.Timings.PromiseLease()
	if len(peers) == 0 {
		return asked + lease, true // nobody could be promoted in our place
	}
	if l.cfg.Failsafe == nil {
		return 0, false
	}
	actx, cancel := l.step(ctx)
	defer cancel()
	type answer struct {
		name  string
		ok    bool
		lease time.Duration
		err   error
	}
	answers := make(chan answer, len(peers))
	req := PromiseRequest{Cluster: l.cfg.Cluster, From: l.cfg.Node, Epoch: l.Node().CS.Epoch}
	for _, name := range peers {
		l.mu.Lock()
		hb, known := l.members[name]
		l.mu.Unlock()
		if !known || hb.Peer == "" || hb.PeerKey == "" {
			answers <- answer{name: name, err: fmt.Errorf("no failsafe address published")}
			continue
		}
		go func() {
			ok, lease, err := l.cfg.Failsafe.Ask(actx, hb.Peer, hb.PeerKey, req)
			answers <- answer{name, ok, lease, err}
		}()
	}
	held := true
	for range peers {
		a := <-answers
		if a.err != nil || !a.ok {
			if held {
				l.log.Warn("failsafe: no promise", "peer", a.name, "granted", a.ok, "err", a.err)
			}
			held = false
			continue
		}
		lease = min(lease, a.lease)
	}
	if !held {
		return 0, false
	}
	return asked + lease, true
}

func (l *Loop) beatOnce(ctx context.Context) Event {
	n := l.Node()
	ev := Event{Kind: EvBeatResult}
	var obs pg.Observation
	if n.Status != StatusFenced {
		// One connection per beat: position, and on a primary its standbys.
		hctx, cancel := l.step(ctx)
		o, err := l.cfg.PG.Observe(hctx)
		cancel()
		l.mu.Lock()
		l.lastOK = err == nil
		if err == nil {
			l.pos = o.Position
		}
		l.mu.Unlock()
		if err != nil {
			l.beatFailed(n, "PostgreSQL check", err)
			ev.Result = ResultUnhealthy
			return ev
		}
		obs = o
	}
	pos := obs.Position
	var lag uint64
	if n.Status == StatusReplica || n.Status == StatusFailed {
		l.mu.Lock()
		if p, ok := l.members[n.CS.Primary]; ok && p.LSN > pos.LSN {
			lag = p.LSN - pos.LSN
		}
		l.mu.Unlock()
		ev.Lagging = l.cfg.MaxLag > 0 && lag > l.cfg.MaxLag
	}
	if n.Status == StatusReplica || n.Status == StatusFailed {
		ev.NotStreaming = !obs.Streaming
	}
	standbys, strangers := l.members2standbys(n, obs)
	holds := n.Status == StatusPrimary || n.Status == StatusFencing || n.Status == StatusFenced
	if holds {
		cs, err := l.readState(ctx)
		if err != nil {
			l.beatFailed(n, "read cluster-state", err)
			ev.Result = classify(err)
			return ev
		}
		ev.CS = cs
	}
	l.seq++
	l.mu.Lock()
	fork := l.forkXID
	l.mu.Unlock()
	b, _ := json.Marshal(Heartbeat{V: 1, Status: n.Status, Failing: n.Failing, Epoch: n.CS.Epoch, Seq: l.seq,
		Host: l.cfg.AdvertiseHost, Port: l.cfg.Port, User: l.cfg.User,
		LSN: pos.LSN, Timeline: pos.Timeline, Lag: lag, ForkXID: fork,
		Streaming: obs.Replica && obs.Streaming, Strangers: strangers, Peer: l.cfg.PeerAddr, PeerKey: l.cfg.PeerKey,
		Strategy: l.cfg.Strategy})
	key := HeartbeatPrefix + l.cfg.Node
	wctx, cancel := l.step(ctx)
	defer cancel()
	if !l.hbKnow {
		e, err := l.kv.Get(wctx, key)
		switch {
		case errors.Is(err, store.ErrNotFound):
			l.hbRev, l.hbKnow = 0, true
		case err != nil:
			l.beatFailed(n, "read heartbeat", err)
			ev.Result = classify(err)
			return ev
		default:
			l.hbRev, l.hbKnow = e.Revision, true
		}
	}
	var rev uint64
	var err error
	if l.hbRev == 0 {
		rev, err = l.kv.Create(wctx, key, b)
	} else {
		rev, err = l.kv.Update(wctx, key, b, l.hbRev)
	}
	if err != nil {
		l.beatFailed(n, "write heartbeat", err)
		l.hbKnow = false
		ev.Result = classify(err)
		return ev
	}
	l.hbRev = rev
	if n.Status == StatusPrimary {
		ev.Standbys = standbys
		ev.PGSync = obs.Sync
	}
	ev.Result = ResultOK
	return ev
}

// beatFailed says why a primary's beat failed: enough of them in a row
// fence it, and whoever reads the log should know which step failed.
func (l *Loop) beatFailed(n Node, step string, err error) {
	if n.Status == StatusPrimary {
		l.log.Warn("primary's beat failed", "step", step, "err", err, "failures_before", n.Failures)
	}
}

// members2standbys splits the replication connections streaming from this
// primary into members of the cluster (by the application_name each
// member's agent sets to its node name) and strangers: a replica that
// connects under another name (walreceiver, say) or a base backup's WAL
// stream is never named synchronous standby, since it is not a node the
// failover can promote.
func (l *Loop) members2standbys(n Node, obs pg.Observation) (members, strangers []string) {
	if n.Status != StatusPrimary && n.Status != StatusFencing {
		return nil, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range obs.Standbys {
		if s.State != "streaming" {
			continue
		}
		if _, ok := l.members[s.Name]; ok && s.Name != l.cfg.Node {
			members = append(members, s.Name)
		} else {
			strangers = append(strangers, s.Name)
		}
	}
	return members, strangers
}

func classify(err error) Result {
	switch {
	case errors.Is(err, store.ErrConflict):
		return ResultConflict
	case errors.Is(err, store.ErrOutcomeUnknown):
		return ResultUnknown
	default:
		return ResultUnreachable
	}
}

func (l *Loop) promote(ctx context.Context, a Action) Event {
	ev := Event{Kind: EvPromoteResult}
	wctx, cancel := l.step(ctx)
	defer cancel()
	// The primary's heartbeat, read from the leader: if it advanced past
	// what this node last saw, the primary is alive after all.
	e, err := l.kv.Get(wctx, HeartbeatPrefix+l.Node().CS.Primary)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		ev.Result = classify(err)
		return ev
	case e.Revision != a.BeatRev:
		if hb, derr := DecodeHeartbeat(e.Value); derr == nil && HoldsPrimary(hb.Status) {
			l.log.Info("promotion abandoned: the primary's heartbeat advanced", "seen", a.BeatRev, "now", e.Revision)
			ev.Result, ev.Rev = ResultConflict, e.Revision
			ev.CS, _ = l.readState(ctx)
			return ev
		}
	}
	cs, err := l.casState(ctx, ClusterState{Primary: l.cfg.Node, Epoch: a.Epoch}, "primary heartbeat stale", a.BaseRev)
	if err != nil {
		ev.Result = classify(err)
		if ev.Result == ResultConflict {
			ev.CS, _ = l.readState(ctx)
		}
		return ev
	}
	ev.Result, ev.CS = ResultOK, cs
	l.log.Info("won the promotion", "epoch", a.Epoch)
	return ev
}

func (l *Loop) activate(ctx context.Context, a Action) Event {
	cs, err := l.readState(ctx)
	if err != nil {
		return done(ActActivate, err)
	}
	if cs.Primary != l.cfg.Node || cs.Epoch != a.Epoch {
		return Event{Kind: EvActionDone, Action: ActActivate, Result: ResultConflict, CS: cs}
	}
	if role, _ := l.cfg.PG.Role(ctx); role != pg.RolePrimary {
		// The fork point, read before promoting: afterwards clients'
		// transactions on this node would already count past it.
		if p, err := l.cfg.PG.WALPosition(ctx); err == nil {
			l.mu.Lock()
			l.forkXID = p.NextXID
			l.mu.Unlock()
		}
		if err := l.cfg.PG.Promote(ctx); err != nil {
			return done(ActActivate, err)
		}
	}
	// Until a standby that streams from us is named, commits are
	// acknowledged by this node alone (cluster-state names no synchronous
	// standby, so nobody can be promoted past them).
	if err := l.cfg.PG.SetSyncStandby(ctx, ""); err != nil {
		return done(ActActivate, err)
	}
	return done(ActActivate, nil)
}

// setSync names a synchronous standby (AbsoluteConsistency). PostgreSQL
// first: from then on commits wait for the target; then the target must
// have flushed everything written before; only then does cluster-state name
// it, which makes it promotable. A target of "" (only while cluster-state
// names none) lets the primary acknowledge alone again.
func (l *Loop) setSync(ctx context.Context, a Action) Event {
	cs, err := l.readState(ctx)
	if err != nil {
		return done(ActSetSync, err)
	}
	ev := Event{Kind: EvActionDone, Action: ActSetSync, CS: cs}
	if cs.Primary != l.cfg.Node || (cs.Sync != a.Target && cs.Rev != a.BaseRev) {
		ev.Result = ResultConflict
		return ev
	}
	if l.cfg.Strategy == SplitBrainAllowed {
		ev.Result = ResultOK
		return ev
	}
	if a.Target == "" && cs.Sync != "" {
		// Un-name first: from this write on, the old standby is not
		// promotable; only then may commits be acknowledged without it.
		next := cs
		next.Sync, next.Handoff = "", false
		next, err := l.casState(ctx, next, "synchronous standby "+cs.Sync+" stopped streaming", cs.Rev)
		if err != nil {
			ev.Result = classify(err)
			return ev
		}
		ev.CS = next
		l.log.Warn("synchronous standby stopped streaming; acknowledging alone until another is named", "standby", cs.Sync)
	}
	if err := l.cfg.PG.SetSyncStandby(ctx, a.Target); err != nil {
		ev.Result = ResultFailed
		return ev
	}
	if cs.Sync == a.Target || a.Target == "" {
		ev.Result = ResultOK
		return ev
	}
	if err := l.waitCaughtUp(ctx, a.Target); err != nil {
		l.log.Warn("standby not caught up; not naming it synchronous yet", "standby", a.Target, "err", err)
		ev.Result = ResultFailed
		return ev
	}
	next := cs
	next.Sync, next.Handoff = a.Target, false
	ev.Confirmed = l.now()
	next, err = l.casState(ctx, next, "synchronous standby "+a.Target, cs.Rev)
	if err != nil {
		ev.Result = classify(err)
		return ev
	}
	ev.CS, ev.Result = next, ResultOK
	l.log.Info("synchronous standby named", "standby", a.Target)
	return ev
}

// waitCaughtUp waits until standby has flushed everything this primary had
// written when it was called, for at most FailoverTimeout.
func (l *Loop) waitCaughtUp(ctx context.Context, standby string) error {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.Timings.FailoverTimeout)
	defer cancel()
	p, err := l.cfg.PG.WALPosition(ctx)
	if err != nil {
		return err
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		sb, err := l.cfg.PG.Standbys(ctx)
		if err == nil {
			for _, s := range sb {
				if s.Name == standby && s.State == "streaming" && s.Flushed >= p.LSN {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s has not flushed up to %d: %w", standby, p.LSN, ctx.Err())
		case <-tick.C:
		}
	}
}

// peer is where member name's PostgreSQL is: configured, else learnt from
// its heartbeat.
func (l *Loop) peer(name string) (*pg.Instance, bool) {
	if p, ok := l.cfg.Peers[name]; ok {
		return p, true
	}
	l.mu.Lock()
	hb, ok := l.members[name]
	l.mu.Unlock()
	if !ok || hb.Host == "" || hb.Port == 0 {
		return nil, false
	}
	user := hb.User
	if user == "" {
		user = l.cfg.User
	}
	return &pg.Instance{Name: name, SocketDir: hb.Host, Port: hb.Port, Superuser: user, PassFile: l.cfg.PassFile}, true
}

// handOff is a planned switchover: a clean stop first (a fast shutdown
// sends the last WAL to the connected standbys before it ends), then the
// compare-and-set naming the target.
func (l *Loop) handOff(ctx context.Context, a Action) Event {
	if err := l.cfg.PG.Fence(ctx, 0); err != nil {
		l.log.Error("switchover: PostgreSQL did not stop cleanly", "err", err)
		return done(ActHandOff, err)
	}
	ev := Event{Kind: EvActionDone, Action: ActHandOff}
	cur := l.Node().CS
	next, err := l.casState(ctx, ClusterState{Primary: a.Target, Epoch: a.Epoch, Handoff: true, Paused: cur.Paused},
		"switchover from "+l.cfg.Node+" to "+a.Target, a.BaseRev)
	if err != nil {
		ev.Result = classify(err)
		ev.CS, _ = l.readState(ctx) // the outcome decides; an unread state (Rev 0) is ignored
		l.log.Warn("switchover: cluster-state not updated", "err", err)
		return ev
	}
	ev.Result, ev.CS = ResultOK, next
	l.log.Info("switchover: handed the primary role over", "to", a.Target, "epoch", a.Epoch)
	return ev
}

// divergedFrom: in SplitBrainAllowed, a serving primary about to be fenced
// because another node was promoted reads its next transaction id (0 when
// there is nothing to count).
func (l *Loop) divergedFrom(ctx context.Context) uint64 {
	n := l.Node()
	if l.cfg.Strategy != SplitBrainAllowed || n.CS.Primary == "" || n.CS.Primary == l.cfg.Node {
		return 0
	}
	qctx, cancel := l.step(ctx)
	defer cancel()
	p, err := l.cfg.PG.WALPosition(qctx)
	if err != nil {
		return 0 // not serving: nothing to count
	}
	return p.NextXID
}

// countDivergence counts the transactions this node assigned since the new
// primary's promotion (they are discarded when it rejoins) and records an
// event. The new primary publishes its fork point in its first heartbeat
// after promotion: wait for it, a bounded while.
func (l *Loop) countDivergence(ctx context.Context, own uint64) {
	n := l.Node()
	ctx, cancel := context.WithTimeout(ctx, 4*l.cfg.Timings.FailoverTimeout)
	defer cancel()
	var fork uint64
	for fork == 0 {
		qctx, qcancel := l.step(ctx)
		e, err := l.kv.Get(qctx, HeartbeatPrefix+n.CS.Primary)
		qcancel()
		if err == nil {
			if hb, err := DecodeHeartbeat(e.Value); err == nil && hb.Epoch == n.CS.Epoch && hb.ForkXID > 0 {
				fork = hb.ForkXID
				break
			}
		}
		select {
		case <-ctx.Done():
			l.log.Warn("divergence not counted: the new primary published no fork point in time", "new_primary", n.CS.Primary)
			return
		case <-time.After(l.cfg.Timings.HeartbeatInterval / 2):
		}
	}
	var diverged uint64
	if own > fork {
		diverged = own - fork
	}
	l.mu.Lock()
	l.stats.Diverged += diverged
	l.mu.Unlock()
	l.log.Warn("split brain healed: transactions on this node since the other's promotion are discarded",
		"transactions", diverged, "new_primary", n.CS.Primary, "epoch", n.CS.Epoch)
	b, _ := json.Marshal(EventRecord{Kind: "diverged", Node: l.cfg.Node, Epoch: n.CS.Epoch, Transactions: diverged, At: time.Now().UTC()})
	key := fmt.Sprintf("%sdiverged.%s.%d", EventPrefix, l.cfg.Node, n.CS.Epoch)
	wctx, wcancel := l.step(ctx)
	defer wcancel()
	if _, err := l.kv.Create(wctx, key, b); err != nil && !errors.Is(err, store.ErrConflict) {
		l.log.Warn("divergence event not recorded", "err", err)
	}
}

// unfence claims the role again by compare-and-set (same content, a new
// revision), then starts PostgreSQL.
func (l *Loop) unfence(ctx context.Context, a Action) Event {
	cs, err := l.readState(ctx)
	if err != nil {
		return Event{Kind: EvActionDone, Action: ActUnfence, Result: classify(err)}
	}
	if cs.Primary != l.cfg.Node || cs.Rev != a.BaseRev {
		return Event{Kind: EvActionDone, Action: ActUnfence, Result: ResultConflict, CS: cs}
	}
	cs, err = l.casState(ctx, cs, "primary "+l.cfg.Node+" unfenced", cs.Rev)
	if err != nil {
		ev := Event{Kind: EvActionDone, Action: ActUnfence, Result: classify(err)}
		if ev.Result == ResultConflict {
			ev.CS, _ = l.readState(ctx)
		}
		return ev
	}
	if err := l.startPG(ctx); err != nil {
		l.log.Error("unfence: PostgreSQL did not start; standing aside", "err", err)
		return Event{Kind: EvActionDone, Action: ActUnfence, Result: ResultFailed, CS: cs}
	}
	// A slow start may have outlasted the replicas' patience: confirm the
	// role before serving as primary.
	now, err := l.readState(ctx)
	if err != nil || now.Primary != l.cfg.Node {
		return Event{Kind: EvActionDone, Action: ActUnfence, Result: ResultConflict, CS: now, Writable: true}
	}
	return Event{Kind: EvActionDone, Action: ActUnfence, Result: ResultOK, CS: now}
}
