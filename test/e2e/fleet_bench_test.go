package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/agent"
	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/fleetbench"
	"github.com/harmony-fleet/harmony/internal/server"
)

type benchServer struct {
	info   server.Info
	cancel context.CancelFunc
	done   chan error
}

func startBenchServer(b *testing.B, dataDir string) *benchServer {
	return startBenchServerAt(b, dataDir, "127.0.0.1:0")
}

func (s *benchServer) stop() { s.cancel(); <-s.done }

func getJSONB(b *testing.B, url string, out any) int {
	resp, err := apiClient.Get(url)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil {
		_ = json.Unmarshal(data, out)
	}
	return resp.StatusCode
}

// BenchmarkFleetRollout: N simulated devices; apply one deployment that
// selects them all, and measure until every device reports it succeeded;
// then restart the server (embedded NATS included) on its data and measure
// until it is ready (operator Converged).
func BenchmarkFleetRollout(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("devices=%d", n), func(b *testing.B) {
			for it := 0; it < b.N; it++ {
				dir := b.TempDir()
				srv := startBenchServer(b, filepath.Join(dir, "server"))
				actx, acancel := context.WithCancel(context.Background())
				g, gctx := errgroup.WithContext(actx)
				startSimAgents(b, g, gctx, n, []string{srv.info.NATSURL}, dir, 5*time.Second)
				waitOnline(b, srv.info.HTTPURL, n)
				rollout := rollOut(b, srv.info.HTTPURL, n)

				srv.stop()
				start := time.Now()
				srv = startBenchServer(b, filepath.Join(dir, "server"))
				waitFor(b, 2*time.Minute, func() bool { return getJSONB(b, srv.info.HTTPURL+"/readyz", nil) == 200 })
				converge := time.Since(start)

				acancel()
				_ = g.Wait()
				srv.stop()
				b.ReportMetric(rollout.Seconds(), "apply-to-all-succeeded-s")
				b.ReportMetric(converge.Seconds(), "restart-to-converged-s")
			}
		})
	}
}

// waitFor polls cond every 20 ms until it holds or timeout passes.
func waitFor(b *testing.B, timeout time.Duration, cond func() bool) {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatalf("condition not met within %s", timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startSimAgents runs n simulated devices (label fleet=sim) in g: the real
// agent with instant reconcilers, connected to urls, heartbeating every
// heartbeat.
func startSimAgents(b *testing.B, g *errgroup.Group, ctx context.Context, n int, urls []string, dir string, heartbeat time.Duration) {
	for i := 0; i < n; i++ {
		cfg := config.DefaultAgent()
		cfg.ID = fmt.Sprintf("sim-%04d", i)
		cfg.NATSURLs = urls
		cfg.StateDir = filepath.Join(dir, "agents", cfg.ID)
		cfg.Labels = map[string]string{"fleet": "sim"}
		cfg.HeartbeatInterval = config.Duration(heartbeat)
		cfg.HTTP = ""
		cfg.ResyncInterval = config.Duration(time.Minute)
		a, err := agent.New(cfg, slog.New(slog.DiscardHandler), agent.Options{Kinds: map[string]agent.Kind{v1.KindFile: fleetbench.Instant{}}})
		if err != nil {
			b.Fatal(err)
		}
		g.Go(func() error { return a.Run(ctx) })
	}
}

// waitOnline waits until the server at base counts n devices online.
func waitOnline(b *testing.B, base string, n int) {
	waitFor(b, 2*time.Minute, func() bool {
		var res struct {
			Items []struct {
				Online bool `json:"online"`
			} `json:"items"`
		}
		getJSONB(b, base+"/api/v1/devices", &res)
		online := 0
		for _, d := range res.Items {
			if d.Online {
				online++
			}
		}
		return online == n
	})
}

// rollOut applies deployment sim (selecting every simulated device)
// through base and returns the time until all n devices report it
// succeeded.
func rollOut(b *testing.B, base string, n int) time.Duration {
	spec, _ := json.Marshal(map[string]string{"path": "/etc/harmony/x", "content": "x"})
	dep := v1.Deployment{APIVersion: v1.APIVersion, Kind: "Deployment", Metadata: v1.Metadata{Name: "sim"},
		Spec: v1.DeploymentSpec{Selector: v1.Selector{MatchLabels: map[string]string{"fleet": "sim"}},
			Resources: []v1.Resource{{ID: "f", Kind: v1.KindFile, Spec: spec}}}}
	body, _ := json.Marshal(dep)
	start := time.Now()
	resp, err := apiClient.Post(base+"/api/v1/deployments", "application/yaml", bytes.NewReader(body))
	if err != nil || resp.StatusCode != 200 {
		b.Fatalf("apply: %v %v", resp, err)
	}
	resp.Body.Close()
	waitFor(b, 5*time.Minute, func() bool {
		var v struct {
			Status struct {
				Succeeded int `json:"succeeded"`
			} `json:"status"`
		}
		getJSONB(b, base+"/api/v1/deployments/sim", &v)
		return v.Status.Succeeded == n
	})
	return time.Since(start)
}

// BenchmarkClusterRollout compares apply-to-all-succeeded for N simulated
// devices on one harmony server and on a three-member cluster (buckets at
// three replicas, the devices spread over the members by their NATS
// client's random pick), servers as real processes.
func BenchmarkClusterRollout(b *testing.B) {
	const n = 1000
	for _, topology := range []string{"single", "cluster3"} {
		b.Run(topology, func(b *testing.B) {
			for it := 0; it < b.N; it++ {
				dir := b.TempDir()
				var urls []string
				var api string
				if topology == "single" {
					natsAddr, httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(b)), fmt.Sprintf("127.0.0.1:%d", freePort(b))
					startHarmony(b, "server", "--data-dir", filepath.Join(dir, "server"), "--nats", natsAddr, "--http", httpAddr)
					waitReady(b, "http://"+httpAddr)
					urls, api = []string{"nats://" + natsAddr}, "http://"+httpAddr
				} else {
					mc := newMeshCluster(b, "--heartbeat-staleness", "30s")
					urls, api = directURLs(mc, 0, 1, 2), "http://"+mc.members[0].http
				}
				ctx, cancel := context.WithCancel(context.Background())
				g, gctx := errgroup.WithContext(ctx)
				startSimAgents(b, g, gctx, n, urls, dir, 5*time.Second)
				waitOnline(b, api, n)
				b.ResetTimer()
				rollout := rollOut(b, api, n)
				b.StopTimer()
				cancel()
				_ = g.Wait()
				b.ReportMetric(rollout.Seconds(), "apply-to-all-succeeded-s")
			}
		})
	}
}
