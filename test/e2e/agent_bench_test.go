package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/testutil/podmantest"
)

// rssKiB reads a process's resident set size.
func rssKiB(b *testing.B, pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			v, _ := strconv.ParseFloat(strings.Fields(rest)[0], 64)
			return v
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

// BenchmarkAgentApplyToReady: time from writing a new desired-state
// generation to the agent reporting it Ready, for one File and for one
// Container whose env changes (so it is replaced), with the real binaries.
func BenchmarkAgentApplyToReady(b *testing.B) {
	for _, kind := range []string{"File", "Container"} {
		b.Run(kind, func(b *testing.B) {
			e := newFleetEnv(b)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				var r v1.Resource
				if kind == "File" {
					r = res("f", v1.KindFile, map[string]any{"path": filepath.Join(e.root, "f"), "content": strconv.Itoa(i)})
				} else {
					r = res("c", v1.KindContainer, map[string]any{"name": e.container, "image": podmantest.Image,
						"command": []string{"sleep"}, "args": []string{"3600"}, "env": map[string]string{"I": strconv.Itoa(i)}, "stopTimeoutSeconds": 0})
				}
				e.applyAndWatchReady(b, r)
			}
		})
	}
}

// BenchmarkAgentMemory reports the agent's resident memory idle (no
// resources) and once it enforces 50 File resources.
func BenchmarkAgentMemory(b *testing.B) {
	for i := 0; i < b.N; i++ {
		e := newFleetEnv(b)
		e.waitStatus("ready", ready(e.apply()))
		idle := rssKiB(b, e.agent.cmd.Process.Pid)
		var rs []v1.Resource
		for j := 0; j < 50; j++ {
			rs = append(rs, res(fmt.Sprintf("f%d", j), v1.KindFile, map[string]any{
				"path": filepath.Join(e.root, fmt.Sprintf("f%d", j)), "content": strings.Repeat("x", 1024)}))
		}
		gen := e.apply(rs...)
		e.waitStatus("ready", ready(gen))
		// Let a few resyncs run over the 50 resources before reading.
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) {
			e.waitStatus("ready", ready(gen))
		}
		busy := rssKiB(b, e.agent.cmd.Process.Pid)
		b.ReportMetric(idle/1024, "idle-RSS-MiB")
		b.ReportMetric(busy/1024, "50-files-RSS-MiB")
		fi, _ := os.Stat(binary)
		b.ReportMetric(float64(fi.Size())/(1<<20), "binary-MiB")
	}
}

// applyAndWatchReady applies the deployment through the API and waits, on a
// watch of the status key (no polling), until the agent reports it Ready.
func (e *fleetEnv) applyAndWatchReady(b *testing.B, rs ...v1.Resource) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, err := e.status.Watch(ctx, "dev-1.web", store.WatchOptions{UpdatesOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	<-w.Events() // replay marker
	gen := e.apply(rs...)
	for ev := range w.Events() {
		s, err := v1.DecodeDeviceState(ev.Entry.Value)
		if err == nil && ready(gen)(s) == nil {
			return
		}
	}
	b.Fatalf("generation %d not Ready within a minute", gen)
}
