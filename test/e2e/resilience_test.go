package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/testutil/netproxy"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// The three outage scenarios below mostly wait (a one-minute server
// outage and a 30 s blackhole, five runs each: about 320 s and 160 s of
// the package's run), so they run in parallel with each other, after the
// package's serial tests (t.Parallel; at most -parallel at once, GOMAXPROCS
// by default). They share nothing: each starts its own server and agents
// (agent ids r1-r3, b1, s1) with data and state under its own t.TempDir,
// on ports freePort never gives out twice, behind proxies on ports of
// their own; they use no podman, systemd, PostgreSQL or network namespace
// and set no environment variable (t.Setenv would forbid t.Parallel).
// What they assert are generous bounds (30 s to recover, 9 s to notice a
// blackhole, against agent timers of 2 s), not tight timings. The failover
// and cluster scenarios stay serial: they assert who acknowledged a write
// when, and a busier CPU shifts those timings.

// resilienceRuns is how many times each outage scenario runs in a row (5 in
// CI, HARMONY_RESILIENCE_RUNS to change it).
func resilienceRuns(t *testing.T) int {
	if v := os.Getenv("HARMONY_RESILIENCE_RUNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("HARMONY_RESILIENCE_RUNS=%q: want a positive number", v)
		}
		return n
	}
	return 5
}

// envDuration reads a duration from the environment, with a default.
func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s=%q: %v", name, v, err)
		}
		return d
	}
	return def
}

// outageEnv is a harmony server (embedded NATS, fixed ports and data
// directory, so it can be stopped and started again) and agents as
// processes, each reaching NATS through its own fault-injecting proxy.
type outageEnv struct {
	t        *testing.T
	dir      string
	natsAddr string
	httpAddr string
	server   *proc
	agents   map[string]*outageAgent
	// agentArgs are settings every agent gets beyond the usual ones.
	agentArgs []string
}

type outageAgent struct {
	id    string
	proc  *proc
	proxy *netproxy.Proxy
	http  string
	root  string
}

func newOutageEnv(t *testing.T, ids ...string) *outageEnv {
	return newOutageEnvWith(t, nil, ids...)
}

// newOutageEnvWith gives every agent the settings args beyond the usual.
func newOutageEnvWith(t *testing.T, args []string, ids ...string) *outageEnv {
	e := &outageEnv{t: t, dir: t.TempDir(), natsAddr: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		httpAddr: fmt.Sprintf("127.0.0.1:%d", freePort(t)), agents: map[string]*outageAgent{}, agentArgs: args}
	e.startServer()
	for _, id := range ids {
		a := &outageAgent{id: id, proxy: netproxy.Start(t, e.natsAddr), http: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			root: filepath.Join(e.dir, id, "files")}
		e.agents[id] = a
		e.startAgent(a)
	}
	return e
}

func (e *outageEnv) startServer() {
	e.server = startHarmony(e.t, "server", "--data-dir", filepath.Join(e.dir, "server"), "--nats", e.natsAddr,
		"--http", e.httpAddr, "--heartbeat-staleness", "30s")
	waitReady(e.t, "http://"+e.httpAddr)
}

func (e *outageEnv) stopServer() {
	if code := e.server.signalAndWait(e.t, syscall.SIGTERM); code != 0 {
		e.t.Fatalf("server exit code %d", code)
	}
}

func (e *outageEnv) startAgent(a *outageAgent) {
	args := append([]string{"agent", "--id", a.id, "--nats-url", "nats://" + a.proxy.Addr(),
		"--state-dir", filepath.Join(e.dir, a.id, "state"), "--allowed-roots", a.root, "--label", "device=" + a.id,
		"--http", a.http, "--resync-interval", "500ms"}, e.agentArgs...)
	a.proc = startHarmony(e.t, args...)
}

// health reads an agent's /health.
func (a *outageAgent) health() (int, map[string]any) {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + a.http + "/health")
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	var v map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&v)
	return resp.StatusCode, v
}

// apply writes, for every agent, a deployment with one File whose content
// carries gen.
func (e *outageEnv) apply(gen int) {
	e.t.Helper()
	for id, a := range e.agents {
		path := filepath.Join(e.t.TempDir(), id+".yaml")
		doc := fmt.Sprintf(`apiVersion: harmony/v1alpha1
kind: Deployment
metadata:
  name: motd-%s
spec:
  selector:
    matchLabels: {device: %s}
  resources:
  - id: motd
    kind: File
    spec: {path: %s, content: "generation %d\n"}
`, id, id, filepath.Join(a.root, "motd"), gen)
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			e.t.Fatal(err)
		}
		if out, errOut, code := cli(e.t, e.httpAddr, "apply", "-f", path); code != 0 {
			e.t.Fatalf("apply: %s %s", out, errOut)
		}
	}
}

// waitConverged waits until every agent reports its deployment succeeded
// at the latest generation.
func (e *outageEnv) waitConverged(within time.Duration) {
	e.t.Helper()
	retry.Until(e.t, within, func() error {
		for id := range e.agents {
			d, err := describe(e.t, e.httpAddr, "motd-"+id)
			if err != nil {
				return err
			}
			if d.Status.Matched != 1 || d.Status.Succeeded != 1 {
				return fmt.Errorf("motd-%s: %+v", id, d.Status)
			}
		}
		return nil
	})
}

// goroutines reads go_goroutines from an agent's /metrics.
func (a *outageAgent) goroutines(t *testing.T) int {
	resp, err := http.Get("http://" + a.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return int(n)
		}
	}
	t.Fatalf("no go_goroutines in %s's metrics", a.id)
	return 0
}

// heartbeatRevs reads every agent's heartbeat revision.
func (e *outageEnv) heartbeatRevs(kv store.KV) map[string]uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out := map[string]uint64{}
	for id := range e.agents {
		if ent, err := kv.Get(ctx, id); err == nil {
			out[id] = ent.Revision
		}
	}
	return out
}

// The server is stopped for a minute (HARMONY_OUTAGE) and started again on
// its data directory: every agent, never restarted, resumes heartbeats and
// status on its own, within about two seconds of the server accepting
// connections. Five runs in a row.
func TestOutageServerStoppedAndRestarted(t *testing.T) {
	t.Parallel()
	outage := envDuration(t, "HARMONY_OUTAGE", time.Minute)
	e := newOutageEnv(t, "r1", "r2", "r3")
	e.apply(1)
	e.waitConverged(30 * time.Second)
	pids := map[string]int{}
	for id, a := range e.agents {
		pids[id] = a.proc.cmd.Process.Pid
	}
	buckets := config.DefaultServer().Buckets
	firstRun := map[string]int{}
	for run := 1; run <= resilienceRuns(t); run++ {
		e.stopServer()
		for id, a := range e.agents {
			retry.Until(t, 30*time.Second, func() error {
				if code, v := a.health(); code != http.StatusServiceUnavailable {
					return fmt.Errorf("%s /health %d %v during the outage", id, code, v)
				}
				return nil
			})
		}
		// The outage itself: every agent keeps working from its cache.
		retry.Holds(t, outage, func() error {
			for id, a := range e.agents {
				if code, v := a.health(); code != http.StatusServiceUnavailable {
					return fmt.Errorf("%s /health %d %v during the outage", id, code, v)
				}
			}
			return nil
		})
		e.startServer()
		// The server accepts connections from here on (its readyz answered).
		back := time.Now()
		kv, err := storeAt(t, "nats://"+e.natsAddr).Open(context.Background(), buckets.DeviceHeartbeat)
		if err != nil {
			t.Fatal(err)
		}
		before := e.heartbeatRevs(kv)
		resumed := map[string]time.Duration{}
		retry.Until(t, 30*time.Second, func() error {
			now := e.heartbeatRevs(kv)
			for id := range e.agents {
				if _, ok := resumed[id]; !ok && now[id] > before[id] {
					resumed[id] = time.Since(back)
				}
			}
			if len(resumed) < len(e.agents) {
				return fmt.Errorf("heartbeats resumed: %v", resumed)
			}
			return nil
		})
		var worst time.Duration
		for _, d := range resumed {
			worst = max(worst, d)
		}
		t.Logf("run %d: after a %s outage, every agent heartbeated again within %s of the server coming back (%v)", run, outage, worst.Round(time.Millisecond), resumed)
		// Status resumes too: a new generation converges on every agent.
		e.apply(run + 1)
		e.waitConverged(30 * time.Second)
		for id, a := range e.agents {
			if a.proc.cmd.Process.Pid != pids[id] || a.proc.cmd.ProcessState != nil {
				t.Fatalf("agent %s was restarted", id)
			}
			if code, v := a.health(); code != http.StatusOK || v["mesh_connected"] != true {
				t.Fatalf("agent %s /health %d %v after recovery", id, code, v)
			}
			// No goroutine is left behind by an outage: the count after
			// each recovery stays where the first one left it.
			n := a.goroutines(t)
			if run == 1 {
				firstRun[id] = n
			} else if n > firstRun[id]+5 {
				t.Fatalf("agent %s: %d goroutines after outage %d, %d after the first", id, n, run, firstRun[id])
			}
		}
	}
}

// An agent's link to NATS is blackholed for 30 s (HARMONY_BLACKHOLE) by a
// proxy that stops forwarding (its kernel still acknowledges, so only
// pings can tell): the agent notices within its configured timeout (two
// missed pings at mesh_ping_interval, set to 2 s as a failover member's
// is; a plain device's default is 30 s, docs/agent.md), then recovers on
// its own. Five runs in a row.
func TestOutageBlackholedLink(t *testing.T) {
	t.Parallel()
	hole := envDuration(t, "HARMONY_BLACKHOLE", 30*time.Second)
	e := newOutageEnvWith(t, []string{"--mesh-ping-interval", "2s"}, "b1")
	a := e.agents["b1"]
	e.apply(1)
	e.waitConverged(30 * time.Second)
	kv, err := storeAt(t, "nats://"+e.natsAddr).Open(context.Background(), config.DefaultServer().Buckets.DeviceHeartbeat)
	if err != nil {
		t.Fatal(err)
	}
	for run := 1; run <= resilienceRuns(t); run++ {
		cut := time.Now()
		a.proxy.Cut()
		var noticed time.Duration
		// The configured timeout: the link is dropped when a third ping
		// goes out with two unanswered (mesh_ping_interval 2 s by
		// default), at most four intervals after the cut.
		limit := 4*2*time.Second + time.Second
		retry.Until(t, min(limit, hole), func() error {
			if code, _ := a.health(); code != http.StatusServiceUnavailable {
				return fmt.Errorf("/health %d: not noticed yet", code)
			}
			noticed = time.Since(cut)
			return nil
		})
		// The rest of the blackhole: the agent knows it is cut off.
		if rest := hole - time.Since(cut); rest > 0 {
			retry.Holds(t, rest, func() error {
				if code, v := a.health(); code != http.StatusServiceUnavailable {
					return fmt.Errorf("/health %d %v while the link is blackholed", code, v)
				}
				return nil
			})
		}
		before := e.heartbeatRevs(kv)["b1"]
		healed := time.Now()
		a.proxy.Heal()
		var recovered time.Duration
		retry.Until(t, 30*time.Second, func() error {
			if code, v := a.health(); code != http.StatusOK {
				return fmt.Errorf("/health %d %v", code, v)
			}
			if e.heartbeatRevs(kv)["b1"] <= before {
				return fmt.Errorf("no heartbeat since the heal")
			}
			recovered = time.Since(healed)
			return nil
		})
		t.Logf("run %d: blackhole noticed after %s, recovered %s after healing", run, noticed.Round(time.Millisecond), recovered.Round(time.Millisecond))
		e.apply(run + 1)
		e.waitConverged(30 * time.Second)
	}
}

// The server is down before the agent starts: the agent enforces its
// cached desired state (repairs drift on its own) and joins when the
// server appears. Five runs in a row.
func TestOutageAgentStartsBeforeServer(t *testing.T) {
	t.Parallel()
	e := newOutageEnv(t, "s1")
	a := e.agents["s1"]
	e.apply(1)
	e.waitConverged(30 * time.Second)
	motd := filepath.Join(a.root, "motd")
	for run := 1; run <= resilienceRuns(t); run++ {
		if code := a.proc.signalAndWait(t, syscall.SIGTERM); code != 0 {
			t.Fatalf("agent exit code %d", code)
		}
		e.stopServer()
		if err := os.WriteFile(motd, []byte("drifted\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		e.startAgent(a)
		want := fmt.Sprintf("generation %d\n", run)
		retry.Until(t, 30*time.Second, func() error {
			b, err := os.ReadFile(motd)
			if err != nil || string(b) != want {
				return fmt.Errorf("motd is %q (%v), want the cached %q", b, err, want)
			}
			return nil
		})
		code, v := a.health()
		if code != http.StatusServiceUnavailable {
			t.Fatalf("/health %d while the server is down", code)
		}
		t.Logf("run %d: drift repaired from the cache with the server down; /health says %v", run, v)
		e.startServer()
		retry.Until(t, 30*time.Second, func() error {
			if code, v := a.health(); code != http.StatusOK {
				return fmt.Errorf("/health %d %v", code, v)
			}
			return nil
		})
		e.apply(run + 1)
		e.waitConverged(30 * time.Second)
	}
}
