package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/harmony-fleet/harmony/internal/mesh"
	"github.com/harmony-fleet/harmony/internal/relay"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// procStatus reads one field of /proc/<pid>/status in KiB.
func procStatus(pid int, field string) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			v, _ := strconv.ParseFloat(strings.Fields(rest)[0], 64)
			return v
		}
	}
	return 0
}

func openFDs(pid int) int {
	es, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(es)
}

func dirBytes(dir string) int64 {
	var n int64
	_ = filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// BenchmarkMisbehavingDevice measures what one enrolled device costs the
// server and another device when it floods everything its identity can
// reach, for HARMONY_BENCH_FLOOD (20 s by default), against a server with
// its defaults (TLS, identities): relay requests as fast as its connection
// takes them (256 KiB values, a new key each), writes straight into the
// buckets (refused by permissions), and new connections on its identity.
// Meanwhile an admin reads the API every 100 ms and applies a change that
// device B must follow. Reported: the API's latency and B's convergence
// during the flood (and B's before it), the server's resident memory and
// open descriptors before and at their peak, and what the data directory
// grew by. docs/SECURITY.md has the figures.
func BenchmarkMisbehavingDevice(b *testing.B) {
	flood := 20 * time.Second
	if v := os.Getenv("HARMONY_BENCH_FLOOD"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatal(err)
		}
		flood = d
	}
	for range b.N {
		floodOnce(b, flood)
	}
}

func floodOnce(b *testing.B, flood time.Duration) {
	dir := b.TempDir()
	natsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(b))
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(b))
	data := filepath.Join(dir, "server")
	cmd := exec.Command(binary, "server", "--data-dir", data, "--nats", natsAddr, "--http", httpAddr, "--heartbeat-staleness", "3s")
	cmd.Env = defaultsEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	pid := cmd.Process.Pid
	ca := filepath.Join(data, "tls", "ca.pem")
	base := "https://" + httpAddr
	var client *http.Client
	retry.Until(b, 30*time.Second, func() error {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		client = &http.Client{Timeout: 10 * time.Second, Transport: bearer{&http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}}
		resp, err := client.Get(base + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})
	cli := func(args ...string) string {
		c := exec.Command(binary, args...)
		c.Env = append(os.Environ(), "HARMONY_CA="+ca, "HARMONY_SERVER="+base)
		out, err := c.Output()
		if err != nil {
			b.Fatalf("harmony %s: %v", strings.Join(args, " "), err)
		}
		return strings.TrimSpace(string(out))
	}
	enroll := func(id string) string {
		seed := filepath.Join(dir, id+".nk")
		cli("enroll", "--id", id, "--nkey", seed, "--token", cli("token", "create", "--device", id))
		return seed
	}
	seedA, seedB := enroll("dev-a"), enroll("dev-b")
	rootB := filepath.Join(dir, "root-b")
	_ = os.MkdirAll(rootB, 0o755)
	agent := exec.Command(binary, "agent", "--http", "127.0.0.1:0", "--id", "dev-b", "--nats-url", "nats://"+natsAddr, "--nats-ca", ca,
		"--nats-nkey", seedB, "--state-dir", filepath.Join(dir, "state-b"), "--label", "site=b", "--allowed-roots", rootB,
		"--heartbeat-interval", "1s")
	if err := agent.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = agent.Process.Kill(); _ = agent.Wait() }()

	gen := 0
	// applyAndWait applies a new generation and returns how long B took
	// to report it succeeded (as the API's roll-up says), read every 20 ms.
	applyAndWait := func() (time.Duration, error) {
		gen++
		want := gen
		doc := fmt.Sprintf(`{"apiVersion":"harmony/v1alpha1","kind":"Deployment","metadata":{"name":"victim"},`+
			`"spec":{"selector":{"matchLabels":{"site":"b"}},"resources":[{"id":"f","kind":"File","spec":{"path":%q,"content":"gen %d"}}]}}`,
			filepath.Join(rootB, "f.txt"), want)
		start := time.Now()
		resp, err := client.Post(base+"/api/v1/deployments", "application/json", strings.NewReader(doc))
		if err != nil {
			return 0, err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			return 0, fmt.Errorf("apply: %d %s", resp.StatusCode, body)
		}
		converged := func() bool {
			resp, err := client.Get(base + "/api/v1/deployments/victim")
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			var d struct {
				Status struct {
					Generation int
					Succeeded  int
				}
			}
			_ = json.NewDecoder(resp.Body).Decode(&d)
			return d.Status.Generation == want && d.Status.Succeeded == 1
		}
		if !every(20*time.Millisecond, 2*time.Minute, converged) {
			return 0, fmt.Errorf("B did not converge on generation %d", want)
		}
		return time.Since(start), nil
	}
	mustConverge := func() time.Duration {
		d, err := applyAndWait()
		if err != nil {
			b.Fatal(err)
		}
		return d
	}
	mustConverge()
	baseline := mustConverge()
	rssBefore, fdsBefore, diskBefore := procStatus(pid, "VmRSS"), openFDs(pid), dirBytes(data)

	attacker, err := connectAs(b, natsAddr, ca, seedA, "dev-a")
	if err != nil {
		b.Fatal(err)
	}
	defer attacker.nc.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var relayed, refusedConns, openedConns, writes atomic.Int64
	value := bytes.Repeat([]byte("x"), 256<<10)
	// floodWith publishes the messages msg makes, as fast as the
	// connection takes them, until stop.
	floodWith := func(sent *atomic.Int64, msg func(i int) *nats.Msg) {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if attacker.nc.PublishMsg(msg(i)) == nil {
				sent.Add(1)
			}
		}
	}
	wg.Add(3)
	go floodWith(&relayed, func(i int) *nats.Msg { // relay requests, each a new key
		m := nats.NewMsg(relay.Subject("dev-a"))
		m.Reply = mesh.DeviceInboxPrefix("dev-a") + ".flood"
		m.Header.Set(relay.HdrOp, relay.OpCreate)
		m.Header.Set(relay.HdrBucket, "device-state")
		m.Header.Set(relay.HdrKey, fmt.Sprintf("dev-a.k%d", i))
		m.Data = value
		return m
	})
	go floodWith(&writes, func(i int) *nats.Msg { // writes straight into a bucket, rollup header and all
		m := nats.NewMsg(fmt.Sprintf("$KV.device-info.dev-a.k%d", i))
		m.Header.Set("Nats-Rollup", "all")
		m.Data = value
		return m
	})
	go func() { // connections on its identity, never closed
		defer wg.Done()
		var conns []*nats.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		nkey, _ := nats.NkeyOptionFromSeed(seedA)
		for {
			select {
			case <-stop:
				return
			default:
			}
			nc, err := nats.Connect("nats://"+natsAddr, nkey, nats.RootCAs(ca), nats.NoReconnect(),
				nats.CustomInboxPrefix(mesh.DeviceInboxPrefix("dev-a")))
			if err != nil {
				refusedConns.Add(1)
				continue
			}
			openedConns.Add(1)
			conns = append(conns, nc)
		}
	}()

	var lat []float64
	var rssPeak float64
	fdsPeak := 0
	pctOf := func(l []float64, p float64) float64 { return l[min(len(l)-1, int(p*float64(len(l))))] }
	sample := func() {
		start := time.Now()
		resp, err := client.Get(base + "/api/v1/deployments")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		if err != nil || resp.StatusCode != 200 {
			lat = append(lat, 10_000) // counted as a 10 s answer
		} else {
			lat = append(lat, float64(time.Since(start).Microseconds())/1000)
		}
		rssPeak = max(rssPeak, procStatus(pid, "VmRSS"))
		fdsPeak = max(fdsPeak, openFDs(pid))
	}
	// The API's latency before the flood, for comparison.
	quietSamples := 0
	every(50*time.Millisecond, time.Minute, func() bool { sample(); quietSamples++; return quietSamples == 30 })
	slices.Sort(lat)
	quiet := slices.Clone(lat)
	lat = lat[:0]
	floodStart := time.Now()
	sampleUntil := func(t time.Time) { every(100*time.Millisecond, time.Until(t), func() bool { sample(); return false }) }
	sampleUntil(floodStart.Add(flood / 2))
	var during time.Duration
	var duringErr error
	converged := make(chan struct{})
	go func() { during, duringErr = applyAndWait(); close(converged) }()
	sampleUntil(floodStart.Add(flood))
	<-converged
	close(stop)
	wg.Wait()
	if duringErr != nil {
		b.Fatal(duringErr)
	}
	diskAfter := dirBytes(data)
	slices.Sort(lat)
	pct := func(p float64) float64 { return pctOf(lat, p) }
	b.ReportMetric(pctOf(quiet, 0.5), "api-before-p50-ms")
	b.ReportMetric(pctOf(quiet, 0.99), "api-before-p99-ms")
	b.ReportMetric(float64(baseline.Milliseconds()), "B-converge-before-ms")
	b.ReportMetric(float64(during.Milliseconds()), "B-converge-flood-ms")
	b.ReportMetric(pct(0.5), "api-p50-ms")
	b.ReportMetric(pct(0.99), "api-p99-ms")
	b.ReportMetric(lat[len(lat)-1], "api-max-ms")
	b.ReportMetric(rssBefore/1024, "rss-before-MiB")
	b.ReportMetric(rssPeak/1024, "rss-peak-MiB")
	b.ReportMetric(float64(fdsBefore), "fds-before")
	b.ReportMetric(float64(fdsPeak), "fds-peak")
	b.ReportMetric(float64(diskAfter-diskBefore)/(1<<20), "disk-growth-MiB")
	b.ReportMetric(float64(relayed.Load()), "relay-requests")
	b.ReportMetric(float64(writes.Load()), "direct-writes")
	b.ReportMetric(float64(openedConns.Load()), "conns-opened")
	b.ReportMetric(float64(refusedConns.Load()), "conns-refused")
}

// every calls f at each tick of interval until it returns true (true) or
// within passes (false).
func every(interval, within time.Duration, f func() bool) bool {
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		if f() {
			return true
		}
		select {
		case <-deadline.C:
			return false
		case <-tick.C:
		}
	}
}
