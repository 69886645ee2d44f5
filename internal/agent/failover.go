package agent

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/failover"
	"github.com/harmony-fleet/harmony/internal/failover/guard"
	"github.com/harmony-fleet/harmony/internal/failover/peer"
	"github.com/harmony-fleet/harmony/internal/failover/pg"
	"github.com/harmony-fleet/harmony/internal/store"
)

// runFailover runs the PostgreSQL high-availability role: the failover
// loop (which opens or creates the cluster's bucket and names the local
// PostgreSQL the first primary of a cluster that has no state yet when it
// is a primary), its failsafe listener, guard and HTTP endpoints, until
// ctx ends.
func (a *Agent) runFailover(ctx context.Context, st store.Store) error {
	return a.runMember(ctx, st, a.cfg.Failover, failoverExtras{})
}

// failoverExtras are what a declared member (postgres.go) adds to a
// failover section: its password file and log file, and who wants its
// loop once it exists.
type failoverExtras struct {
	passFile, logFile string
	started           func(*failover.Loop)
}

// runMember runs one failover member until ctx ends.
func (a *Agent) runMember(ctx context.Context, st store.Store, f *config.Failover, x failoverExtras) error {
	log := a.log.With("component", "failover", "cluster", f.Cluster, "node", f.Node)
	t := f.Timings()
	in := &pg.Instance{Name: f.Node, BinDir: f.Postgres.BinDir, DataDir: f.Postgres.DataDir, Port: f.Postgres.Port,
		SocketDir: f.Postgres.SocketDir, OSUser: f.Postgres.OSUser, Superuser: f.Postgres.Superuser,
		MaxSlotWALKeep: f.Postgres.MaxSlotWALKeepSize, PassFile: x.passFile, LogFile: x.logFile}
	strategy := failover.Strategy(f.Strategy)

	// A node whose PostgreSQL is a primary when the agent starts names
	// itself the first primary of a cluster that has no state yet. The role
	// is read before anything else: the loop may fence that PostgreSQL.
	startedPrimary := false
	if role, err := in.Role(ctx); err == nil && role == pg.RolePrimary {
		startedPrimary = true
	}
	open := func(ctx context.Context) (store.KV, error) {
		if a.cfg.NATSNkey != "" {
			// A device identity may use its cluster's bucket but not
			// create it: the server does when it grants the identity.
			return st.Open(ctx, failover.BucketName(f.Cluster))
		}
		return failover.EnsureBucket(ctx, st, f.Cluster, f.Replicas)
	}
	// The loop opens the bucket itself: while the store does not answer,
	// its machine decides (an AbsoluteConsistency primary that cannot read
	// cluster-state fences until it can).
	lc := failover.LoopConfig{Cluster: f.Cluster, Node: f.Node, Timings: t, Strategy: strategy,
		PG: in, AdvertiseHost: f.Postgres.Host, MaxLag: uint64(f.MaxLagOnFailover), Open: open, Bootstrap: startedPrimary,
		PassFile: x.passFile}
	var peerLn net.Listener
	var id peer.Identity
	var err error
	if f.Peer != "" {
		// The failsafe: members answer each other over mutual TLS, each
		// pinned to the other's identity key (the device's nkey; an
		// agent without one makes a key for this run), which heartbeats
		// publish through the store.
		if id, err = peer.LoadIdentity(a.cfg.NATSNkey); err != nil {
			return fmt.Errorf("failover.peer: %w", err)
		}
		if peerLn, err = net.Listen("tcp", f.Peer); err != nil {
			return fmt.Errorf("failover.peer: %w", err)
		}
		defer peerLn.Close()
		_, port, _ := net.SplitHostPort(peerLn.Addr().String())
		client := peer.NewClient(id)
		defer client.Close()
		lc.Failsafe, lc.PeerAddr, lc.PeerKey = promiser{client}, f.PeerAddress(port), id.PublicKey()
	}
	if f.GuardOn() {
		// The guard stops this PostgreSQL when the agent stops renewing
		// its licence to serve (it died, hung or froze); it outlives the
		// agent, and a restarted agent attaches to it again.
		g, err := guard.Attach(ctx, guard.ClientConfig{Socket: filepath.Join(a.cfg.StateDir, "guard-"+f.Cluster+".sock"),
			DataDir: f.Postgres.DataDir, Watchdog: f.Watchdog, LogFile: filepath.Join(a.cfg.StateDir, "guard-"+f.Cluster+".log")})
		if err != nil {
			// Never a reason not to run: the loop's own fencing stands.
			log.Error("guard not started: nothing stops PostgreSQL if this agent dies", "err", err)
		} else {
			defer g.Close()
			lc.Guard = g
		}
	}
	loop, err := failover.NewLoop(lc, nil, log)
	if err != nil {
		return err
	}
	if x.started != nil {
		x.started(loop)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return loop.Run(ctx) })
	if peerLn != nil {
		srv, err := peer.NewServer(peer.ServerConfig{Identity: id, Cluster: f.Cluster, Trusted: loop.MemberByKey, Log: log,
			Handle: func(_ context.Context, from string, req peer.Request) peer.Response {
				ok, lease := loop.Promise(from, req.Epoch)
				if !ok {
					return peer.Response{Reason: "not a replica of " + from + " at epoch " + fmt.Sprint(req.Epoch)}
				}
				return peer.Response{Granted: true, Lease: lease}
			}})
		if err != nil {
			return fmt.Errorf("failover.peer: %w", err)
		}
		log.Info("failsafe listening", "peer", peerLn.Addr().String(), "advertised", lc.PeerAddr, "key", lc.PeerKey)
		g.Go(func() error { return srv.Serve(ctx, peerLn) })
	}
	if f.HTTP != "" {
		ln, err := net.Listen("tcp", f.HTTP)
		if err != nil {
			return fmt.Errorf("failover.http: %w", err)
		}
		log.Info("failover endpoints listening", "http", "http://"+ln.Addr().String())
		g.Go(func() error { return serve(ctx, ln, loop.Handler()) })
	}
	return g.Wait()
}

// promiser carries the loop's failsafe requests over the peer transport.
type promiser struct{ c *peer.Client }

func (p promiser) Ask(ctx context.Context, addr, key string, req failover.PromiseRequest) (bool, time.Duration, error) {
	r, err := p.c.Ask(ctx, addr, key, peer.Request{Cluster: req.Cluster, From: req.From, Epoch: req.Epoch})
	return r.Granted, r.Lease, err
}
