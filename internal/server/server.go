// Package server is the composition root of `harmony server`: it starts (or
// connects to) NATS, ensures the fleet buckets, runs the operator and serves
// HTTP. Every part runs under Run's context and stops with it.
package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"

	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/mesh"
	"github.com/harmony-fleet/harmony/internal/operator"
	"github.com/harmony-fleet/harmony/internal/store"
)

// Info describes a started server, for callers that picked port 0.
type Info struct {
	HTTPURL string // http://host:port
	NATSURL string // client URL of the embedded server ("" when external)
}

// Options are hooks for callers of Run.
type Options struct {
	// OnReady, when set, is called once HTTP is listening.
	OnReady func(Info)
}

// Run runs the server until ctx ends, then shuts everything down in order
// (HTTP, operator, NATS connection, embedded server) and returns.
func Run(ctx context.Context, cfg config.Server, log *slog.Logger, opts Options) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	var info Info
	var nc *nats.Conn
	if cfg.Embedded() {
		if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
		ns, err := mesh.StartServer(mesh.ServerConfig{
			Name:             cfg.Name,
			DataDir:          filepath.Join(cfg.DataDir, "nats"),
			Listen:           cfg.NATSListen,
			SyncAlways:       cfg.SyncAlways,
			ClusterName:      cfg.ClusterName,
			ClusterListen:    cfg.ClusterListen,
			Routes:           cfg.Routes,
			ClusterAdvertise: cfg.ClusterAdvertise,
			ClientAdvertise:  cfg.ClientAdvertise,
			NoAdvertise:      cfg.NoAdvertise,
			Logger:           log.With("component", "nats"),
		})
		if err != nil {
			return err
		}
		defer ns.Shutdown()
		info.NATSURL = ns.ClientURL()
		log.Info("embedded NATS started", "url", info.NATSURL, "data_dir", cfg.DataDir, "sync_always", cfg.SyncAlways)
		nc, err = mesh.Connect(mesh.ClientConfig{Name: "harmony-server", InProcess: ns, Logger: log})
		if err != nil {
			return err
		}
	} else {
		var err error
		nc, err = mesh.Connect(mesh.ClientConfig{
			Name: "harmony-server", URLs: cfg.NATSURLs, CredsFile: cfg.NATSCreds,
			CAFile: cfg.NATSCA, CertFile: cfg.NATSCert, KeyFile: cfg.NATSKey, Logger: log,
		})
		if err != nil {
			return err
		}
	}
	defer nc.Close()

	st, err := store.NewNATS(nc, store.NATSOptions{Timeout: cfg.StoreTimeout.Std()})
	if err != nil {
		return err
	}
	kvs, err := ensureBuckets(ctx, st, cfg, log)
	if err != nil {
		return err
	}
	b := cfg.Buckets
	var op *operator.Operator
	// Only a server whose view is rebuilt may hold the lease: orphans are
	// judged from that view.
	gc := store.NewLease(kvs[b.Leases], "orphan-gc", leaseHolder(cfg.Name), store.LeaseOptions{Log: log.With("component", "lease"),
		Eligible: func() bool { return op.Phase() == operator.Converged }})
	op = operator.New(operator.Buckets{
		Deployments: kvs[b.Deployments], DesiredState: kvs[b.DesiredState], DeviceInfo: kvs[b.DeviceInfo],
		DeviceState: kvs[b.DeviceState], DeviceHeartbeat: kvs[b.DeviceHeartbeat], DeviceLabels: kvs[b.DeviceLabels],
	}, log.With("component", "operator"), operator.Options{Staleness: cfg.HeartbeatStaleness.Std(), Render: true, Lease: gc})

	ln, err := net.Listen("tcp", cfg.HTTP)
	if err != nil {
		return fmt.Errorf("http listen %s: %w", cfg.HTTP, err)
	}
	info.HTTPURL = "http://" + ln.Addr().String()
	h := newHandler(nc, op, gc, kvs, cfg, log)
	httpSrv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return op.Run(gctx) })
	g.Go(func() error { return gc.Run(gctx) })
	g.Go(func() error { h.probeStore(gctx); return nil })
	g.Go(func() error {
		if err := httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return httpSrv.Shutdown(shutCtx)
	})
	log.Info("harmony server started", "http", info.HTTPURL)
	if opts.OnReady != nil {
		opts.OnReady(info)
	}
	err = g.Wait()
	log.Info("harmony server stopped")
	return err
}

// leaseHolder names this process in leases: the server's name and a
// random suffix, so that a restarted server does not mistake its previous
// life's claim for its own.
func leaseHolder(name string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return name + "-" + hex.EncodeToString(b[:])
}

// ensureBuckets creates missing buckets and checks existing ones, retrying
// while the store is unavailable (an external NATS that is still starting)
// until ctx ends. An incompatible bucket stops start-up.
func ensureBuckets(ctx context.Context, st store.Store, cfg config.Server, log *slog.Logger) (map[string]store.KV, error) {
	kvs := map[string]store.KV{}
	for _, bc := range FleetBuckets(cfg) {
		for {
			kv, err := st.Ensure(ctx, bc)
			if err == nil {
				kvs[bc.Name] = kv
				break
			}
			if !store.Retryable(err) || ctx.Err() != nil {
				return nil, err
			}
			log.Warn("store not ready; retrying", "bucket", bc.Name, "err", err)
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Second):
			}
		}
	}
	return kvs, nil
}
