package failover_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/failover"
	"github.com/harmony-fleet/harmony/internal/mesh/meshtest"
	"github.com/harmony-fleet/harmony/internal/store"
)

// Status says, in words, what keeps a cluster from failing over: no
// synchronous standby named, a stranger streaming from the primary (a
// replica under another application_name), a replica not streaming. A
// healthy cluster has no warning.
func TestViewWarnsWhenTheClusterCannotFailOver(t *testing.T) {
	srv := meshtest.StartServer(t)
	st, err := store.NewNATS(meshtest.Connect(t, srv), store.NATSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kv, err := failover.EnsureBucket(ctx, st, "v", 1)
	if err != nil {
		t.Fatal(err)
	}
	write := func(key string, b []byte) {
		e, err := kv.Get(ctx, key)
		if err == nil {
			_, err = kv.Update(ctx, key, b, e.Revision)
		} else {
			_, err = kv.Create(ctx, key, b)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	put := func(key string, v any) {
		b, _ := json.Marshal(v)
		write(key, b)
	}
	beat := func(node string, hb failover.Heartbeat) { put(failover.HeartbeatPrefix+node, hb) }
	warnings := func() []string {
		v, err := failover.ReadView(ctx, kv, "v")
		if err != nil {
			t.Fatal(err)
		}
		return v.Warnings
	}
	state := func(sync string) {
		write(failover.KeyClusterState, failover.EncodeState(failover.ClusterState{Primary: "db-1", Sync: sync, Epoch: 1}, "test"))
	}

	state("db-2")
	beat("db-1", failover.Heartbeat{V: 1, Status: failover.StatusPrimary, Epoch: 1, Strategy: failover.AbsoluteConsistency})
	beat("db-2", failover.Heartbeat{V: 1, Status: failover.StatusReplica, Epoch: 1, Streaming: true})
	if w := warnings(); len(w) != 0 {
		t.Fatalf("a healthy cluster warns: %q", w)
	}

	// The documented-setup bug: the replica streams as "walreceiver", so
	// no standby is ever named.
	state("")
	beat("db-1", failover.Heartbeat{V: 1, Status: failover.StatusPrimary, Epoch: 1, Strategy: failover.AbsoluteConsistency,
		Strangers: []string{"walreceiver"}})
	beat("db-2", failover.Heartbeat{V: 1, Status: failover.StatusReplica, Epoch: 1})
	w := warnings()
	for _, want := range []string{"walreceiver", "no synchronous standby is named", "replica db-2 is not streaming"} {
		if !slices.ContainsFunc(w, func(s string) bool { return strings.Contains(s, want) }) {
			t.Errorf("no warning says %q: %q", want, w)
		}
	}
}

// A declared member's own record shows in the view: one still cloning
// (no heartbeat yet) as joining with its phase, one waiting for a restart
// with the parameters.
func TestViewShowsDeclaredMembersRecords(t *testing.T) {
	srv := meshtest.StartServer(t)
	st, err := store.NewNATS(meshtest.Connect(t, srv), store.NATSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kv, err := failover.EnsureBucket(ctx, st, "m", 1)
	if err != nil {
		t.Fatal(err)
	}
	put := func(key string, v any) {
		b, _ := json.Marshal(v)
		if _, err := kv.Create(ctx, key, b); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := kv.Create(ctx, failover.KeyClusterState, failover.EncodeState(failover.ClusterState{Primary: "db-1", Epoch: 1}, "bootstrap")); err != nil {
		t.Fatal(err)
	}
	put(failover.HeartbeatPrefix+"db-1", failover.Heartbeat{V: 1, Status: failover.StatusPrimary, Epoch: 1, Strategy: failover.AbsoluteConsistency})
	put(failover.MemberPrefix+"db-1", failover.MemberRecord{Params: "abc", PendingRestart: []string{"max_connections"}})
	put(failover.MemberPrefix+"db-2", failover.MemberRecord{Phase: "Cloning", Message: "cloning from db-1"})
	put(failover.MemberPrefix+"db-3", failover.MemberRecord{Leaving: true, Message: "leaving refused: the only synchronous standby"})
	v, err := failover.ReadView(ctx, kv, "m")
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Members) != 3 {
		t.Fatalf("members %+v", v.Members)
	}
	if m := v.Members[0]; m.Node != "db-1" || strings.Join(m.PendingRestart, ",") != "max_connections" || m.Role != "primary" {
		t.Errorf("db-1: %+v", m)
	}
	if m := v.Members[1]; m.Node != "db-2" || m.Role != "joining" || m.Setup != "Cloning: cloning from db-1" || m.HeartbeatAge >= 0 {
		t.Errorf("db-2: %+v", m)
	}
	if m := v.Members[2]; m.Node != "db-3" || m.Setup != "Leaving: leaving refused: the only synchronous standby" {
		t.Errorf("db-3: %+v", m)
	}
	for _, want := range []string{"db-1 waits for a restart (max_connections)", "db-3 is no longer declared by its deployment: leaving refused"} {
		if !slices.ContainsFunc(v.Warnings, func(w string) bool { return strings.Contains(w, want) }) {
			t.Errorf("warnings %v, want %q", v.Warnings, want)
		}
	}
}
