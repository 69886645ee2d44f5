package operator

import (
	"context"
	"log/slog"
	"testing"
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/store/memstore"
)

func presenceEntry(t *testing.T, key string, created time.Time, beats map[string]int64) store.Entry {
	t.Helper()
	b, err := v1.Marshal(v1.Presence{V: v1.FormatVersion, Beats: beats})
	if err != nil {
		t.Fatal(err)
	}
	return store.Entry{Key: key, Value: b, Created: created, Op: store.OpPut}
}

func infoEntry(t *testing.T, id string) store.Entry {
	t.Helper()
	b, err := v1.Marshal(v1.DeviceInfo{V: v1.FormatVersion, ID: id})
	if err != nil {
		t.Fatal(err)
	}
	return store.Entry{Key: id, Value: b, Created: time.Now(), Op: store.OpPut}
}

// TestPresenceRecordsAdvanceBeats: the relays' presence records say when
// each device last beat. A record read for the first time is placed by its
// store time (an old one leaves its devices offline); a later record of the
// same key is live. A device is as fresh as the latest beat any source
// gives: an older beat in another relay's record, or in its own heartbeat
// key, never makes it look staler, nor a stale one fresher.
func TestPresenceRecordsAdvanceBeats(t *testing.T) {
	st := memstore.New()
	open := func(name string) store.KV {
		kv, err := st.Ensure(context.Background(), store.BucketConfig{Name: name, History: 1, Replicas: 1})
		if err != nil {
			t.Fatal(err)
		}
		return kv
	}
	b := Buckets{Deployments: open("deployments"), DesiredState: open("desired-state"), DeviceInfo: open("device-info"),
		DeviceState: open("device-state"), DeviceHeartbeat: open("device-heartbeat"), DeviceLabels: open("device-labels"),
		DevicePresence: open("device-presence")}
	o := New(b, slog.New(slog.DiscardHandler), Options{Staleness: 30 * time.Second})
	for _, id := range []string{"a", "b", "c"} {
		o.apply(b.DeviceInfo.Bucket(), infoEntry(t, id))
	}
	pres := b.DevicePresence.Bucket()
	age := func(id string) time.Duration {
		t.Helper()
		d, ok := o.HeartbeatAge(id)
		if !ok {
			t.Fatalf("%s: no heartbeat known", id)
		}
		return d
	}
	online := func(id string) bool {
		on, known := o.Online(id)
		if !known {
			t.Fatalf("%s unknown", id)
		}
		return on
	}

	// First sight of s1.0, written 40 s ago: a beat 40 s ago, b 45 s ago.
	o.apply(pres, presenceEntry(t, "s1.0", time.Now().Add(-40*time.Second), map[string]int64{"a": 0, "b": 5000}))
	if d := age("a"); d < 39*time.Second || d > 45*time.Second {
		t.Errorf("a's age %s from a 40 s old record, want about 40 s", d)
	}
	if d := age("b"); d < 44*time.Second || d > 50*time.Second {
		t.Errorf("b's age %s, want about 45 s", d)
	}
	if online("a") || online("b") {
		t.Error("devices of a 40 s old record are online (staleness 30 s)")
	}

	// The same key again (whatever its store time says): live, a beat 100 ms
	// before it arrived.
	o.apply(pres, presenceEntry(t, "s1.0", time.Now().Add(-time.Hour), map[string]int64{"a": 100}))
	if d := age("a"); d > 5*time.Second {
		t.Errorf("a's age %s after a live record, want about 0.1 s", d)
	}
	if !online("a") {
		t.Error("a is offline after beating")
	}

	// Another relay's record with an older beat of a: no change.
	o.apply(pres, presenceEntry(t, "s2.3", time.Now(), map[string]int64{"a": 20000}))
	if d := age("a"); d > 5*time.Second {
		t.Errorf("a's age %s after an older beat elsewhere, want it kept at about 0.1 s", d)
	}

	// c beats through its own key, then a record says it beat 25 s ago:
	// its own key's fresher beat stands.
	hb, _ := v1.Marshal(v1.Heartbeat{V: v1.FormatVersion, Boot: "x", Seq: 1})
	o.apply(b.DeviceHeartbeat.Bucket(), store.Entry{Key: "c", Value: hb, Created: time.Now(), Op: store.OpPut})
	o.apply(pres, presenceEntry(t, "s2.3", time.Now(), map[string]int64{"c": 25000}))
	if d := age("c"); d > 5*time.Second {
		t.Errorf("c's age %s, want its own key's fresh beat", d)
	}
	if !online("c") {
		t.Error("c is offline")
	}

	// The roll-up counts what the view says.
	if r := o.Rollup(); r.Online != 2 || r.Offline != 1 {
		t.Errorf("roll-up online %d offline %d, want 2 and 1 (b is stale)", r.Online, r.Offline)
	}
}
