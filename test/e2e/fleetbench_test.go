package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/fleetbench"
)

// TestFleetBenchSmoke runs `harmony bench fleet` small, with the server's
// defaults (TLS on, every device enrolled with a token of its own and
// connected under its identity): 500 simulated devices (the real agent,
// instant reconcilers) started at once, 10 deployments, one changed, then
// the storm: the server restarted under all 500. It checks that every
// device converges at every step, that after the restart every device
// heartbeated again and the API's roll-up is back to exactly what it was
// (nothing lost), and that the devices follow their desired state without
// a JetStream consumer each; never how long anything took (that is
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
	if res.Insecure {
		t.Error("the bench ran with TLS and identities off; its default is the product's")
	}
	if res.Restart <= 0 || res.Start <= 0 {
		t.Errorf("start %s, restart %s: not measured", res.Start, res.Restart)
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
