package server

import (
	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/store"
)

// Value size caps per bucket: a desired state holds inline file contents,
// the others are small records.
const (
	maxDeploymentSize   = 4 << 20
	maxDesiredStateSize = 4 << 20
	maxRecordSize       = 256 << 10
	maxHeartbeatSize    = 1 << 10
	// maxWatchers: every agent watches its own desired-state keys, and
	// nats-server allows only 1,000 consumers per stream unless told more.
	maxWatchers = 100_000
)

// FleetBuckets are the buckets the server creates, with the durability each
// needs (docs/adr/0002-durability.md): what only the control plane knows is
// synced before it is acknowledged; what agents report again on their own
// (heartbeats, observed state) may be acknowledged before it is synced.
func FleetBuckets(c config.Server) []store.BucketConfig {
	b := c.Buckets
	return []store.BucketConfig{
		{Name: b.Deployments, History: 8, Replicas: c.Replicas, MaxValueSize: maxDeploymentSize,
			Description: "Harmony deployments (spec and generation), written by the server"},
		{Name: b.DesiredState, History: 1, Replicas: c.Replicas, MaxValueSize: maxDesiredStateSize, MaxWatchers: maxWatchers,
			Description: "Harmony desired state per device and deployment, rendered by the server"},
		{Name: b.DeviceInfo, History: 1, Replicas: c.Replicas, MaxValueSize: maxRecordSize,
			Description: "Harmony device labels and inventory, written by agents"},
		{Name: b.DeviceState, History: 1, Replicas: c.Replicas, MaxValueSize: maxRecordSize, AsyncPersist: true,
			Description: "Harmony observed state per device and deployment, written by agents"},
		{Name: b.DeviceLabels, History: 1, Replicas: c.Replicas, MaxValueSize: maxRecordSize,
			Description: "Harmony device labels set from the control plane"},
		{Name: b.DeviceHeartbeat, History: 1, Replicas: c.Replicas, MaxValueSize: maxHeartbeatSize, AsyncPersist: true,
			Description: "Harmony device liveness, written by agents"},
		{Name: b.Identities, History: 1, Replicas: c.Replicas, MaxValueSize: maxHeartbeatSize,
			Description: "Harmony device identities, enrollment requests and hashed enrollment tokens"},
		{Name: b.Leases, History: 1, Replicas: c.Replicas, MaxValueSize: maxHeartbeatSize,
			Description: "Harmony servers' leases on once-only work (orphan collection)"},
	}
}
