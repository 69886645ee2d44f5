package failover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/harmony-fleet/harmony/internal/failover/pg"
	"github.com/harmony-fleet/harmony/internal/store"
)

// Keys of the failover bucket.
const (
	KeyClusterState = "cluster-state"
	heartbeatPrefix = "heartbeat."
)

// BucketName is the bucket of one cluster: two clusters never collide.
func BucketName(cluster string) string { return "failover-" + cluster }

// EnsureBucket creates (or checks) a cluster's bucket: file storage, 64
// revisions of history (the flight recorder), no TTL.
func EnsureBucket(ctx context.Context, st store.Store, cluster string, replicas int) (store.KV, error) {
	return st.Ensure(ctx, store.BucketConfig{Name: BucketName(cluster), History: 64, Replicas: replicas,
		MaxValueSize: 64 << 10, Description: "Harmony failover state of cluster " + cluster})
}

// stateValue is the stored form of cluster-state.
type stateValue struct {
	V       int       `json:"v"`
	Primary string    `json:"primary"`
	Sync    string    `json:"sync,omitempty"`
	Epoch   uint64    `json:"epoch"`
	Since   time.Time `json:"since"`
	Reason  string    `json:"reason"`
}

func decodeState(e store.Entry) (ClusterState, error) {
	var v stateValue
	if err := json.Unmarshal(e.Value, &v); err != nil {
		return ClusterState{}, fmt.Errorf("cluster-state: %w", err)
	}
	return ClusterState{Primary: v.Primary, Sync: v.Sync, Epoch: v.Epoch, Rev: e.Revision}, nil
}

func encodeState(cs ClusterState, reason string) []byte {
	b, _ := json.Marshal(stateValue{V: 1, Primary: cs.Primary, Sync: cs.Sync, Epoch: cs.Epoch, Since: time.Now().UTC(), Reason: reason})
	return b
}

// Bootstrap names the first primary and its synchronous standby when the
// cluster has no state yet; an existing state is left alone.
func Bootstrap(ctx context.Context, kv store.KV, primary, sync string) error {
	_, err := kv.Create(ctx, KeyClusterState, encodeState(ClusterState{Primary: primary, Sync: sync, Epoch: 1}, "bootstrap"))
	if errors.Is(err, store.ErrConflict) {
		return nil
	}
	return err
}

// heartbeatValue is a node's heartbeat: its status says what it is, so a
// fenced node never reports itself healthy.
type heartbeatValue struct {
	V      int    `json:"v"`
	Status Status `json:"status"`
	Epoch  uint64 `json:"epoch"`
	Seq    uint64 `json:"seq"`
}

// LoopConfig configures one node's failover role.
type LoopConfig struct {
	Cluster  string
	Node     string
	Timings  Timings
	Strategy Strategy
	PG       *pg.Instance
	// Peers are the other members' PostgreSQL, to follow and rewind from.
	Peers map[string]*pg.Instance
}

// Loop carries out the decisions of one node's machine against the store
// and the local PostgreSQL. Actions run one at a time; a new decision
// cancels the action in flight.
type Loop struct {
	cfg LoopConfig
	kv  store.KV
	log *slog.Logger

	events chan Event
	mu     sync.Mutex
	node   Node
	seq    uint64 // heartbeats written
	hbRev  uint64 // our heartbeat key's revision
	hbKnow bool
}

// NewLoop returns a loop over the cluster's bucket.
func NewLoop(cfg LoopConfig, kv store.KV, log *slog.Logger) (*Loop, error) {
	if err := cfg.Timings.Validate(); err != nil {
		return nil, err
	}
	return &Loop{cfg: cfg, kv: kv, log: log, events: make(chan Event, 64), node: NewNode(cfg.Node, cfg.Timings, cfg.Strategy)}, nil
}

// Node returns the machine's current state.
func (l *Loop) Node() Node {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.node
}

type running struct {
	cancel context.CancelFunc
	id     uint64
}

// Run reconciles with cluster-state first, then follows the bucket and
// heartbeats until ctx ends.
func (l *Loop) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Start-up: read cluster-state first.
	start := Event{Kind: EvStart}
	rctx, rcancel := context.WithTimeout(ctx, l.cfg.Timings.HeartbeatTimeout*2)
	e, err := l.kv.Get(rctx, KeyClusterState)
	rcancel()
	if err == nil {
		start.CS, err = decodeState(e)
	}
	if err != nil {
		start.Result = ResultUnreachable
	}
	if role, rerr := l.cfg.PG.Role(ctx); rerr == nil && role == pg.RolePrimary {
		start.Writable = true
	}

	wg.Add(2)
	go func() { defer wg.Done(); l.watch(ctx, KeyClusterState) }()
	go func() { defer wg.Done(); l.watch(ctx, heartbeatPrefix+"*") }()

	tick := time.NewTicker(l.cfg.Timings.HeartbeatInterval)
	defer tick.Stop()
	var cur *running
	var nextID uint64
	results := make(chan struct {
		id uint64
		ev Event
	}, 8)
	handle := func(ev Event) {
		l.mu.Lock()
		before := l.node.Status
		n, acts := Step(l.node, ev)
		l.node = n
		l.mu.Unlock()
		if n.Status != before {
			l.log.Info("failover state", "from", before, "to", n.Status, "epoch", n.CS.Epoch, "primary", n.CS.Primary)
		}
		for _, a := range acts {
			if cur != nil {
				cur.cancel()
			}
			nextID++
			actx, acancel := context.WithCancel(ctx)
			cur = &running{cancel: acancel, id: nextID}
			id, a := nextID, a
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer acancel()
				ev := l.execute(actx, a)
				select {
				case results <- struct {
					id uint64
					ev Event
				}{id, ev}:
				case <-ctx.Done():
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
			r.ev.Now = l.now()
			handle(r.ev)
		}
	}
}

var origin = time.Now()

// now is the loop's monotonic clock.
func (l *Loop) now() time.Duration { return time.Since(origin) }

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
			if ev.Replayed || ev.Entry.Op != store.OpPut {
				continue
			}
			var out Event
			if ev.Entry.Key == KeyClusterState {
				cs, err := decodeState(ev.Entry)
				if err != nil {
					continue
				}
				out = Event{Kind: EvClusterState, CS: cs}
			} else {
				name := strings.TrimPrefix(ev.Entry.Key, heartbeatPrefix)
				if name == l.cfg.Node || name != l.Node().CS.Primary {
					continue
				}
				var hb heartbeatValue
				if json.Unmarshal(ev.Entry.Value, &hb) != nil {
					continue
				}
				out = Event{Kind: EvPrimaryBeat, Rev: ev.Entry.Revision, Status: hb.Status}
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
		return l.beat(ctx)
	case ActFence:
		err := l.cfg.PG.Fence(ctx, a.Escalation)
		if err != nil {
			l.log.Error("fence failed; escalating", "level", a.Escalation, "err", err)
		}
		return done(ActFence, err)
	case ActUnfence:
		err := l.startPG(ctx)
		return done(ActUnfence, err)
	case ActPromote:
		return l.promote(ctx, a)
	case ActActivate:
		return l.activate(ctx, a)
	case ActFollow:
		peer, ok := l.cfg.Peers[a.Target]
		if !ok {
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
	return decodeState(e)
}

func (l *Loop) startPG(ctx context.Context) error {
	if running, _ := l.cfg.PG.Running(); running {
		return nil
	}
	return l.cfg.PG.Start(ctx)
}

// beat: check PostgreSQL (when it should run), read cluster-state (as a
// primary), and compare-and-set our heartbeat; each step bounded.
func (l *Loop) beat(ctx context.Context) Event {
	n := l.Node()
	ev := Event{Kind: EvBeatResult}
	if n.Status != StatusFenced {
		hctx, cancel := l.step(ctx)
		err := l.cfg.PG.Healthy(hctx)
		cancel()
		if err != nil {
			ev.Result = ResultUnhealthy
			return ev
		}
	}
	holds := n.Status == StatusPrimary || n.Status == StatusFencing || n.Status == StatusFenced
	if holds {
		cs, err := l.readState(ctx)
		if err != nil {
			ev.Result = classify(err)
			return ev
		}
		ev.CS = cs
	}
	l.seq++
	b, _ := json.Marshal(heartbeatValue{V: 1, Status: n.Status, Epoch: n.CS.Epoch, Seq: l.seq})
	key := heartbeatPrefix + l.cfg.Node
	wctx, cancel := l.step(ctx)
	defer cancel()
	if !l.hbKnow {
		e, err := l.kv.Get(wctx, key)
		switch {
		case errors.Is(err, store.ErrNotFound):
			l.hbRev, l.hbKnow = 0, true
		case err != nil:
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
		l.hbKnow = false
		ev.Result = classify(err)
		return ev
	}
	l.hbRev = rev
	if n.Status == StatusPrimary {
		sctx, cancel := l.step(ctx)
		defer cancel()
		if sb, err := l.cfg.PG.Standbys(sctx); err == nil {
			for _, s := range sb {
				if s.State == "streaming" {
					ev.Standbys = append(ev.Standbys, s.Name)
				}
			}
		}
		ev.PGSync, _ = l.cfg.PG.SyncStandby(sctx)
	}
	ev.Result = ResultOK
	return ev
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
	cs := ClusterState{Primary: l.cfg.Node, Epoch: a.Epoch}
	rev, err := l.kv.Update(wctx, KeyClusterState, encodeState(cs, "primary heartbeat stale"), a.BaseRev)
	if err != nil {
		ev.Result = classify(err)
		if ev.Result == ResultConflict {
			ev.CS, _ = l.readState(ctx)
		}
		return ev
	}
	cs.Rev = rev
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
		if err := l.cfg.PG.Promote(ctx); err != nil {
			return done(ActActivate, err)
		}
	}
	// Acknowledge nothing until a standby that streams from us is named.
	if err := l.cfg.PG.SetSyncStandby(ctx, syncSetting(l.cfg.Strategy, "")); err != nil {
		return done(ActActivate, err)
	}
	return done(ActActivate, nil)
}

// syncSetting is the synchronous_standby_names value for a strategy: in
// SplitBrainAllowed nothing waits for a standby.
func syncSetting(s Strategy, name string) string {
	if s == SplitBrainAllowed {
		return ""
	}
	if name == "" {
		return "harmony-no-standby-yet" // nobody connects under this name: commits wait
	}
	return name
}

func (l *Loop) setSync(ctx context.Context, a Action) Event {
	cs, err := l.readState(ctx)
	if err != nil {
		return done(ActSetSync, err)
	}
	ev := Event{Kind: EvActionDone, Action: ActSetSync, CS: cs}
	if cs.Primary != l.cfg.Node {
		ev.Result = ResultConflict
		return ev
	}
	if cs.Sync != a.Target {
		if cs.Rev != a.BaseRev {
			ev.Result = ResultConflict
			return ev
		}
		next := cs
		next.Sync = a.Target
		wctx, cancel := l.step(ctx)
		rev, err := l.kv.Update(wctx, KeyClusterState, encodeState(next, "synchronous standby "+a.Target), cs.Rev)
		cancel()
		if err != nil {
			ev.Result = classify(err)
			return ev
		}
		next.Rev = rev
		ev.CS = next
	}
	if err := l.cfg.PG.SetSyncStandby(ctx, syncSetting(l.cfg.Strategy, a.Target)); err != nil {
		ev.Result = ResultFailed
		return ev
	}
	ev.Result = ResultOK
	return ev
}
