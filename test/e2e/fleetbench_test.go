package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/fleetbench"
)

// TestFleetBenchSmoke runs `harmony bench fleet` small: 500 simulated
// devices (the real agent, instant reconcilers), 10 deployments, one
// changed, the server restarted. It checks that every device converges at
// every step and that the devices follow their desired state without a
// JetStream consumer each; never how long anything took (that is
// docs/BENCHMARKS.md's job).
func TestFleetBenchSmoke(t *testing.T) {
	const devices = 500
	res, err := fleetbench.Run(context.Background(), fleetbench.Config{Devices: devices, Deployments: 10,
		Heartbeat: 2 * time.Second, Timeout: 3 * time.Minute, Server: []string{binary}, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Apply) != devices || len(res.Change) != devices {
		t.Fatalf("%d devices converged after the apply and %d after the change, want %d each", len(res.Apply), len(res.Change), devices)
	}
	if res.Connections < devices {
		t.Errorf("%d NATS connections with %d devices online", res.Connections, devices)
	}
	// The operator's watches (one per fleet bucket) and a few more; a
	// consumer per device would be 500 more.
	if res.Consumers > 20 {
		t.Errorf("%d JetStream consumers with %d devices: agents should follow the republished subjects", res.Consumers, devices)
	}
	if res.PeakRSS == 0 || res.RolloutCPU <= 0 {
		t.Errorf("server measurements missing: peak RSS %d, rollout CPU %s", res.PeakRSS, res.RolloutCPU)
	}
}
