package relay

import (
	"context"
	"errors"
	"hash/fnv"
	"strconv"
	"sync"
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/store"
)

// Presence is where the relay records the beats it answers
// (docs/adr/0020-presence.md): rather than a compare-and-set write per
// device per heartbeat (a JetStream write, its acknowledgement and a watch
// delivery for each), the relay answers a beat from memory and writes, at
// most once a PresenceFlush, one record per shard of the devices it heard
// lately. Ten thousand devices beating every 10 s cost the store 16
// writes a second instead of a thousand.
type Presence struct {
	// KV is the presence bucket; it must be a store.Putter (the relay is
	// the only writer of its keys).
	KV store.KV
	// Name is this relay's name (the server's), the first token of its
	// keys <name>.<shard>: unique among the servers sharing a store.
	Name string
	// Window: a device not heard from for this long is left out of the
	// records (DefaultPresenceWindow when zero).
	Window time.Duration
	// Flush is the longest a beat waits before it is written
	// (DefaultPresenceFlush when zero).
	Flush time.Duration
}

// Defaults of Presence.
const (
	DefaultPresenceWindow = 5 * time.Minute
	DefaultPresenceFlush  = time.Second
	// PresenceShards is how many records a relay keeps: each holds about
	// 25 bytes per device, so 100,000 devices on one relay make records of
	// about 160 KB, well within a NATS message.
	PresenceShards = 16
)

// PresenceKey is the key of a relay's record for one shard.
func PresenceKey(name string, shard int) string { return name + "." + strconv.Itoa(shard) }

// presence is what the relay heard, by shard.
type presence struct {
	cfg Presence
	put store.Putter

	mu     sync.Mutex
	shards [PresenceShards]map[string]time.Time // device -> last beat (monotonic)
	dirty  [PresenceShards]bool
}

func newPresence(cfg Presence) (*presence, error) {
	put, ok := cfg.KV.(store.Putter)
	if !ok {
		return nil, errors.New("relay: the presence bucket cannot be written without compare-and-set")
	}
	if !store.ValidKey(PresenceKey(cfg.Name, 0)) || len(cfg.Name) == 0 {
		return nil, errors.New("relay: presence name " + strconv.Quote(cfg.Name) + ": not a key token")
	}
	if cfg.Window <= 0 {
		cfg.Window = DefaultPresenceWindow
	}
	if cfg.Flush <= 0 {
		cfg.Flush = DefaultPresenceFlush
	}
	p := &presence{cfg: cfg, put: put}
	for i := range p.shards {
		p.shards[i] = map[string]time.Time{}
	}
	return p, nil
}

func shardOf(id string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return int(h.Sum32() % PresenceShards)
}

// beat records that device id beat at now.
func (p *presence) beat(id string, now time.Time) {
	i := shardOf(id)
	p.mu.Lock()
	p.shards[i][id] = now
	p.dirty[i] = true
	p.mu.Unlock()
}

// take returns the records of the shards that changed since they were
// last taken, dropping devices not heard from within the window. Only the
// copy is made under the lock that beats take; encoding is not.
func (p *presence) take(now time.Time) map[int][]byte {
	recs := map[int]v1.Presence{}
	p.mu.Lock()
	for i := range p.shards {
		if !p.dirty[i] {
			continue
		}
		p.dirty[i] = false
		rec := v1.Presence{V: v1.FormatVersion, Beats: make(map[string]int64, len(p.shards[i]))}
		for id, at := range p.shards[i] {
			age := now.Sub(at)
			if age > p.cfg.Window {
				delete(p.shards[i], id)
				continue
			}
			rec.Beats[id] = max(0, age.Milliseconds())
		}
		recs[i] = rec
	}
	p.mu.Unlock()
	out := make(map[int][]byte, len(recs))
	for i, rec := range recs {
		b, err := v1.Marshal(rec)
		if err != nil {
			continue // a map of names and numbers always marshals
		}
		out[i] = b
	}
	return out
}

// redo marks a shard whose write failed, for the next flush.
func (p *presence) redo(i int) {
	p.mu.Lock()
	p.dirty[i] = true
	p.mu.Unlock()
}

// run writes the changed shards every Flush until ctx ends.
func (p *presence) run(ctx context.Context, timeout time.Duration, failed func(error)) {
	tick := time.NewTicker(p.cfg.Flush)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for i, b := range p.take(time.Now()) {
			wctx, cancel := context.WithTimeout(ctx, timeout)
			_, err := p.put.Put(wctx, PresenceKey(p.cfg.Name, i), b)
			cancel()
			if err != nil {
				p.redo(i)
				failed(err)
			}
		}
	}
}
