package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/failover"
	"github.com/harmony-fleet/harmony/internal/identity"
	"github.com/harmony-fleet/harmony/internal/mesh"
	"github.com/harmony-fleet/harmony/internal/relay"
	"github.com/harmony-fleet/harmony/internal/store"
)

// serverRelay is the relay of devices' store requests with its metrics.
type serverRelay struct {
	*relay.Server
	metrics *relay.Metrics
}

// startRelay builds the relay that carries devices' reads and writes
// (docs/adr/0013-device-isolation.md) on a NATS connection of its own, so
// that a device flooding its relay subject slows that connection only;
// the store calls it makes go through the server's store connection.
// ReconnectRate is how many device connections a second the control plane
// asks its fleet to come back at after losing them (a restart, an
// election): devices spread their reconnections over enrolled devices /
// ReconnectRate (relay.HdrSpread), 5 s for 10,000 devices.
const ReconnectRate = 2000

// spreadFor is the reconnection window for a fleet of n devices.
func spreadFor(n int) time.Duration { return time.Duration(n) * time.Second / ReconnectRate }

func startRelay(cfg config.Server, ns *mesh.Server, self nkeys.KeyPair, st store.Store, kvs map[string]store.KV, devices func() int, log *slog.Logger) (*serverRelay, *nats.Conn, error) {
	var rnc *nats.Conn
	var err error
	if ns != nil {
		rnc, err = mesh.Connect(mesh.ClientConfig{Name: "harmony-server relay", InProcess: ns, Nkey: self, Logger: log})
	} else {
		rnc, err = mesh.Connect(mesh.ClientConfig{
			Name: "harmony-server relay", URLs: cfg.NATSURLs, CredsFile: cfg.NATSCreds,
			CAFile: cfg.NATSCA, CertFile: cfg.NATSCert, KeyFile: cfg.NATSKey, Logger: log,
		})
	}
	if err != nil {
		return nil, nil, fmt.Errorf("relay connection: %w", err)
	}
	b := cfg.Buckets
	ids := kvs[b.Identities]
	m := relay.NewMetrics()
	// A device's own heartbeat and status keys are read with direct gets
	// on the relay's connection: answered by the stream itself, in
	// parallel, rather than queued one by one behind JetStream's API (ten
	// thousand devices back from a restart each read their heartbeat
	// key). A direct get may lag a replicated bucket's leader by a moment;
	// the device writes those keys by compare-and-set, so a stale read is
	// a conflict and a read again. Desired state and device info, which
	// the relay checks writes against, stay on leader reads.
	direct, err := store.NewNATS(rnc, store.NATSOptions{Timeout: cfg.StoreTimeout.Std(), DirectGet: true})
	if err != nil {
		rnc.Close()
		return nil, nil, err
	}
	own := map[string]store.KV{}
	for _, name := range []string{b.DeviceState, b.DeviceHeartbeat, b.DevicePresence} {
		kv, err := direct.Open(context.Background(), name)
		if err != nil {
			rnc.Close()
			return nil, nil, fmt.Errorf("relay: open %s: %w", name, err)
		}
		own[name] = kv
	}
	rl := relay.NewServer(rnc, relay.Fleet{
		DesiredState: kvs[b.DesiredState], DeviceInfo: kvs[b.DeviceInfo],
		DeviceState: own[b.DeviceState], DeviceHeartbeat: own[b.DeviceHeartbeat], Secrets: kvs[b.Secrets],
	}, log.With("component", "relay"), relay.Options{
		MemberBucket: func(ctx context.Context, device string) (string, error) {
			return memberBucket(ctx, ids, kvs[b.DesiredState], device, func(ctx context.Context, cluster string) error {
				_, err := failover.EnsureBucket(ctx, st, cluster, cfg.Replicas)
				return err
			}, log)
		},
		OpenBucket: func(ctx context.Context, bucket string) (store.KV, error) { return st.Open(ctx, bucket) },
		Timeout:    cfg.StoreTimeout.Std(),
		Metrics:    m,
		Spread:     func() time.Duration { return spreadFor(devices()) },
		// Beats are answered from memory and recorded under this server's
		// name (docs/adr/0020-presence.md); a device silent for twice the
		// staleness is left out of the records.
		// A beat waits at most a quarter of the staleness to be written.
		Presence: &relay.Presence{KV: own[b.DevicePresence], Name: cfg.Name,
			Window: max(relay.DefaultPresenceWindow, 2*cfg.HeartbeatStaleness.Std()),
			Flush:  min(relay.DefaultPresenceFlush, cfg.HeartbeatStaleness.Std()/4)},
	})
	return &serverRelay{Server: rl, metrics: m}, rnc, nil
}

// memberBucket is the failover bucket a device's identity was granted
// ("" when none, or when the device has no identity record).
func memberBucket(ctx context.Context, ids, desired store.KV, device string, ensure func(context.Context, string) error, log *slog.Logger) (string, error) {
	if ids == nil {
		return "", nil
	}
	e, err := ids.Get(ctx, identity.DeviceKey(device))
	if errors.Is(err, store.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	r, err := identity.DecodeRecord(e.Value)
	if err != nil {
		return "", nil // unreadable: no bucket
	}
	if r.Cluster != "" {
		return failover.BucketName(r.Cluster), nil
	}
	// A member declared by a deployment (a PostgresCluster resource in
	// its desired state) is granted its cluster the first time it asks:
	// the record says so from then on, and its NATS permissions follow
	// (identity.Follow).
	cluster, err := declaredCluster(ctx, desired, device)
	if err != nil || cluster == "" {
		return "", err
	}
	if err := ensure(ctx, cluster); err != nil {
		return "", err
	}
	r.Cluster, r.Declared = cluster, true
	b, err := json.Marshal(r)
	if err != nil {
		return "", err
	}
	if _, err := ids.Update(ctx, identity.DeviceKey(device), b, e.Revision); err != nil {
		return "", err
	}
	log.Info("device granted the failover cluster its desired state declares", "device", device, "cluster", cluster)
	return failover.BucketName(cluster), nil
}

// grantSweep is how often the server looks for declared grants to take
// back.
const grantSweep = 15 * time.Second

// withdrawGrants takes back, every grantSweep, the failover cluster a
// device was granted because its desired state declared a member of it,
// once the desired state no longer does and the member has left the
// cluster (it has no heartbeat and no member record there). A member that
// was refused leave (the cluster's only synchronous standby) keeps its
// keys, and so its grant, until it can go.
func withdrawGrants(ctx context.Context, ids, desired store.KV, open func(context.Context, string) (store.KV, error), log *slog.Logger) {
	t := time.NewTicker(grantSweep)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		es, err := ids.List(ctx, identity.DeviceKey("*"))
		if err != nil {
			continue
		}
		// Each cluster's bucket is opened once a sweep.
		buckets := map[string]store.KV{}
		bucket := func(ctx context.Context, name string) (store.KV, error) {
			if kv, ok := buckets[name]; ok {
				return kv, nil
			}
			kv, err := open(ctx, name)
			if err == nil {
				buckets[name] = kv
			}
			return kv, err
		}
		for _, e := range es {
			r, err := identity.DecodeRecord(e.Value)
			if err != nil || !r.Declared || r.Cluster == "" {
				continue
			}
			if err := withdrawGrant(ctx, ids, desired, bucket, e, r, log); err != nil && ctx.Err() == nil {
				log.Warn("declared failover grant: cannot tell whether to take it back", "device", r.Device, "cluster", r.Cluster, "err", err)
			}
		}
	}
}

// withdrawGrant takes r's declared cluster back if its member has left.
func withdrawGrant(ctx context.Context, ids, desired store.KV, open func(context.Context, string) (store.KV, error), e store.Entry, r identity.Record, log *slog.Logger) error {
	cluster, err := declaredCluster(ctx, desired, r.Device)
	if err != nil || cluster == r.Cluster {
		return err
	}
	kv, err := open(ctx, failover.BucketName(r.Cluster))
	if err != nil {
		return err
	}
	for _, key := range []string{failover.HeartbeatPrefix + r.Device, failover.MemberPrefix + r.Device} {
		if _, err := kv.Get(ctx, key); !errors.Is(err, store.ErrNotFound) {
			return err // nil: still a member
		}
	}
	was := r.Cluster
	r.Cluster, r.Declared = "", false
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if _, err := ids.Update(ctx, e.Key, b, e.Revision); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil // changed meanwhile: the next sweep looks again
		}
		return err
	}
	log.Info("failover cluster taken back: its member left, and no deployment declares it on the device", "device", r.Device, "cluster", was)
	return nil
}

// declaredCluster is the cluster of the PostgresCluster resource in the
// device's desired state ("" when there is none).
func declaredCluster(ctx context.Context, desired store.KV, device string) (string, error) {
	if desired == nil {
		return "", nil
	}
	es, err := desired.List(ctx, device+".*")
	if err != nil {
		return "", err
	}
	for _, e := range es {
		ds, err := v1.DecodeDesiredState(e.Value)
		if err != nil || ds.Device != device {
			continue
		}
		for i, r := range ds.Resources {
			if r.Kind != v1.KindPostgresCluster {
				continue
			}
			spec, err := v1.DecodeSpec(fmt.Sprintf("resources[%d]", i), r)
			if err == nil {
				return spec.(*v1.PostgresClusterSpec).Cluster, nil
			}
		}
	}
	return "", nil
}

// registerMetrics adds collectors to the server's /metrics.
func (h *handler) registerMetrics(cs ...prometheus.Collector) {
	h.promReg.MustRegister(cs...)
}

// untilClosed returns an error once nc is closed while ctx is still live.
func untilClosed(ctx context.Context, nc *nats.Conn, what string) error {
	closed := nc.StatusChanged(nats.CLOSED)
	defer nc.RemoveStatusListener(closed)
	if nc.IsClosed() {
		return fmt.Errorf("the %s connection to NATS is closed: %v", what, nc.LastError())
	}
	select {
	case <-ctx.Done():
		return nil
	case <-closed:
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("the %s connection to NATS was closed: %v", what, nc.LastError())
	}
}
