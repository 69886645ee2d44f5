package failover

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/harmony-fleet/harmony/internal/store"
)

// Member is one node of a cluster as people read it (CLI, dashboard).
type Member struct {
	Node         string  `json:"node"`
	Role         string  `json:"role"` // primary, sync standby, replica
	State        string  `json:"state"`
	HeartbeatAge float64 `json:"heartbeat_age_seconds"`
	LagBytes     uint64  `json:"lag_bytes"`
	Timeline     uint32  `json:"timeline"`
	Epoch        uint64  `json:"epoch"`
	// Streaming (replica): it receives WAL from the primary.
	Streaming bool `json:"streaming"`
	// Of a declared member (docs/postgres.md): its setup phase while it
	// joins, and the parameters that wait for a restart.
	Setup          string   `json:"setup,omitempty"`
	PendingRestart []string `json:"pending_restart,omitempty"`
}

// View is a cluster's current state and members.
type View struct {
	Cluster string   `json:"cluster"`
	Primary string   `json:"primary"`
	Sync    string   `json:"sync,omitempty"`
	Epoch   uint64   `json:"epoch"`
	Paused  bool     `json:"paused"`
	Reason  string   `json:"reason"`
	Members []Member `json:"members"`
	// Warnings say what keeps the cluster from failing over (or from
	// failing over without loss), in words.
	Warnings []string `json:"warnings,omitempty"`
}

// HistoryEntry is one retained revision of cluster-state.
type HistoryEntry struct {
	Revision uint64    `json:"revision"`
	At       time.Time `json:"at"`
	Epoch    uint64    `json:"epoch"`
	Primary  string    `json:"primary"`
	Sync     string    `json:"sync,omitempty"`
	Paused   bool      `json:"paused,omitempty"`
	Reason   string    `json:"reason"`
}

// ReadView reads cluster-state and every heartbeat. Heartbeat ages
// compare the store's write time with this machine's clock: for people to
// read, never for a decision.
func ReadView(ctx context.Context, kv store.KV, cluster string) (View, error) {
	e, err := kv.Get(ctx, KeyClusterState)
	if err != nil {
		return View{}, fmt.Errorf("cluster-state: %w", err)
	}
	cs, rec, err := DecodeState(e)
	if err != nil {
		return View{}, err
	}
	beats, err := kv.List(ctx, HeartbeatPrefix+"*")
	if err != nil {
		return View{}, err
	}
	v := View{Cluster: cluster, Primary: cs.Primary, Sync: cs.Sync, Epoch: cs.Epoch, Paused: cs.Paused, Reason: rec.Reason}
	var strategy Strategy
	var strangers []string
	replicas := 0
	for _, b := range beats {
		hb, err := DecodeHeartbeat(b.Value)
		if err != nil {
			continue
		}
		node := strings.TrimPrefix(b.Key, HeartbeatPrefix)
		role := "replica"
		switch node {
		case cs.Primary:
			role = "primary"
		case cs.Sync:
			role = "sync standby"
		}
		state := string(hb.Status)
		if hb.Failing != "" {
			state += " (" + string(hb.Failing) + " failing)"
		}
		v.Members = append(v.Members, Member{Node: node, Role: role, State: state,
			HeartbeatAge: time.Since(b.Created).Seconds(), LagBytes: hb.Lag, Timeline: hb.Timeline, Epoch: hb.Epoch,
			Streaming: hb.Streaming})
		if node == cs.Primary {
			strategy, strangers = hb.Strategy, hb.Strangers
			continue
		}
		if hb.Status == StatusReplica || hb.Status == StatusFailed {
			replicas++
			if !hb.Streaming && hb.Epoch == cs.Epoch {
				v.Warnings = append(v.Warnings, fmt.Sprintf("replica %s is not streaming from the primary", node))
			}
		}
	}
	// Declared members' own records: a member still setting up (no
	// heartbeat yet) shows with its phase.
	if recs, err := kv.List(ctx, MemberPrefix+"*"); err == nil {
		seen := map[string]int{}
		for i, m := range v.Members {
			seen[m.Node] = i
		}
		for _, e := range recs {
			var r MemberRecord
			if json.Unmarshal(e.Value, &r) != nil {
				continue
			}
			node := strings.TrimPrefix(e.Key, MemberPrefix)
			setup := r.Phase
			if setup != "" && r.Message != "" {
				setup += ": " + r.Message
			}
			i, ok := seen[node]
			if !ok {
				v.Members = append(v.Members, Member{Node: node, Role: "joining", State: r.Phase, HeartbeatAge: -1})
				i = len(v.Members) - 1
			}
			v.Members[i].Setup, v.Members[i].PendingRestart = setup, r.PendingRestart
			if len(r.PendingRestart) > 0 {
				v.Warnings = append(v.Warnings, fmt.Sprintf("%s waits for a restart (%s): it is rolled through the cluster", node, strings.Join(r.PendingRestart, ", ")))
			}
			if r.Failed {
				v.Warnings = append(v.Warnings, fmt.Sprintf("%s: %s", node, setup))
			}
			if r.Leaving {
				v.Members[i].Setup = "Leaving"
				if r.Message != "" {
					v.Members[i].Setup += ": " + r.Message
				}
				v.Warnings = append(v.Warnings, fmt.Sprintf("%s is no longer declared by its deployment: %s", node, cmp.Or(r.Message, "it is leaving")))
			}
		}
	}
	sort.Slice(v.Members, func(i, j int) bool { return v.Members[i].Node < v.Members[j].Node })
	if len(strangers) > 0 {
		v.Warnings = append(v.Warnings, fmt.Sprintf("the primary streams WAL to %s, which is no member of the cluster "+
			"(a replica whose primary_conninfo has another application_name, or a base backup): never named synchronous standby",
			strings.Join(strangers, ", ")))
	}
	if strategy == AbsoluteConsistency && cs.Sync == "" && !cs.Paused {
		what := "no replica streams from it"
		if replicas > 0 {
			what = "no replica has caught up and been named yet"
		}
		v.Warnings = append(v.Warnings, "no synchronous standby is named ("+what+"): the primary acknowledges alone "+
			"and no replica can be promoted if it fails")
	}
	sort.Strings(v.Warnings)
	return v, nil
}

// ReadHistory returns the retained revisions of cluster-state, oldest
// first (the bucket keeps 64).
func ReadHistory(ctx context.Context, kv store.KV) ([]HistoryEntry, error) {
	entries, err := kv.History(ctx, KeyClusterState)
	if err != nil {
		return nil, err
	}
	var rows []HistoryEntry
	for _, e := range entries {
		if e.Op != store.OpPut {
			continue
		}
		cs, rec, err := DecodeState(e)
		if err != nil {
			continue
		}
		rows = append(rows, HistoryEntry{Revision: e.Revision, At: e.Created.UTC(), Epoch: cs.Epoch, Primary: cs.Primary, Sync: cs.Sync, Paused: cs.Paused, Reason: rec.Reason})
	}
	return rows, nil
}
