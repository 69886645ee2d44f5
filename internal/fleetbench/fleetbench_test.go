package fleetbench

import (
	"encoding/csv"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/operator"
)

func TestPerDevice(t *testing.T) {
	r := Result{Devices: 100, PeakRSS: 300 << 20, BaseRSS: 100 << 20, IdleCPUShare: 0.05,
		IdleRate: Rate{InMsgs: 10}, FDsBefore: 40, FDsOnline: 140}
	r.perDevice()
	if want := float64(2 << 20); r.RSSPerDevice != want {
		t.Errorf("RSS per device %v, want %v", r.RSSPerDevice, want)
	}
	if r.IdleCPUPerDevice != 0.0005 || r.IdleMsgsPerDevice != 0.1 || r.FDsPerDevice != 1 {
		t.Errorf("per device: CPU %v, msgs %v, descriptors %v; want 0.0005, 0.1, 1", r.IdleCPUPerDevice, r.IdleMsgsPerDevice, r.FDsPerDevice)
	}
	// Not measured (a run that failed early): no figure made up.
	r = Result{Devices: 100, PeakRSS: 300 << 20}
	r.perDevice()
	if r.RSSPerDevice != 0 || r.FDsPerDevice != 0 {
		t.Errorf("unmeasured baselines gave RSS %v and descriptors %v per device", r.RSSPerDevice, r.FDsPerDevice)
	}
}

// flag returns the value after name in args ("" when absent).
func flag(args []string, name string) string {
	i := slices.Index(args, name)
	if i < 0 || i+1 >= len(args) {
		return ""
	}
	return args[i+1]
}

// TestServerArgs: three servers get what docs/install.md "Three servers"
// adds to each one's file; one server gets none of it.
func TestServerArgs(t *testing.T) {
	b := &bench{cfg: Config{Servers: 3, Server: []string{"harmony"}}, tokens: "/t.yaml"}
	if err := b.newMembers(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	var routes []string
	for _, m := range b.members {
		routes = append(routes, m.route)
	}
	names := map[string]bool{}
	for _, m := range b.members {
		args := b.serverArgs(m)
		names[flag(args, "--name")] = true
		for name, want := range map[string]string{"--cluster-name": clusterName, "--cluster-listen": m.route,
			"--routes": strings.Join(routes, ","), "--replicas": "3", "--tokens-file": "/t.yaml", "--data-dir": m.dataDir} {
			if got := flag(args, name); got != want || want == "" {
				t.Errorf("%s: %s %q, want %q", m.name, name, got, want)
			}
		}
		if slices.Contains(args, "--tls") || slices.Contains(args, "--nats-auth") {
			t.Errorf("%s: %v: the bench runs the servers' TLS and identity defaults", m.name, args)
		}
	}
	if len(names) != 3 || names[""] {
		t.Errorf("names %v: want three of their own", names)
	}
	if b.api != b.members[0] {
		t.Error("the bench asks the first server's API")
	}

	one := &bench{cfg: Config{Servers: 1, Server: []string{"harmony"}}}
	if err := one.newMembers(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"--name", "--cluster-name", "--cluster-listen", "--routes", "--replicas"} {
		if slices.Contains(one.serverArgs(one.members[0]), name) {
			t.Errorf("one server is given %s", name)
		}
	}
}

func TestShareCA(t *testing.T) {
	from, to := t.TempDir(), t.TempDir()
	if err := os.MkdirAll(filepath.Join(from, "tls"), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{"ca.pem": "cert", "ca-key.pem": "key", "server.pem": "own"} {
		if err := os.WriteFile(filepath.Join(from, "tls", name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := shareCA(from, to); err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{"ca.pem": 0o644, "ca-key.pem": 0o600} {
		fi, err := os.Stat(filepath.Join(to, "tls", name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode().Perm(), mode)
		}
	}
	if _, err := os.Stat(filepath.Join(to, "tls", "server.pem")); err == nil {
		t.Error("the server certificate was copied too: each server issues its own")
	}
}

func TestCSVRowsMatchTheHeader(t *testing.T) {
	dir := t.TempDir()
	r := Result{Devices: 3, Deployments: 1, Servers: 3, Apply: Latencies{time.Millisecond, 2 * time.Millisecond, 3 * time.Millisecond},
		RolloutBatches: 2, Batches: []time.Duration{1500 * time.Millisecond, 700 * time.Millisecond}, BatchDevices: []int{2, 1}}
	r.perDevice()
	if err := WriteCSV(dir, []Result{r, {Devices: 5, Servers: 1, Err: "failed"}}); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "fleet.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll() // fails on a row of another length
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 {
		t.Fatalf("%d rows, want a header and two", len(rows))
	}
	if i := slices.Index(rows[0], "servers"); i < 0 || rows[1][i] != "3" || rows[2][i] != "1" {
		t.Errorf("servers column: header %v, rows %v %v", rows[0], rows[1], rows[2])
	}
	for col, want := range map[string][2]string{"rollout_batches": {"2", "0"}, "batch_ms": {"1500.0;700.0", ""}, "batch_devices": {"2;1", ""}} {
		if i := slices.Index(rows[0], col); i < 0 || rows[1][i] != want[0] || rows[2][i] != want[1] {
			t.Errorf("%s column: header %v, rows %v %v; want %q and %q", col, rows[0], rows[1], rows[2], want[0], want[1])
		}
	}
}

// TestRolloutDoc: with batches, deployment 0 (every device's) carries a
// valid spec.rollout of that many batches taking every device, in
// near-equal parts; the other deployments and a run without batches carry
// none.
func TestRolloutDoc(t *testing.T) {
	for _, tc := range []struct {
		batches int
		sizes   []int // of 10,000 devices
	}{
		{0, nil},
		{1, []int{10000}},
		{3, []int{3400, 3400, 3200}},
		{4, []int{2500, 2500, 2500, 2500}},
	} {
		b := &bench{cfg: Config{Deployments: 3, RolloutBatches: tc.batches}}
		for k := range 3 {
			ds, err := v1.ParseDeployments([]byte(b.doc(k, "two")))
			if err != nil {
				t.Fatalf("%d batches, deployment %d: %v", tc.batches, k, err)
			}
			d := ds[0]
			if err := d.Validate(); err != nil {
				t.Fatalf("%d batches, deployment %d: %v", tc.batches, k, err)
			}
			r := d.Spec.Rollout
			if k > 0 || tc.batches == 0 {
				if r != nil {
					t.Errorf("%d batches, deployment %d: has a rollout", tc.batches, k)
				}
				continue
			}
			if r == nil {
				t.Fatalf("%d batches: deployment 0 has no rollout", tc.batches)
			}
			ids := make([]string, 10000)
			for i := range ids {
				ids[i] = fmt.Sprintf("sim-%05d", i)
			}
			batches, rest := operator.SplitBatches(r, ids, func(string) map[string]string { return nil })
			var sizes []int
			for _, b := range batches {
				sizes = append(sizes, len(b))
			}
			left := len(rest)
			if !slices.Equal(sizes, tc.sizes) || left != 0 || r.Gate.ReadyForSeconds != 0 {
				t.Errorf("%d batches: sizes %v, %d left, ready for %ds; want %v, none left, 0s", tc.batches, sizes, left, r.Gate.ReadyForSeconds, tc.sizes)
			}
		}
	}
}

// TestBatchClock: each batch is timed from the previous one's Done (the
// first from the apply) to the poll that first saw it Done; statuses from
// before the operator saw the change say nothing; a pause fails the run
// with its reason and keeps the batches done before it.
func TestBatchClock(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	st := func(gen int64, phase string, states ...string) v1.RolloutStatus {
		s := v1.RolloutStatus{Name: "d000", Generation: gen, Phase: phase}
		if phase != "" {
			s.To = gen
		}
		for _, state := range states {
			s.Batches = append(s.Batches, v1.RolloutBatchStatus{State: state, Devices: 5})
		}
		return s
	}
	const D, P, W = v1.BatchDone, v1.BatchInProgress, v1.BatchWaiting
	c := &batchClock{start: t0}
	steps := []struct {
		s    v1.RolloutStatus
		ms   int
		done bool
	}{
		{st(1, ""), 100, false}, // the operator has not seen the change
		{st(2, v1.RolloutPending), 200, false},
		{st(2, v1.RolloutProgressing, P, W, W), 300, false},
		{st(2, v1.RolloutProgressing, D, P, W), 900, false},
		{st(2, v1.RolloutProgressing, D, P, W), 1000, false},
		{st(2, v1.RolloutProgressing, D, D, P), 1500, false},
		{st(2, v1.RolloutSucceeded, D, D, D), 2400, true},
		{st(2, v1.RolloutSucceeded, D, D, D), 2600, true},
	}
	for _, step := range steps {
		done, err := c.observe(step.s, 2, at(step.ms))
		if err != nil || done != step.done {
			t.Fatalf("at %d ms (%s): done %v, %v; want %v", step.ms, step.s.Phase, done, err, step.done)
		}
	}
	want := []time.Duration{900 * time.Millisecond, 600 * time.Millisecond, 900 * time.Millisecond}
	if got := c.durations(); !slices.Equal(got, want) || c.polls != len(steps) || !slices.Equal(c.devices, []int{5, 5, 5}) {
		t.Errorf("durations %v, %d polls, devices %v; want %v, %d, [5 5 5]", got, c.polls, c.devices, want, len(steps))
	}

	// Two batches seen Done in one poll: the second took no time as far
	// as the bench can tell.
	c = &batchClock{start: t0}
	for _, step := range []struct {
		s  v1.RolloutStatus
		ms int
	}{{st(2, v1.RolloutProgressing, P, W, W), 100}, {st(2, v1.RolloutProgressing, D, D, P), 800}} {
		if _, err := c.observe(step.s, 2, at(step.ms)); err != nil {
			t.Fatal(err)
		}
	}
	if got := c.durations(); !slices.Equal(got, []time.Duration{800 * time.Millisecond, 0}) {
		t.Errorf("durations %v, want [800ms 0s]", got)
	}

	paused := st(2, v1.RolloutPaused, D, P, W)
	paused.Batch, paused.Reason = 2, "batch 2 of 3 failed its gate"
	if _, err := c.observe(paused, 2, at(900)); !errors.Is(err, errRolloutStopped) || !strings.Contains(err.Error(), paused.Reason) {
		t.Errorf("paused: %v; want the reason", err)
	}
	if _, err := c.observe(st(3, v1.RolloutProgressing, P, W, W), 2, at(900)); err == nil {
		t.Error("a later generation (someone else's change) was taken for ours")
	}
}

func TestWriteTableShowsBatches(t *testing.T) {
	var off, on strings.Builder
	WriteTable(&off, Result{Devices: 10, Servers: 1, ChangeCPU: 1500 * time.Millisecond})
	WriteTable(&on, Result{Devices: 10, Servers: 1, RolloutBatches: 2, Batches: []time.Duration{time.Second, 2 * time.Second},
		BatchDevices: []int{5, 5}, StatusPolls: 20, StatusPollCPU: 2 * time.Millisecond})
	if strings.Contains(off.String(), "batch") || !strings.Contains(off.String(), "server CPU, change one") {
		t.Errorf("without batches:\n%s", off.String())
	}
	for _, want := range []string{"the change in 2 batches", "batch 1 of 2", "batch 2 of 2", "2000 ms (5 devices)", "20 during the change, 2.0 ms"} {
		if !strings.Contains(on.String(), want) {
			t.Errorf("with batches: no %q in\n%s", want, on.String())
		}
	}
	var sum strings.Builder
	WriteSummary(&sum, []Result{{Devices: 10, Servers: 1, RolloutBatches: 2, Batches: []time.Duration{time.Second, 2 * time.Second}}})
	for _, want := range []string{"change one: batch 1 of 2 (s)", "change one: batch 2 of 2 (s)", "server CPU, change one (s)", "per request"} {
		if !strings.Contains(sum.String(), want) {
			t.Errorf("summary: no %q in\n%s", want, sum.String())
		}
	}
}

func TestWriteTableSaysHowManyServers(t *testing.T) {
	var one, three strings.Builder
	WriteTable(&one, Result{Devices: 10, Servers: 1})
	WriteTable(&three, Result{Devices: 10, Servers: 3})
	if strings.Contains(one.String(), "servers") || strings.Contains(one.String(), "busiest") {
		t.Errorf("one server:\n%s", one.String())
	}
	for _, want := range []string{"3 servers", "busiest server", "largest server", "rolling restart"} {
		if !strings.Contains(three.String(), want) {
			t.Errorf("three servers: no %q in\n%s", want, three.String())
		}
	}
}
