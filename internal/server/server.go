// Package server is the composition root of `harmony server`: it starts (or
// connects to) NATS, ensures the fleet buckets, runs the operator and serves
// HTTP. Every part runs under Run's context and stops with it.
package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"golang.org/x/sync/errgroup"

	"github.com/harmony-fleet/harmony/internal/agent/localstate"
	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/identity"
	"github.com/harmony-fleet/harmony/internal/mesh"
	"github.com/harmony-fleet/harmony/internal/operator"
	"github.com/harmony-fleet/harmony/internal/pki"
	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/web"
)

// Info describes a started server, for callers that picked port 0.
type Info struct {
	HTTPURL string // http://host:port, or https:// with TLS
	NATSURL string // client URL of the embedded server ("" when external)
	// CAFile is the CA that signs the server's certificate, when TLS is on
	// and the certificate was generated: agents and the CLI trust it.
	CAFile string
}

// Options are hooks for callers of Run.
type Options struct {
	// OnReady, when set, is called once HTTP is listening.
	OnReady func(Info)
}

// Run runs the server until ctx ends, then shuts everything down in order
// (HTTP, operator, NATS connection, embedded server) and returns.
//
// HTTP is served from the start: while NATS is starting or unreachable the
// dashboard says so, /healthz answers and the rest is 503, so that nobody
// finds a dead port or a blank page after a restart.
func Run(ctx context.Context, cfg config.Server, log *slog.Logger, opts Options) error {
	if err := cfg.LoadTokensFile(); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	tokens, key, err := dashboardSecrets(cfg, log)
	if err != nil {
		return err
	}
	g := &gate{}
	g.wait("connecting to NATS")
	dash, err := web.New(web.Options{Backend: g, Tokens: tokens, SessionKey: key, Log: log.With("component", "dashboard")})
	if err != nil {
		return err
	}
	g.dash = dash
	tlsConf, caFile, err := serverTLS(cfg, log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.HTTP)
	if err != nil {
		return fmt.Errorf("http listen %s: %w", cfg.HTTP, err)
	}
	info := Info{HTTPURL: "http://" + ln.Addr().String(), CAFile: caFile}
	if tlsConf != nil {
		ln = tls.NewListener(ln, tlsConf.Clone())
		info.HTTPURL = "https://" + ln.Addr().String()
	}
	httpSrv := &http.Server{Handler: g, ReadHeaderTimeout: 10 * time.Second,
		// Its own errors (a failed TLS handshake, say) go to the server's
		// log, not straight to stderr.
		ErrorLog: slog.NewLogLogger(log.With("component", "http").Handler(), slog.LevelWarn)}

	eg, ectx := errgroup.WithContext(ctx)
	// served is closed once HTTP has shut down, requests in flight
	// included (Serve itself returns as soon as the listener closes).
	served := make(chan struct{})
	eg.Go(func() error {
		if err := httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	})
	eg.Go(func() error {
		defer close(served)
		<-ectx.Done()
		shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return httpSrv.Shutdown(shutCtx)
	})
	eg.Go(func() error { return serve(ectx, cfg, log, g, info, tlsConf, opts, served) })
	log.Info("harmony server listening", "http", info.HTTPURL)
	err = eg.Wait()
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		err = nil // stopped while still waiting for the store: a clean stop
	}
	log.Info("harmony server stopped")
	return err
}

// serve starts (or connects to) NATS, ensures the buckets and runs the
// operator until ctx ends, handing the full HTTP handler to the gate once
// the store has answered. On the way out it lets HTTP stop (served) before
// the store connection goes, so requests in flight still reach it.
func serve(ctx context.Context, cfg config.Server, log *slog.Logger, g *gate, info Info, tlsConf *tls.Config, opts Options, served <-chan struct{}) error {
	var nc *nats.Conn
	var ns *mesh.Server
	// With nats_auth: identities the embedded NATS accepts only the
	// identities of the identities bucket, and this server's own
	// connection, whose key lives in memory for this run only.
	var fixed []*natsserver.NkeyUser
	var self nkeys.KeyPair
	if cfg.Embedded() && cfg.NATSAuth == "identities" {
		kp, err := nkeys.CreateUser()
		if err != nil {
			return err
		}
		pub, _ := kp.PublicKey()
		self, fixed = kp, []*natsserver.NkeyUser{{Nkey: pub}} // nil permissions: everything
	}
	// With identities, the embedded NATS lets devices in only once they
	// are loaded (and the relay answers): see the end of serve.
	listenLater := cfg.Embedded() && cfg.NATSAuth == "identities"
	if cfg.Embedded() {
		var err error
		ns, err = mesh.StartServer(mesh.ServerConfig{
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
			TLS:              tlsConf,
			Nkeys:            fixed,
			// Devices are let in once their identities are loaded and the
			// relay answers (below): a restarted server is not stormed by
			// a fleet it cannot yet tell apart.
			ListenLater:       listenLater,
			HybridKeyExchange: cfg.NATSKeyExchange == "hybrid",
		})
		if err != nil {
			return err
		}
		defer ns.Shutdown()
		info.NATSURL = ns.ClientURL()
		log.Info("embedded NATS started", "url", info.NATSURL, "data_dir", cfg.DataDir, "sync_always", cfg.SyncAlways, "nats_auth", cfg.NATSAuth, "max_connections", ns.MaxConnections())
		nc, err = mesh.Connect(mesh.ClientConfig{Name: "harmony-server", InProcess: ns, Nkey: self, Logger: log})
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
	defer func() {
		if ctx.Err() != nil { // a stop, not a failure: HTTP is shutting down
			<-served
		}
	}()

	st, err := store.NewNATS(nc, store.NATSOptions{Timeout: cfg.StoreTimeout.Std()})
	if err != nil {
		return err
	}
	g.wait("waiting for the store (JetStream) to answer")
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
		DevicePresence: kvs[b.DevicePresence], Secrets: kvs[b.Secrets], Rollouts: kvs[b.Rollouts],
	}, log.With("component", "operator"), operator.Options{Staleness: cfg.HeartbeatStaleness.Std(), Render: true, Lease: gc,
		Releases: kvs[b.Leases]}) // an admin's release of held orphan removals (collection.go)

	h := newHandler(nc, ns, st, op, gc, kvs, cfg, g.dash, log)
	h.registerMetrics(newOrphanCollector(op))
	g.h.Store(h)
	rl, rnc, err := startRelay(cfg, ns, self, st, kvs, h.reg.Keys.Devices, log)
	if err != nil {
		return err
	}
	defer rnc.Close()
	h.registerMetrics(rl.metrics.Collectors()...)

	eg, ectx := errgroup.WithContext(ctx)
	identitiesLoaded := make(chan struct{})
	if cfg.Embedded() {
		if err := registerAdmin(ctx, h.reg, cfg, log); err != nil {
			return err
		}
		if recs, _, err := h.reg.List(ctx); err == nil {
			for _, c := range clustersOf(recs) {
				h.ensureClusterBucket(ctx, c)
			}
			warnDescriptors(log, len(recs), ns.MaxConnections())
		}
		if cfg.NATSAuth == "identities" {
			eg.Go(func() error {
				var once sync.Once
				apply := func(users []*natsserver.NkeyUser) error {
					if err := ns.SetUsers(users); err != nil {
						return err
					}
					once.Do(func() { close(identitiesLoaded) })
					return nil
				}
				identity.Follow(ectx, kvs[b.Identities], fleetBuckets(cfg), fixed, apply, log.With("component", "identities"), h.reg.Keys)
				return nil
			})
		}
	}
	eg.Go(func() error { return op.Run(ectx) })
	eg.Go(func() error { return rl.Run(ectx) })
	// A connection NATS closed for good (not a disconnection, which is
	// retried forever) leaves this server without its store: stop, so that
	// the service manager starts it afresh, rather than answer from a view
	// that no longer follows the store.
	eg.Go(func() error { return untilClosed(ectx, nc, "store") })
	eg.Go(func() error { return untilClosed(ectx, rnc, "relay") })
	eg.Go(func() error { return gc.Run(ectx) })
	if ids := kvs[b.Identities]; ids != nil {
		eg.Go(func() error {
			withdrawGrants(ectx, ids, kvs[b.DesiredState], st.Open, log.With("component", "grants"))
			return nil
		})
	}
	eg.Go(func() error { h.probeStore(ectx); return nil })
	eg.Go(func() error {
		if listenLater {
			for _, ch := range []<-chan struct{}{identitiesLoaded, rl.Ready()} {
				select {
				case <-ch:
				case <-ectx.Done():
					return nil
				}
			}
			if err := ns.Listen(); err != nil {
				return err
			}
			info.NATSURL = ns.ClientURL()
			log.Info("embedded NATS listening for devices", "url", info.NATSURL)
		}
		log.Info("harmony server started", "http", info.HTTPURL)
		if opts.OnReady != nil {
			opts.OnReady(info)
		}
		return nil
	})
	return eg.Wait()
}

// serverTLS returns the TLS configuration of the HTTP address and the
// embedded NATS (nil when tls is off) and the CA file agents should trust
// ("" when the certificate was supplied).
func serverTLS(cfg config.Server, log *slog.Logger) (*tls.Config, string, error) {
	if cfg.TLS == "off" {
		return nil, "", nil
	}
	if cfg.TLSCert != "" {
		c, err := pki.ServerConfig(cfg.TLSCert, cfg.TLSKey)
		return c, "", err
	}
	host, _ := os.Hostname()
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if host != "" {
		hosts = append(hosts, host)
	}
	for _, addr := range []string{cfg.HTTP, cfg.NATSListen, cfg.ClientAdvertise} {
		if h, _, err := net.SplitHostPort(addr); err == nil && h != "" {
			if ip := net.ParseIP(h); ip == nil || !ip.IsUnspecified() {
				hosts = append(hosts, h)
			}
		}
	}
	hosts = append(hosts, cfg.TLSHosts...)
	p, err := pki.Ensure(filepath.Join(cfg.DataDir, "tls"), hosts, time.Now())
	if err != nil {
		return nil, "", err
	}
	c, err := pki.ServerConfig(p.Cert, p.Key)
	if err != nil {
		return nil, "", err
	}
	log.Info("TLS on: give agents and the CLI this CA", "ca", p.CA, "names", strings.Join(hosts, ","))
	return c, p.CA, nil
}

// fleetBuckets names the buckets a device identity may touch.
func fleetBuckets(cfg config.Server) mesh.FleetBuckets {
	b := cfg.Buckets
	return mesh.FleetBuckets{DesiredState: b.DesiredState, DeviceInfo: b.DeviceInfo, DeviceState: b.DeviceState, DeviceHeartbeat: b.DeviceHeartbeat}
}

// clustersOf lists the failover clusters named by identities, once each.
func clustersOf(recs []identity.Record) []string {
	seen := map[string]bool{}
	var out []string
	for _, r := range recs {
		if r.Cluster != "" && !seen[r.Cluster] {
			seen[r.Cluster] = true
			out = append(out, r.Cluster)
		}
	}
	return out
}

// AdminSeedFile is the nkey seed of this server's admin identity, which
// the `harmony failover` commands use (--nats-nkey) to reach NATS.
func AdminSeedFile(cfg config.Server) string { return filepath.Join(cfg.DataDir, "nats-admin.nk") }

// registerAdmin makes this server's admin identity on first start and
// records its public key in the identities bucket, where every member of
// a cluster finds it.
func registerAdmin(ctx context.Context, reg *identity.Registry, cfg config.Server, log *slog.Logger) error {
	path := AdminSeedFile(cfg)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		seed, _, gerr := identity.NewSeed()
		if gerr != nil {
			return gerr
		}
		if err := localstate.WriteFileAtomic(path, seed, 0o600); err != nil {
			return fmt.Errorf("admin identity: %w", err)
		}
		data = seed
	} else if err != nil {
		return fmt.Errorf("admin identity: %w", err)
	}
	pub, err := identity.PublicKeyOfSeed(data)
	if err != nil {
		return fmt.Errorf("admin identity %s: %w", path, err)
	}
	for {
		err := reg.SetAdmin(ctx, identity.Admin{Name: cfg.Name, PublicKey: pub})
		if err == nil {
			log.Info("admin NATS identity", "seed", path)
			return nil
		}
		if !store.Retryable(err) || ctx.Err() != nil {
			return fmt.Errorf("admin identity: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
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

// descriptorsPerDevice is what one device costs the server in open files:
// its agent's one NATS connection (a failover member shares it; TLS adds
// none). The rest of the limit is kept for the server itself
// (mesh's connection limit).
const descriptorsPerDevice = 1

// warnDescriptors says at start-up when the open-files limit leaves fewer
// client connections than the enrolled devices need (plus a tenth to
// spare, for operators' tools and agents reconnecting): past the limit
// the embedded NATS refuses connections, and those devices stay offline.
func warnDescriptors(log *slog.Logger, devices, maxConn int) {
	need := devices*descriptorsPerDevice + devices/10
	if devices == 0 || need <= maxConn {
		return
	}
	log.Warn("the open-files limit is too low for the enrolled devices: raise it (LimitNOFILE= in the systemd unit, ulimit -n)",
		"enrolled_devices", devices, "connections_needed", need, "connections_allowed", maxConn,
		"descriptors_per_device", descriptorsPerDevice)
}
