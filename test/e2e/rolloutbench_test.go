package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/fleetbench"
)

// TestRolloutBenchSmoke runs `harmony bench fleet --rollout-batches 4`
// small: 20 simulated devices, the change of the deployment every device
// has rolled out in four batches of five. It checks that every device
// converges, that the rollout succeeded with each of the four batches
// timed and holding its share of the devices, and that the server's CPU
// during the change was measured; never how long anything took.
func TestRolloutBenchSmoke(t *testing.T) {
	const devices = 20
	res, err := fleetbench.Run(context.Background(), fleetbench.Config{Devices: devices, Deployments: 1, RolloutBatches: 4,
		Heartbeat: 2 * time.Second, Timeout: 2 * time.Minute, Server: []string{binary}, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Apply) != devices || len(res.Change) != devices {
		t.Fatalf("%d devices converged after the apply and %d after the change, want %d each", len(res.Apply), len(res.Change), devices)
	}
	if len(res.Batches) != 4 || len(res.BatchDevices) != 4 {
		t.Fatalf("batches %v of devices %v: want four timed", res.Batches, res.BatchDevices)
	}
	var sum time.Duration
	for i, d := range res.Batches {
		if res.BatchDevices[i] != devices/4 {
			t.Errorf("batch %d has %d devices, want %d", i+1, res.BatchDevices[i], devices/4)
		}
		sum += d
	}
	// The batches follow one another: together they end with the rollout,
	// within the change step.
	if sum <= 0 || sum > res.ChangeTotal {
		t.Errorf("batches %v (together %s) against the change's %s", res.Batches, sum, res.ChangeTotal)
	}
	if res.ChangeCPU <= 0 || res.StatusPolls < 4 || res.StatusPollCPU < 0 {
		t.Errorf("change CPU %s, %d status polls, %s per poll: not measured", res.ChangeCPU, res.StatusPolls, res.StatusPollCPU)
	}
}
