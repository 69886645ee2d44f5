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
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/agent/containers"
	"github.com/harmony-fleet/harmony/internal/agent/files"
	"github.com/harmony-fleet/harmony/internal/agent/localstate"
	"github.com/harmony-fleet/harmony/internal/agent/shelljob"
	"github.com/harmony-fleet/harmony/internal/agent/units"
	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/mesh"
	"github.com/harmony-fleet/harmony/internal/store"
)

// Options are hooks for tests and the dev command.
type Options struct {
	// Kinds adds or replaces reconcilers by kind name.
	Kinds map[string]Kind
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
	status  *statusWriter
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
	fm := files.New(cfg.AllowedRoots)
	um := units.New(cfg.SystemdUnitDir, cfg.SystemdBus)
	kinds := map[string]Kind{
		v1.KindFile: fileKind{m: fm},
		v1.KindContainer: containerKind{p: containers.NewPodman(cfg.Podman), files: fm,
			allowPrivileged: cfg.AllowPrivileged, allowHostNetwork: cfg.AllowHostNetwork},
		v1.KindSystemdUnit: unitKind{m: um},
		v1.KindShellJob:    shellJobKind{r: shelljob.New(st, log.With("component", "shelljob")), enabled: cfg.ShellJobs},
	}
	for k, v := range opts.Kinds {
		kinds[k] = v
	}
	a := &Agent{cfg: cfg, log: log, state: st, ledger: ledger, kinds: kinds, boot: newBootID(), units: um}
	a.desired = newDesiredSet(cfg.ID, st, log)
	a.status = newStatusWriter(cfg.ID, log)
	a.engine = newEngine(a)
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
	nc, err := mesh.Connect(mesh.ClientConfig{
		Name: "harmony-agent " + a.cfg.ID, URLs: a.cfg.NATSURLs, CredsFile: a.cfg.NATSCreds,
		CAFile: a.cfg.NATSCA, CertFile: a.cfg.NATSCert, KeyFile: a.cfg.NATSKey, Logger: a.log,
	})
	if err != nil {
		return err
	}
	defer nc.Close()
	st, err := store.NewNATS(nc, store.NATSOptions{Timeout: a.cfg.StoreTimeout.Std()})
	if err != nil {
		return err
	}
	parent := ctx
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.engine.run(ctx) })
	g.Go(func() error { return a.meshLoop(ctx, nc, st) })
	if a.cfg.Failover != nil {
		g.Go(func() error { return a.runFailover(ctx, st) })
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
	err := retryForever(ctx, a.log, "open buckets", func() error {
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
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.publishInfo(ctx, kvs[b.DeviceInfo]) })
	g.Go(func() error { return a.heartbeat(ctx, kvs[b.DeviceHeartbeat]) })
	g.Go(func() error { return a.desired.follow(ctx, kvs[b.DesiredState], a.engine.wake) })
	g.Go(func() error { return a.status.run(ctx, kvs[b.DeviceState]) })
	g.Go(func() error { return a.serveCommands(ctx, nc) })
	return g.Wait()
}

func secondsDuration(s int) time.Duration { return time.Duration(s) * time.Second }

// retryForever calls f until it succeeds or ctx ends, with capped
// exponential backoff and jitter between attempts.
func retryForever(ctx context.Context, log *slog.Logger, what string, f func() error) error {
	bo := newBackoff(200*time.Millisecond, 10*time.Second)
	for {
		err := f()
		if err == nil {
			return nil
		}
		wait := bo.NextBackOff()
		log.Debug(what+" failed; retrying", "err", err, "after", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
}
