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

// TestFleetBenchClusterSmoke runs `harmony bench fleet --servers 3` small:
// three servers forming one JetStream cluster as docs/install.md sets one
// up (one CA, shared tokens, TLS and identities on), 200 devices given all
// three addresses, enrolled through one server's API. It checks that every
// device converges on the apply and the change, and that after each
// server's restart in turn every device heartbeated again and every
// server's roll-up is back to what it was; never how long anything took.
func TestFleetBenchClusterSmoke(t *testing.T) {
	const devices = 200
	res, err := fleetbench.Run(context.Background(), fleetbench.Config{Devices: devices, Deployments: 5, Servers: 3,
		Heartbeat: 2 * time.Second, Idle: 2 * time.Second, Timeout: 3 * time.Minute, Server: []string{binary}, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Apply) != devices || len(res.Change) != devices {
		t.Fatalf("%d devices converged after the apply and %d after the change, want %d each", len(res.Apply), len(res.Change), devices)
	}
	if res.Servers != 3 || res.Insecure {
		t.Errorf("ran %d servers, insecure %v: want 3 with the product's defaults", res.Servers, res.Insecure)
	}
	if res.Restart <= 0 || res.Start <= 0 {
		t.Errorf("start %s, rolling restart %s: not measured", res.Start, res.Restart)
	}
	// Every device is connected to one of the three.
	if res.Connections < devices || res.FDsOnline-res.FDsBefore < devices {
		t.Errorf("%d NATS connections and %d more descriptors with %d devices online", res.Connections, res.FDsOnline-res.FDsBefore, devices)
	}
	if res.PeakRSSMax == 0 || res.PeakRSSMax >= res.PeakRSS || res.BaseRSS == 0 {
		t.Errorf("server memory: peak %d summed, %d the largest, %d with 0 devices: want three servers measured", res.PeakRSS, res.PeakRSSMax, res.BaseRSS)
	}
}
