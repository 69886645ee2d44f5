// Package fleetbench measures how far harmony servers go: it starts one
// server, or three forming one JetStream cluster (child processes, so that
// their CPU time and memory are their own), runs N simulated devices in
// this process (the real agent, its NATS connection, desired-state watch,
// status and heartbeats, with instant reconcilers), applies M deployments,
// changes one (at once, or batch by batch with a spec.rollout), restarts
// each server in turn and reports what each step cost, in total and per
// device.
package fleetbench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/agent"
	"github.com/harmony-fleet/harmony/internal/agent/localstate"
	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/mesh"
	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/web"
)

// Config is one run.
type Config struct {
	Devices     int
	Deployments int // at least 1: deployment 0 selects every device
	// Heartbeat is the simulated agents' heartbeat interval.
	Heartbeat time.Duration
	// Idle is how long the idle window lasts (server CPU and traffic with
	// the fleet converged and only heartbeats flowing). Devices started at
	// once heartbeat nearly in step: a window that is not a multiple of
	// Heartbeat holds more or fewer rounds than its length says.
	Idle time.Duration
	// Timeout bounds each wait (all online, a rollout, the restart).
	Timeout time.Duration
	// Server is the command that runs `harmony server` (its flags are
	// appended); the running executable by default.
	Server []string
	// Dir holds the server's data ("" = a temporary directory); the
	// simulated devices keep their local state in memory-backed storage
	// when the machine has it (/dev/shm), since a real device has a disk
	// of its own.
	Dir string
	Log *slog.Logger
	// Progress receives a line per step (nil: quiet).
	Progress io.Writer
	// Profile, when set, is where the server writes a CPU profile of its
	// first life (apply, change and idle), and Profile+".heap" its heap
	// when that life ends.
	Profile string
	// Insecure runs the server with TLS and NATS identities off (devices
	// connect unauthenticated, with the JetStream API). By default the
	// bench measures the product as shipped: TLS on, every device enrolled
	// with a one-time token of its own and connected under its identity
	// through the relay.
	Insecure bool
	// Servers is 1 (the default) or 3: three `harmony server` processes on
	// this machine forming one JetStream cluster as docs/install.md sets
	// one up (buckets at three replicas, one CA, shared tokens). Devices
	// get all three client URLs and spread over them; the bench enrolls
	// and applies through the first server's API.
	Servers int
	// RolloutBatches, when above 0, gives deployment 0 a spec.rollout of
	// that many batches (n-1 of ⌈100/n⌉ percent, then percent 100; gate
	// readyForSeconds 0): its creation still goes to every device at
	// once, and the change step becomes a rollout batch by batch, timed
	// per batch from the rollout status (docs/operator.md "Rolling out
	// in batches"). 0: no spec.rollout, the change goes everywhere at once.
	RolloutBatches int
}

// Latencies are per-device times from an apply to the device's succeeded
// status, in the order of the device ids.
type Latencies []time.Duration

// Quantile returns the q-quantile (0..1), nearest rank.
func (l Latencies) Quantile(q float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := append(Latencies(nil), l...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// Result is what a run measured. Every "until" is read where users read
// it: the API's roll-up (GET /api/v1/status and /api/v1/deployments).
//
// With three servers every server figure is over all three: CPU time,
// memory, descriptors and NATS traffic summed (traffic then counts what
// the members route to each other too), and the busiest or largest server
// beside the sum where it says so.
type Result struct {
	Devices, Deployments int
	Insecure             bool
	Servers              int
	// Err is why the run failed ("" when it completed); the figures it
	// reached before are kept.
	Err string
	// Start: from starting every device at once until each has
	// heartbeated and the roll-up counts every device online.
	Start time.Duration
	// Apply: every device's time to report success on all its
	// deployments after the first apply; Change: after one deployment
	// (every device's) got a new generation (from the device-state
	// bucket, per device).
	Apply, Change Latencies
	// ApplyTotal, ChangeTotal: until the roll-up counts every matched
	// device succeeded at the new generation on every deployment.
	ApplyTotal, ChangeTotal time.Duration
	// Restart: from starting the server again on its data until every
	// device has heartbeated again (reconnected) and the roll-up is back
	// to its counts before the restart; Ready: until /readyz answered.
	// With three servers each is restarted in turn (a rolling restart,
	// each once every stream has caught up) and every server's roll-up
	// must be back; the longest of the three. Devices on the two other
	// servers keep their connections and heartbeat on their own schedule,
	// so a restart in a cluster takes up to a heartbeat interval.
	Restart, Ready time.Duration
	// RolloutCPU: CPU time of the servers during the first rollout;
	// IdleCPUShare: during the idle window, as a share of one core (and
	// of the busiest server, IdleCPUShareMax).
	RolloutCPU      time.Duration
	IdleCPUShare    float64
	IdleCPUShareMax float64
	// PeakRSS (bytes): each server's highest kernel high-water mark
	// (VmHWM) over its lives, read when each life ends (after the storm);
	// PeakRSSMax: the largest server's. BaseRSS: the servers' VmHWM once
	// they were ready, before any device was enrolled (0 devices).
	PeakRSS, PeakRSSMax, BaseRSS uint64
	// Traffic through the servers' NATS during the first rollout and the
	// idle window.
	RolloutRate, IdleRate Rate
	Consumers             int // JetStream consumers with every device online
	Connections           int
	// FDsBefore, FDsOnline: descriptors the servers have open
	// (/proc/PID/fd) just before the devices start, and once every
	// device is online.
	FDsBefore, FDsOnline int
	// What one device costs the servers, for projections (0 when not
	// measured): RSSPerDevice, bytes of (PeakRSS - BaseRSS); IdleCPUPerDevice,
	// share of a core of IdleCPUShare; IdleMsgsPerDevice, NATS messages
	// received per second of IdleRate; FDsPerDevice, descriptors of
	// FDsOnline - FDsBefore.
	RSSPerDevice, IdleCPUPerDevice, IdleMsgsPerDevice, FDsPerDevice float64
	// ChangeCPU: CPU time of the servers during the change step (apply to
	// every device succeeded, and with batches the rollout Succeeded).
	// The operator runs inside the server process: this is its CPU and
	// the rest of the server's (NATS, the relay, the API).
	ChangeCPU time.Duration
	// RolloutBatches is Config.RolloutBatches. Batches: each batch's time
	// in the change, as the rollout status polled every rolloutPoll shows
	// it: the first from the apply, each next from the previous one's
	// Done, until the poll that first saw it Done (a failed run keeps the
	// batches done before it failed). BatchDevices: each batch's devices.
	RolloutBatches int
	Batches        []time.Duration
	BatchDevices   []int
	// StatusPolls: rollout status requests the bench made during the
	// change (their server CPU is in ChangeCPU); StatusPollCPU: the server
	// CPU one costs, measured after the change (0 without batches).
	StatusPolls   int
	StatusPollCPU time.Duration
}

// perDevice fills in what one device costs from the totals.
func (r *Result) perDevice() {
	if r.Devices < 1 {
		return
	}
	n := float64(r.Devices)
	if r.PeakRSS > 0 && r.BaseRSS > 0 {
		r.RSSPerDevice = (float64(r.PeakRSS) - float64(r.BaseRSS)) / n
	}
	r.IdleCPUPerDevice = r.IdleCPUShare / n
	r.IdleMsgsPerDevice = r.IdleRate.InMsgs / n
	if r.FDsOnline > 0 {
		r.FDsPerDevice = float64(r.FDsOnline-r.FDsBefore) / n
	}
}

// Rate is NATS traffic per second.
type Rate struct {
	InMsgs, OutMsgs, InBytes, OutBytes float64
}

// Run runs one benchmark.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Devices < 1 || cfg.Deployments < 1 {
		return Result{}, errors.New("fleetbench: at least one device and one deployment")
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = config.DefaultAgent().HeartbeatInterval.Std()
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Minute
	}
	if cfg.Servers == 0 {
		cfg.Servers = 1
	}
	if cfg.Servers != 1 && cfg.Servers != 3 {
		return Result{}, fmt.Errorf("fleetbench: %d servers: 1 or 3", cfg.Servers)
	}
	if cfg.RolloutBatches < 0 || cfg.RolloutBatches > v1.MaxRolloutBatches {
		return Result{}, fmt.Errorf("fleetbench: %d rollout batches: 0 (off) to %d", cfg.RolloutBatches, v1.MaxRolloutBatches)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if len(cfg.Server) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return Result{}, err
		}
		cfg.Server = []string{exe}
	}
	b := &bench{cfg: cfg, res: Result{Devices: cfg.Devices, Deployments: cfg.Deployments, Insecure: cfg.Insecure, Servers: cfg.Servers,
		RolloutBatches: cfg.RolloutBatches}}
	res, err := b.run(ctx)
	if err != nil {
		res.Err = err.Error()
	}
	// Every server has stopped and left the peak of its last life.
	res.PeakRSS, res.PeakRSSMax = b.peakRSS()
	res.perDevice()
	return res, err
}

type bench struct {
	cfg     Config
	res     Result
	simDir  string
	members []*member // the servers
	api     *member   // the server whose API the bench uses (the first)
	token   string
	tokens  string // the tokens file given to every server
	http    *http.Client
	scheme  string // of the HTTP API: https unless insecure
	seeds   string // directory of the devices' nkey seeds ("" insecure)
}

func (b *bench) say(format string, args ...any) {
	if b.cfg.Progress != nil {
		fmt.Fprintf(b.cfg.Progress, format+"\n", args...)
	}
}

func (b *bench) run(ctx context.Context) (Result, error) {
	dir := b.cfg.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "harmony-bench-")
		if err != nil {
			return b.res, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	// The bench's own admin token, whatever the environment says, in one
	// tokens file every server reads (docs/dashboard.md: servers of a
	// cluster share their tokens).
	var secret [16]byte
	_, _ = rand.Read(secret[:])
	b.token = hex.EncodeToString(secret[:])
	b.tokens = filepath.Join(dir, "tokens.yaml")
	if err := os.WriteFile(b.tokens, []byte("- {name: bench, role: admin, sha256: "+web.HashToken(b.token)+"}\n"), 0o600); err != nil {
		return b.res, err
	}
	sims, err := os.MkdirTemp(memDir(), "harmony-bench-devices-")
	if err != nil {
		return b.res, err
	}
	defer os.RemoveAll(sims)
	b.simDir = sims
	if err := b.newMembers(dir); err != nil {
		return b.res, err
	}
	b.scheme = "https"
	if b.cfg.Insecure {
		b.scheme = "http"
	}
	b.http = &http.Client{Timeout: time.Minute}
	defer b.stopServers() // never leave a child running
	if err := b.startServers(ctx); err != nil {
		return b.res, err
	}
	if len(b.members) > 1 {
		b.say("%d servers ready, one JetStream cluster", len(b.members))
	}
	b.res.BaseRSS, _ = b.peakRSS()
	var ca string
	if !b.cfg.Insecure {
		ca = filepath.Join(b.api.dataDir, "tls", "ca.pem") // the one CA of every server
		b.seeds = filepath.Join(dir, "seeds")
		b.say("enrolling %d devices, each with a one-time token of its own", b.cfg.Devices)
		t0 := time.Now()
		if err := b.enrollDevices(ctx); err != nil {
			return b.res, err
		}
		b.say("enrolled %d devices in %s", b.cfg.Devices, time.Since(t0).Round(time.Millisecond))
	}

	// Devices run until the end of the run.
	simCtx, stopSims := context.WithCancel(ctx)
	g, gctx := errgroup.WithContext(simCtx)
	defer func() { stopSims(); _ = g.Wait() }()

	cc := mesh.ClientConfig{Name: "harmony bench", URLs: b.natsURLs()}
	if !b.cfg.Insecure {
		cc.CAFile, cc.NkeySeedFile = ca, filepath.Join(b.api.dataDir, "nats-admin.nk")
	}
	nc, err := mesh.Connect(cc)
	if err != nil {
		return b.res, err
	}
	defer nc.Close()
	st, err := store.NewNATS(nc, store.NATSOptions{Timeout: 10 * time.Second})
	if err != nil {
		return b.res, err
	}
	buckets := config.DefaultServer().Buckets
	states, err := newStateWatch(ctx, st, buckets.DeviceState, cfgDevices(b.cfg.Devices))
	if err != nil {
		return b.res, err
	}
	defer states.stop()
	beats, err := openBeats(ctx, st, buckets)
	if err != nil {
		return b.res, err
	}

	b.res.FDsBefore = b.serverFDs()
	b.say("starting %d simulated devices at once", b.cfg.Devices)
	t0 := time.Now()
	if err := b.startDevices(g, gctx, ca); err != nil {
		return b.res, err
	}
	if err := b.waitOnline(ctx, beats, t0); err != nil {
		return b.res, fmt.Errorf("first start: %w", err)
	}
	b.res.Start = time.Since(t0)
	b.say("all %d devices online (heartbeats and roll-up) after %s", b.cfg.Devices, b.res.Start.Round(time.Millisecond))
	b.res.FDsOnline = b.serverFDs()
	if m, err := b.metrics(); err == nil {
		b.res.Consumers, b.res.Connections = int(m["harmony_jetstream_consumers"]), int(m["harmony_nats_connections"])
	}
	if len(b.members) > 1 {
		var spread []string
		for _, m := range b.members {
			sum := map[string]float64{}
			if err := b.scrape(m, sum); err == nil {
				spread = append(spread, fmt.Sprintf("%s %.0f", m.name, sum["harmony_nats_connections"]))
			}
		}
		b.say("NATS connections per server: %s", strings.Join(spread, ", "))
	}

	// First apply: M deployments.
	cpu0, m0 := b.serverCPU(), b.metricsOrEmpty()
	t0 = time.Now()
	want := b.expectations(1)
	if err := b.apply("one"); err != nil {
		return b.res, err
	}
	lat, err := states.wait(ctx, want, t0, b.cfg.Timeout)
	if err != nil {
		return b.res, fmt.Errorf("first rollout: %w", err)
	}
	if err := b.waitRollup(ctx, []*member{b.api}, b.rolledOut(1, -1)); err != nil {
		return b.res, fmt.Errorf("first rollout: %w", err)
	}
	b.res.ApplyTotal = time.Since(t0)
	b.res.RolloutCPU = b.serverCPU() - cpu0
	b.res.RolloutRate = rate(m0, b.metricsOrEmpty(), b.res.ApplyTotal)
	b.res.Apply = lat
	b.say("apply %d deployments: the roll-up counts every device succeeded after %s (per device p50 %s, p99 %s)", b.cfg.Deployments,
		b.res.ApplyTotal.Round(time.Millisecond), lat.Quantile(0.5).Round(time.Millisecond), lat.Quantile(0.99).Round(time.Millisecond))

	// Change deployment 0, which every device has (change.go).
	if err := b.change(ctx, states); err != nil {
		return b.res, fmt.Errorf("change: %w", err)
	}

	// Idle: heartbeats only.
	if b.cfg.Idle > 0 {
		if b.cfg.Idle%b.cfg.Heartbeat != 0 {
			b.say("note: the idle window (%s) is not a multiple of the heartbeat interval (%s), and the devices heartbeat nearly in step: idle traffic and CPU depend on how many rounds fall into it",
				b.cfg.Idle, b.cfg.Heartbeat)
		}
		cpu0, m0 := b.cpuTimes(), b.metricsOrEmpty()
		select {
		case <-ctx.Done():
			return b.res, ctx.Err()
		case <-time.After(b.cfg.Idle):
		}
		for m, cpu := range b.cpuTimes() {
			share := (cpu - cpu0[m]).Seconds() / b.cfg.Idle.Seconds()
			b.res.IdleCPUShare += share
			b.res.IdleCPUShareMax = max(b.res.IdleCPUShareMax, share)
		}
		b.res.IdleRate = rate(m0, b.metricsOrEmpty(), b.cfg.Idle)
		b.say("idle %s: server CPU %.1f%% of a core, %.0f msgs/s in", b.cfg.Idle, 100*b.res.IdleCPUShare, b.res.IdleRate.InMsgs)
	}

	for _, m := range b.members {
		if err := b.restart(ctx, m, nc, beats); err != nil {
			return b.res, fmt.Errorf("restart %s: %w", m.label(), err)
		}
	}
	return b.res, nil
}

// restart stops m, starts it again on its data and waits until every
// device has heartbeated since and every server's roll-up is back to what
// it was before the stop. In a cluster it first waits until every stream
// has caught up, as users are told to before they stop the next member.
func (b *bench) restart(ctx context.Context, m *member, nc *nats.Conn, beats beatBuckets) error {
	if len(b.members) > 1 {
		t0 := time.Now()
		if err := b.waitCaughtUp(ctx, nc); err != nil {
			return err
		}
		b.say("every stream caught up after %s", time.Since(t0).Round(time.Millisecond))
	}
	before, err := b.rollup(b.api)
	if err != nil {
		return err
	}
	b.stopMember(m)
	t0 := time.Now()
	if err := b.startMember(m); err != nil {
		return err
	}
	if err := b.waitReady(ctx, m); err != nil {
		return err
	}
	ready := time.Since(t0)
	if err := b.waitOnline(ctx, beats, t0); err != nil {
		return err
	}
	if err := b.waitRollup(ctx, b.members, func(r rollupView) error { return r.same(before) }); err != nil {
		return err
	}
	took := time.Since(t0)
	b.res.Ready, b.res.Restart = max(b.res.Ready, ready), max(b.res.Restart, took)
	b.say("%s restarted: ready after %s; every device back and the roll-up restored after %s",
		m.label(), ready.Round(time.Millisecond), took.Round(time.Millisecond))
	return nil
}

// natsURLs are every server's client URL, as agents are given them.
func (b *bench) natsURLs() []string {
	var urls []string
	for _, m := range b.members {
		urls = append(urls, "nats://"+m.nats)
	}
	return urls
}

// memDir is where simulated devices keep their local state.
func memDir() string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		return "/dev/shm"
	}
	return ""
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func deviceID(i int) string { return fmt.Sprintf("sim-%05d", i) }

func cfgDevices(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = deviceID(i)
	}
	return ids
}

// shards: deployment 0 selects every device (fleet=sim); deployment k>0
// selects shard k-1 of M-1, so that every device has two deployments.
func (b *bench) shard(i int) string {
	if b.cfg.Deployments < 2 {
		return "0"
	}
	return fmt.Sprint(i % (b.cfg.Deployments - 1))
}

// expectations: every device has deployment 0 and, when there are more,
// the one of its shard.
func (b *bench) expectations(gen int64) func(string) map[string]int64 {
	shardOf := map[string]string{}
	for i := 0; i < b.cfg.Devices; i++ {
		shardOf[deviceID(i)] = b.shard(i)
	}
	return func(device string) map[string]int64 {
		want := map[string]int64{depName(0): gen}
		if b.cfg.Deployments > 1 {
			var k int
			fmt.Sscan(shardOf[device], &k)
			want[depName(k+1)] = gen
		}
		return want
	}
}

func depName(k int) string { return fmt.Sprintf("d%03d", k) }

// startDevices runs the real agent for every simulated device, with
// instant reconcilers.
func (b *bench) startDevices(g *errgroup.Group, ctx context.Context, ca string) error {
	kinds := map[string]agent.Kind{}
	for _, k := range []string{v1.KindFile, v1.KindContainer, v1.KindSystemdUnit, v1.KindShellJob} {
		kinds[k] = Instant{}
	}
	for i := 0; i < b.cfg.Devices; i++ {
		c := config.DefaultAgent()
		c.ID = deviceID(i)
		c.NATSURLs = b.natsURLs() // all three, as docs/install.md gives agents
		c.StateDir = filepath.Join(b.simDir, c.ID)
		c.Labels = map[string]string{"fleet": "sim", "shard": b.shard(i)}
		c.HeartbeatInterval = config.Duration(b.cfg.Heartbeat)
		c.HTTP = ""
		if b.seeds != "" {
			c.NATSCA, c.NATSNkey = ca, b.seedFile(c.ID)
		}
		a, err := agent.New(c, b.cfg.Log, agent.Options{Kinds: kinds})
		if err != nil {
			return err
		}
		g.Go(func() error { return a.Run(ctx) })
	}
	return nil
}

// beatBuckets are where devices' heartbeats land: their own keys (agents
// without a device identity) and the relays' presence records.
type beatBuckets struct{ keys, presence store.KV }

func openBeats(ctx context.Context, st store.Store, buckets config.Buckets) (beatBuckets, error) {
	keys, err := st.Open(ctx, buckets.DeviceHeartbeat)
	if err != nil {
		return beatBuckets{}, err
	}
	presence, err := st.Open(ctx, buckets.DevicePresence)
	if err != nil {
		return beatBuckets{}, err
	}
	return beatBuckets{keys: keys, presence: presence}, nil
}

// heardSince counts the devices whose heartbeat reached the store at or
// after since: by their key's write time, or by a presence record's write
// time less the beat's age in it.
func (bb beatBuckets) heardSince(ctx context.Context, since time.Time) (int, error) {
	heard := map[string]bool{}
	keys, err := bb.keys.List(ctx, "")
	if err != nil {
		return 0, err
	}
	for _, e := range keys {
		if !e.Created.Before(since) {
			heard[e.Key] = true
		}
	}
	recs, err := bb.presence.List(ctx, "")
	if err != nil {
		return 0, err
	}
	for _, e := range recs {
		p, err := v1.DecodePresence(e.Value)
		if err != nil {
			return 0, fmt.Errorf("presence record %s: %w", e.Key, err)
		}
		for id, ms := range p.Beats {
			if !e.Created.Add(-time.Duration(ms) * time.Millisecond).Before(since) {
				heard[id] = true
			}
		}
	}
	return len(heard), nil
}

// waitOnline waits until every device has heartbeated since since (the
// store's own time of the write) and the roll-up counts every device
// online.
func (b *bench) waitOnline(ctx context.Context, beats beatBuckets, since time.Time) error {
	deadline := time.Now().Add(b.cfg.Timeout)
	fresh := 0
	var fleet fleetCounts
	for {
		if fresh < b.cfg.Devices {
			if n, err := beats.heardSince(ctx, since); err == nil {
				fresh = n
			}
		}
		if fresh >= b.cfg.Devices {
			var err error
			if fleet, err = b.fleet(b.api); err == nil && fleet.Online >= b.cfg.Devices {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d devices heartbeated, the roll-up counts %d online, after %s", fresh, b.cfg.Devices, fleet.Online, b.cfg.Timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Instant is a reconciler that is always in sync: simulated devices run
// the real agent with only their reconcilers replaced by it.
type Instant struct{}

func (Instant) Admit(agent.Desired) (string, error) { return "", nil }
func (Instant) Observe(context.Context, agent.Desired) (agent.Observation, error) {
	return agent.Observation{InSync: true, Result: agent.Result{Phase: v1.PhaseReady, Message: "simulated"}}, nil
}
func (Instant) Apply(context.Context, agent.Desired) error     { return nil }
func (Instant) Delete(context.Context, localstate.Owned) error { return nil }
