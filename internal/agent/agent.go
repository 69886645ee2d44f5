// Package agent is the device agent (a mini-kubelet): it registers the
// device, heartbeats, follows its desired state, reconciles typed resources
// with one small reconciler per kind, and reports typed status. It keeps its
// last desired state on local disk and enforces it without the mesh.
package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/sony/gobreaker/v2"
	"golang.org/x/sync/errgroup"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/agent/containers"
	"github.com/harmony-fleet/harmony/internal/agent/files"
	"github.com/harmony-fleet/harmony/internal/agent/localstate"
	"github.com/harmony-fleet/harmony/internal/agent/shelljob"
	"github.com/harmony-fleet/harmony/internal/agent/units"
	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/failover"
	"github.com/harmony-fleet/harmony/internal/identity"
	"github.com/harmony-fleet/harmony/internal/mesh"
	"github.com/harmony-fleet/harmony/internal/relay"
	"github.com/harmony-fleet/harmony/internal/store"
)

// Options are hooks for tests and the dev command.
type Options struct {
	// Kinds adds or replaces reconcilers by kind name.
	Kinds map[string]Kind
	// ContainerPrefix goes before the podman name of every container this
	// agent runs, so that several agents can share one podman (harmony dev:
	// "dev-1-"). Status and conflicts use the name the spec gives.
	ContainerPrefix string
}

// Agent is one running agent. Build it with New, run it with Run.
type Agent struct {
	cfg    config.Agent
	log    *slog.Logger
	state  *localstate.Dir
	ledger *localstate.Ledger
	kinds  map[string]Kind
	boot   string
	units  *units.Manager // holds a D-Bus connection once used

	desired *desiredSet
	engine  *engine
	secrets *secretSource
	members *members // declared PostgreSQL members (postgres.go)
	status  *statusWriter

	retry   retryPolicy
	health  *health
	metrics *agentMetrics
	// spread is the reconnection window the control plane last advertised
	// (nanoseconds; 0 until heard): the agent spreads its reconnections
	// over it (mesh.ClientConfig.Spread).
	spread atomic.Int64
}

// New builds an agent from its configuration.
func New(cfg config.Agent, log *slog.Logger, opts Options) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	st, err := localstate.Open(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	ledger, err := st.Ledger()
	if err != nil {
		return nil, err
	}
	fm := files.NewUnder(cfg.RootDir, cfg.AllowedRoots)
	um := units.New(cfg.SystemdUnitDir, cfg.SystemdBus)
	allow := cfg.Allowed()
	kinds := map[string]Kind{
		v1.KindFile: fileKind{m: fm, specialModes: allow.Has(v1.CapabilitySpecialFileModes)},
		v1.KindContainer: containerKind{p: containers.NewPodman(cfg.Podman), files: fm,
			allowPrivileged: allow.Has(v1.CapabilityPrivilegedContainers), allowHostNetwork: allow.Has(v1.CapabilityHostNetwork),
			prefix: opts.ContainerPrefix},
		v1.KindSystemdUnit: unitKind{m: um, unitFiles: allow.Has(v1.CapabilitySystemdUnitFiles)},
		v1.KindShellJob: shellJobKind{r: shelljob.New(st, log.With("component", "shelljob")), enabled: allow.Has(v1.CapabilityShellJob),
			dir: cfg.RootDir},
	}
	for k, v := range opts.Kinds {
		kinds[k] = v
	}
	a := &Agent{cfg: cfg, log: log, state: st, ledger: ledger, kinds: kinds, boot: newBootID(), units: um, health: newHealth()}
	a.metrics = newAgentMetrics(a)
	a.retry = retryPolicy{initial: cfg.ReconnectInitial.Std(), max: cfg.ReconnectMax.Std(), mult: cfg.ReconnectMultiplier,
		jitter: cfg.ReconnectJitter, retries: a.metrics.retries}
	a.desired = newDesiredSet(cfg.ID, st, log, a.retry, a.health)
	a.status = newStatusWriter(cfg.ID, log, a.retry)
	a.engine = newEngine(a)
	a.secrets = newSecretSource(st, cfg.Buckets.Secrets)
	a.members = newMembers(a)
	a.kinds[v1.KindPostgresCluster] = postgresKind{m: a.members}
	return a, nil
}

func newBootID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Run runs the agent until ctx ends. It starts from the local cache at once
// and joins the mesh whenever it is reachable, for as long as it runs.
func (a *Agent) Run(ctx context.Context) error {
	defer a.units.Close()
	if err := a.desired.loadCache(); err != nil {
		a.log.Warn("desired-state cache unreadable; starting empty", "err", err)
	}
	a.health.restore(a.state.Path())
	defer a.health.record(a.state.Path())
	var ln net.Listener
	if a.cfg.HTTP != "" {
		l, err := net.Listen("tcp", a.cfg.HTTP)
		if err != nil {
			return &config.Error{Setting: "http", Reason: err.Error()}
		}
		ln = l
		a.log.Info("agent endpoints listening", "http", "http://"+ln.Addr().String())
	}
	// The identity's key as this run starts, read before the connection
	// reads it: a rotation in between is then seen as one.
	var firstKey string
	if a.cfg.NATSNkey != "" {
		firstKey = a.identityKey()
	}
	nc, err := mesh.Connect(mesh.ClientConfig{
		Name: "harmony-agent " + a.cfg.ID, URLs: a.cfg.NATSURLs, CredsFile: a.cfg.NATSCreds, NkeySeedFile: a.cfg.NATSNkey,
		InboxPrefix: inboxPrefix(a.cfg),
		CAFile:      a.cfg.NATSCA, CertFile: a.cfg.NATSCert, KeyFile: a.cfg.NATSKey, Logger: a.log,
		ReconnectWait: a.cfg.ReconnectInitial.Std(), ReconnectMax: a.cfg.ReconnectMax.Std(),
		ReconnectMultiplier: a.cfg.ReconnectMultiplier, ReconnectJitter: a.cfg.ReconnectJitter,
		PingInterval: a.cfg.PingInterval(),
		Spread:       func() time.Duration { return time.Duration(a.spread.Load()) },
		OnDisconnect: func() {
			a.metrics.disconnects.Inc()
			a.health.record(a.state.Path())
			a.health.setConnected(false)
		},
		OnReconnect: func() { a.metrics.reconnects.Inc(); a.health.setConnected(true) },
	})
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		return err
	}
	defer nc.Close()
	if nc.IsConnected() {
		a.health.setConnected(true)
	}
	st, err := a.openStore(nc)
	if err != nil {
		return err
	}
	a.secrets.setStore(st)
	a.members.setStore(st)
	parent := ctx
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.engine.run(ctx) })
	g.Go(func() error { return a.members.run(ctx) })
	g.Go(func() error { return a.meshLoop(ctx, nc, st) })
	if ln != nil {
		g.Go(func() error { return a.serveHTTP(ctx, ln) })
	}
	if a.cfg.Failover != nil {
		g.Go(func() error { return a.runFailover(ctx, st) })
	}
	if a.cfg.NATSNkey != "" {
		g.Go(func() error { return a.watchIdentity(ctx, firstKey) })
	}
	a.log.Info("agent started", "id", a.cfg.ID, "state_dir", a.cfg.StateDir, "boot", a.boot)
	err = g.Wait()
	a.log.Info("agent stopped")
	if parent.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		// Asked to stop: work cut short by that request is not a failure.
		return nil
	}
	return err
}

// meshLoop opens the buckets (waiting for the mesh as long as it takes),
// then runs everything that talks to the mesh.
func (a *Agent) meshLoop(ctx context.Context, nc *nats.Conn, st store.Store) error {
	b := a.cfg.Buckets
	var kvs map[string]store.KV
	err := a.retry.retryForever(ctx, a.log, "open buckets", func() error {
		kvs = map[string]store.KV{}
		for _, name := range []string{b.DesiredState, b.DeviceInfo, b.DeviceState, b.DeviceHeartbeat} {
			kv, err := st.Open(ctx, name)
			if err != nil {
				return err
			}
			kvs[name] = kv
		}
		return nil
	})
	if err != nil {
		return nil // ctx ended
	}
	// One circuit breaker for this agent's calls to the control plane.
	cb := newBreaker("store", a.cfg.BreakerFailures, a.cfg.BreakerOpen.Std(), func(from, to gobreaker.State) {
		a.log.Warn("circuit breaker", "from", from.String(), "to", to.String())
		a.metrics.breaker.WithLabelValues(from.String()).Set(0)
		a.metrics.breaker.WithLabelValues(to.String()).Set(1)
		a.health.setBreaker(to)
	})
	for name, kv := range kvs {
		if name != b.DesiredState {
			kvs[name] = breakerKV{KV: kv, cb: cb}
		}
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.publishInfo(ctx, kvs[b.DeviceInfo]) })
	g.Go(func() error { return a.heartbeat(ctx, kvs[b.DeviceHeartbeat], nc) })
	g.Go(func() error { return a.desired.follow(ctx, kvs[b.DesiredState], a.engine.wake) })
	g.Go(func() error { return a.status.run(ctx, kvs[b.DeviceState]) })
	g.Go(func() error { return a.serveCommands(ctx, nc) })
	return g.Wait()
}

// openStore is how the agent reaches its buckets. Its desired state is
// followed on the bucket's republished subjects (no consumer per device).
// A device identity has no JetStream API at all: every read and write goes
// through the control plane's relay, which checks it (package relay).
func (a *Agent) openStore(nc *nats.Conn) (store.Store, error) {
	recheck := 10 * a.cfg.ResyncInterval.Std()
	if a.cfg.NATSNkey == "" {
		return store.NewNATS(nc, store.NATSOptions{Timeout: a.cfg.StoreTimeout.Std(),
			WatchRepublished: true, RepublishRecheck: recheck})
	}
	b := a.cfg.Buckets
	republish := map[string]string{b.DesiredState: mesh.DesiredSubjectPrefix(b.DesiredState)}
	if f := a.cfg.Failover; f != nil {
		fb := failover.BucketName(f.Cluster)
		republish[fb] = store.RepublishPrefix(fb)
	}
	// A failover bucket is republished under its own prefix, whichever
	// cluster a declared member (postgres.go) turns out to be in.
	republishOf := func(bucket string) (string, bool) {
		if !strings.HasPrefix(bucket, failover.BucketName("")) {
			return "", false
		}
		return store.RepublishPrefix(bucket), true
	}
	return relay.NewClient(nc, relay.ClientOptions{Device: a.cfg.ID, Timeout: a.cfg.StoreTimeout.Std(),
		Republish: republish, RepublishOf: republishOf, Recheck: recheck, OnSpread: func(d time.Duration) { a.spread.Store(int64(d)) }}), nil
}

// ErrIdentityRotated ends Run when the device's identity file (nats_nkey)
// holds a new key: `harmony enroll` rotated it, and the old key no longer
// lets the agent in. The caller runs a new agent, which connects with it.
var ErrIdentityRotated = errors.New("agent: the device's NATS identity was rotated")

// identityCheckInterval is how often the identity file is looked at.
const identityCheckInterval = 2 * time.Second

// watchIdentity returns ErrIdentityRotated once the seed in nats_nkey has
// another public key than the one this run connected with. An unreadable
// or half-written file is no rotation: the agent keeps the key it has.
func (a *Agent) watchIdentity(ctx context.Context, first string) error {
	tick := time.NewTicker(identityCheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if now := a.identityKey(); now != "" && now != first {
			a.log.Info("device identity rotated: reconnecting with the new key", "public_key", now)
			return ErrIdentityRotated
		}
	}
}

// identityKey is the public key of the seed in nats_nkey ("" when it
// cannot be read).
func (a *Agent) identityKey() string {
	data, err := os.ReadFile(a.cfg.NATSNkey)
	if err != nil {
		return ""
	}
	p, err := identity.PublicKeyOfSeed(data)
	if err != nil {
		return ""
	}
	return p
}

func secondsDuration(s int) time.Duration { return time.Duration(s) * time.Second }

// inboxPrefix is where a device identity receives replies: only under its
// own prefix (mesh.DeviceInboxPrefix); other identities keep the default.
func inboxPrefix(cfg config.Agent) string {
	if cfg.NATSNkey == "" {
		return ""
	}
	return mesh.DeviceInboxPrefix(cfg.ID)
}
