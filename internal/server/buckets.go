package server

import (
	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/mesh"
	"github.com/harmony-fleet/harmony/internal/store"
)

// Value size caps per bucket: a desired state holds inline file contents,
// the others are small records.
const (
	// maxDeploymentSize: a deployment that rolls out holds the previous
	// spec as well (v1.StoredDeployment.RolloutFrom); NATS's payload
	// limit is 8 MiB (mesh).
	maxDeploymentSize   = 8<<20 - 64<<10
	maxDesiredStateSize = 4 << 20
	maxRecordSize       = 256 << 10
	maxHeartbeatSize    = 1 << 10
	// maxWatchers: every agent watches its own desired-state keys, and
	// nats-server allows only 1,000 consumers per stream unless told more.
	maxWatchers = 100_000
)

// DesiredSubjectPrefix is where the desired-state bucket republishes its
// writes (<prefix>.<device>.<deployment>), which agents follow with a
// plain subscription (docs/adr/0012-fleet-scale.md).
func DesiredSubjectPrefix(bucket string) string { return mesh.DesiredSubjectPrefix(bucket) }

// FleetBuckets are the buckets the server creates, with the durability each
// needs (docs/adr/0002-durability.md, 0012): what only the control plane
// knows is synced before it is acknowledged; what is rebuilt after a loss
// may be acknowledged before it is synced: heartbeats and observed state
// (the agents report them again) and desired state (the operator renders
// it again from deployments and devices, and agents re-read it whole after
// every reconnection).
func FleetBuckets(c config.Server) []store.BucketConfig {
	b := c.Buckets
	return []store.BucketConfig{
		{Name: b.Deployments, History: 8, Replicas: c.Replicas, MaxValueSize: maxDeploymentSize,
			Description: "Harmony deployments (spec and generation), written by the server"},
		{Name: b.DesiredState, History: 1, Replicas: c.Replicas, MaxValueSize: maxDesiredStateSize, MaxWatchers: maxWatchers, AsyncPersist: true,
			Republish:   DesiredSubjectPrefix(b.DesiredState),
			Description: "Harmony desired state per device and deployment, rendered by the server"},
		{Name: b.DeviceInfo, History: 1, Replicas: c.Replicas, MaxValueSize: maxRecordSize,
			Description: "Harmony device labels and inventory, written by agents"},
		{Name: b.DeviceState, History: 1, Replicas: c.Replicas, MaxValueSize: maxRecordSize, AsyncPersist: true,
			Description: "Harmony observed state per device and deployment, written by agents"},
		{Name: b.DeviceLabels, History: 1, Replicas: c.Replicas, MaxValueSize: maxRecordSize,
			Description: "Harmony device labels set from the control plane"},
		{Name: b.DeviceHeartbeat, History: 1, Replicas: c.Replicas, MaxValueSize: maxHeartbeatSize, AsyncPersist: true,
			Description: "Harmony device liveness, written by agents"},
		{Name: b.DevicePresence, History: 1, Replicas: c.Replicas, MaxValueSize: v1.MaxPresenceBytes, AsyncPersist: true,
			Description: "Harmony device liveness as each server's relay heard it, written by the servers"},
		{Name: b.Identities, History: 1, Replicas: c.Replicas, MaxValueSize: maxHeartbeatSize,
			Description: "Harmony device identities, enrollment requests and hashed enrollment tokens"},
		{Name: b.Secrets, History: 1, Replicas: c.Replicas, MaxValueSize: v1.MaxSecretBytes + 4096,
			Description: "Harmony secrets, written by the server, read by the devices whose desired state names them"},
		{Name: b.Rollouts, History: 1, Replicas: c.Replicas, MaxValueSize: v1.MaxRolloutStateBytes,
			Description: "Harmony rollouts' progress (batches, phase), written by the operator holding the lease"},
		{Name: b.Leases, History: 1, Replicas: c.Replicas, MaxValueSize: maxHeartbeatSize,
			Description: "Harmony servers' leases on once-only work (orphan collection)"},
	}
}
