package relay_test

import (
	"context"
	"errors"
	"testing"
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/relay"
	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

type beater interface {
	Beat(ctx context.Context, key string, value []byte) error
}

func beat(seq uint64) []byte {
	b, _ := v1.Marshal(v1.Heartbeat{V: v1.FormatVersion, Boot: "boot", Seq: seq})
	return b
}

// heard reads every presence record of relay name: device -> the beat's
// time (the record's store time less the age it gives).
func heard(t *testing.T, kv store.KV) map[string]time.Time {
	t.Helper()
	es, err := kv.List(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]time.Time{}
	for _, e := range es {
		p, err := v1.DecodePresence(e.Value)
		if err != nil {
			t.Fatalf("record %s: %v", e.Key, err)
		}
		for id, ms := range p.Beats {
			out[id] = e.Created.Add(-time.Duration(ms) * time.Millisecond)
		}
	}
	return out
}

// TestRelayRecordsBeats: a device's beats are answered and land in the
// relay's presence records (not in its heartbeat key), a record per shard
// under the relay's name; a beat in another device's name, on another
// bucket or with a value that is no heartbeat is refused and recorded
// nowhere.
func TestRelayRecordsBeats(t *testing.T) {
	b := startPresence(t)
	ctx := context.Background()
	_, a := b.device(t, "dev-a")
	_, c := b.device(t, "dev-c")
	hbA := open(t, a, b.names.DeviceHeartbeat).(beater)
	hbC := open(t, c, b.names.DeviceHeartbeat).(beater)
	before := time.Now()
	if err := hbA.Beat(ctx, "dev-a", beat(1)); err != nil {
		t.Fatal(err)
	}
	if err := hbC.Beat(ctx, "dev-c", beat(1)); err != nil {
		t.Fatal(err)
	}
	pres := b.kv[b.names.DevicePresence]
	retry.Until(t, 10*time.Second, func() error {
		h := heard(t, pres)
		for _, id := range []string{"dev-a", "dev-c"} {
			at, ok := h[id]
			if !ok {
				return errors.New(id + " not in any record yet")
			}
			// Store and test share a clock; a millisecond of rounding.
			if at.Before(before.Add(-time.Millisecond)) {
				t.Fatalf("%s heard at %s, before it beat (%s)", id, at, before)
			}
		}
		return nil
	})
	es, err := pres.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	shards := map[string]bool{}
	for i := range relay.PresenceShards {
		shards[relay.PresenceKey("relay-1", i)] = true
	}
	for _, e := range es {
		if !shards[e.Key] {
			t.Errorf("record key %q is not one of relay-1's shards", e.Key)
		}
	}
	if _, err := b.kv[b.names.DeviceHeartbeat].Get(ctx, "dev-a"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a beat wrote the heartbeat key (err %v)", err)
	}

	// Refused: another device's key, another bucket, a value that is no
	// heartbeat.
	st := open(t, a, b.names.DeviceState).(beater)
	for name, call := range map[string]func() error{
		"beat as dev-b":        func() error { return hbA.Beat(ctx, "dev-b", beat(2)) },
		"beat on device-state": func() error { return st.Beat(ctx, "dev-a", beat(2)) },
		"beat that is no heartbeat": func() error {
			return hbA.Beat(ctx, "dev-a", []byte(`{"v":1,"b":"x","s":1,"extra":1}`))
		},
	} {
		if err := call(); !errors.Is(err, store.ErrRefused) {
			t.Errorf("%s: %v, want refused", name, err)
		}
	}
	if _, ok := heard(t, pres)["dev-b"]; ok {
		t.Error("dev-b is in the records after dev-a beat in its name")
	}
}

// TestRelayWithoutPresenceRefusesBeats: a relay with no presence bucket
// refuses beats with store.ErrRefused, which tells an agent to write its
// heartbeat key instead.
func TestRelayWithoutPresenceRefusesBeats(t *testing.T) {
	b := start(t, relay.Limits{})
	_, a := b.device(t, "dev-a")
	hb := open(t, a, b.names.DeviceHeartbeat).(beater)
	if err := hb.Beat(context.Background(), "dev-a", beat(1)); !errors.Is(err, store.ErrRefused) {
		t.Fatalf("beat: %v, want refused", err)
	}
}

func startPresence(t *testing.T) *bench {
	t.Helper()
	return startWithKV(t, func(kv map[string]store.KV) relay.Options {
		return relay.Options{Presence: &relay.Presence{KV: kv[config.DefaultServer().Buckets.DevicePresence], Name: "relay-1",
			Flush: 50 * time.Millisecond}}
	})
}
