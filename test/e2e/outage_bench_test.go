package e2e

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/mesh"
	"github.com/harmony-fleet/harmony/internal/server"
	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
	"github.com/harmony-fleet/harmony/internal/web"
)

// startBenchServerAt runs the server's composition root in this process,
// its embedded NATS on natsListen (fixed, so it can be restarted there).
func startBenchServerAt(b *testing.B, dataDir, natsListen string) *benchServer {
	cfg := config.DefaultServer()
	cfg.DataDir = dataDir
	cfg.NATSListen = natsListen
	cfg.HTTP = "127.0.0.1:0"
	cfg.TLS = "off"
	cfg.NATSAuth = "off" // the simulated devices connect without identities
	cfg.Tokens = []config.Token{{Name: "e2e", Role: "admin", SHA256: web.HashToken(e2eToken)}}
	cfg.HeartbeatStaleness = config.Duration(30 * time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	s := &benchServer{cancel: cancel, done: make(chan error, 1)}
	ready := make(chan server.Info, 1)
	go func() {
		s.done <- server.Run(ctx, cfg, slog.New(slog.DiscardHandler), server.Options{OnReady: func(i server.Info) { ready <- i }})
	}()
	select {
	case s.info = <-ready:
	case err := <-s.done:
		b.Fatalf("server: %v", err)
	}
	return s
}

// BenchmarkOutageRecovery: N agents (lightweight: in one process, real
// protocol, real NATS) run against a server; the server stops for
// HARMONY_BENCH_OUTAGE (10 s by default) and starts again on its data
// directory and port. Measured: from the server being ready again to every
// agent's heartbeat having advanced (heartbeat interval 10 s, so this is
// the reconnection path, not the timer).
func BenchmarkOutageRecovery(b *testing.B) {
	outage := 10 * time.Second
	if v := os.Getenv("HARMONY_BENCH_OUTAGE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatal(err)
		}
		outage = d
	}
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("agents=%d", n), func(b *testing.B) {
			for it := 0; it < b.N; it++ {
				dir := b.TempDir()
				listen := fmt.Sprintf("127.0.0.1:%d", freePort(b))
				srv := startBenchServerAt(b, filepath.Join(dir, "server"), listen)
				actx, acancel := context.WithCancel(context.Background())
				g, gctx := errgroup.WithContext(actx)
				startSimAgents(b, g, gctx, n, []string{"nats://" + listen}, dir, 10*time.Second)
				revs := func() map[string]uint64 {
					nc, err := mesh.Connect(mesh.ClientConfig{URLs: []string{"nats://" + listen}})
					if err != nil {
						b.Fatal(err)
					}
					defer nc.Close()
					st, _ := store.NewNATS(nc, store.NATSOptions{})
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					kv, err := st.Open(ctx, config.DefaultServer().Buckets.DeviceHeartbeat)
					if err != nil {
						return nil
					}
					es, err := kv.List(ctx, ">")
					if err != nil {
						return nil
					}
					out := map[string]uint64{}
					for _, e := range es {
						out[e.Key] = e.Revision
					}
					return out
				}
				var before map[string]uint64
				waitFor(b, 2*time.Minute, func() bool { before = revs(); return len(before) == n })

				srv.stop()
				// The outage itself: nothing answers on the NATS port.
				retry.Holds(b, outage, func() error {
					if c, err := net.DialTimeout("tcp", listen, time.Second); err == nil {
						c.Close()
						return errors.New("the NATS port answers during the outage")
					}
					return nil
				})
				srv = startBenchServerAt(b, filepath.Join(dir, "server"), listen)
				back := time.Now()
				waitFor(b, 2*time.Minute, func() bool {
					now := revs()
					for k, r := range before {
						if now[k] <= r {
							return false
						}
					}
					return true
				})
				recovery := time.Since(back)
				acancel()
				_ = g.Wait()
				srv.stop()
				b.ReportMetric(recovery.Seconds()*1000, "all-heartbeats-back-ms")
			}
		})
	}
}
