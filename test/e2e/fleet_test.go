package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/api/httpapi"
	"github.com/harmony-fleet/harmony/internal/mesh/meshtest"
	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// cli runs the harmony CLI against a server and returns stdout, stderr and
// the exit code.
func cli(t testing.TB, server string, args ...string) (string, string, int) {
	t.Helper()
	// The flag goes right after the subcommand, before any "--".
	full := append([]string{args[0], "--server", "http://" + server}, args[1:]...)
	cmd := exec.Command(binary, full...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

func describe(t testing.TB, server, name string) (httpapi.DeploymentView, error) {
	out, errOut, code := cli(t, server, "describe", "deployment", name, "-o", "json")
	var d httpapi.DeploymentView
	if code != 0 {
		return d, errors.New(errOut)
	}
	return d, json.Unmarshal([]byte(out), &d)
}

// waitCounts waits until describe shows exactly these counts.
func waitCounts(t testing.TB, server, name string, matched, succeeded, offline int) {
	t.Helper()
	retry.Until(t, 30*time.Second, func() error {
		d, err := describe(t, server, name)
		if err != nil {
			return err
		}
		s := d.Status
		if s.Matched != matched || s.Succeeded != succeeded || s.Offline != offline {
			return fmt.Errorf("matched %d succeeded %d offline %d (failed %d pending %d), want %d/%d/%d",
				s.Matched, s.Succeeded, s.Offline, s.Failed, s.Pending, matched, succeeded, offline)
		}
		return nil
	})
}

// fleet3 is a NATS owned by the test, harmony servers pointed at it, and
// three real agents.
type fleet3 struct {
	t       *testing.T
	nats    string
	roots   map[string]string
	agents  map[string]*proc
	servers []*proc
	http    []string
}

func startServerAt(t *testing.T, natsURL string) (*proc, string) {
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := startHarmony(t, "server", "--nats-url", natsURL, "--data-dir", t.TempDir(), "--http", httpAddr, "--heartbeat-staleness", "2s")
	waitReady(t, "http://"+httpAddr)
	return p, httpAddr
}

func newFleet3(t *testing.T) *fleet3 {
	ns := meshtest.StartServer(t)
	f := &fleet3{t: t, nats: ns.ClientURL(), roots: map[string]string{}, agents: map[string]*proc{}}
	p, addr := startServerAt(t, f.nats)
	f.servers, f.http = append(f.servers, p), append(f.http, addr)
	for id, site := range map[string]string{"a1": "home", "a2": "home", "a3": "office"} {
		f.roots[id] = t.TempDir()
		f.startAgent(id, site)
	}
	return f
}

func (f *fleet3) startAgent(id, site string) {
	f.agents[id] = startHarmony(f.t, "agent", "--http", "127.0.0.1:0", "--id", id, "--nats-url", f.nats, "--state-dir", filepath.Join(f.roots[id], "state"),
		"--label", "site="+site, "--allowed-roots", filepath.Join(f.roots[id], "files"), "--shell-jobs",
		"--heartbeat-interval", "300ms", "--resync-interval", "1s")
}

// deploymentFile writes a deployment whose one resource is a ShellJob that
// records which device ran it in a file under the agent's own state.
func deploymentFile(t testing.TB, name, selector, note string) string {
	path := filepath.Join(t.TempDir(), name+".yaml")
	doc := fmt.Sprintf(`apiVersion: harmony/v1alpha1
kind: Deployment
metadata:
  name: %s
spec:
  selector:
    matchLabels: {%s}
  resources:
  - id: hello
    kind: ShellJob
    spec: {command: [echo, %q]}
`, name, selector, note)
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func (f *fleet3) desiredKeys(ctx context.Context, kv store.KV) []string {
	es, err := kv.List(ctx, "")
	if err != nil {
		f.t.Fatal(err)
	}
	var keys []string
	for _, e := range es {
		keys = append(keys, e.Key)
	}
	return keys
}

func TestFleetEndToEnd(t *testing.T) {
	f := newFleet3(t)
	srv := f.http[0]
	ctx := context.Background()
	st := storeAt(t, f.nats)
	desired, err := st.Open(ctx, "desired-state")
	if err != nil {
		t.Fatal(err)
	}
	deployments, err := st.Open(ctx, "deployments")
	if err != nil {
		t.Fatal(err)
	}

	// Three labelled agents; a deployment selecting two of them.
	retry.Until(t, 30*time.Second, func() error {
		out, _, _ := cli(t, srv, "get", "devices")
		if strings.Count(out, "Online") != 3 {
			return fmt.Errorf("devices:\n%s", out)
		}
		return nil
	})
	out, errOut, code := cli(t, srv, "apply", "-f", deploymentFile(t, "web", "site: home", "v1"), "--wait", "--timeout", "30s")
	if code != 0 {
		t.Fatalf("apply --wait: exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(out, "2/2 succeeded") || !strings.Contains(out, "rolled out") {
		t.Fatalf("apply --wait output:\n%s", out)
	}
	waitCounts(t, srv, "web", 2, 2, 0)

	// Relabelling moves the deployment: a3 joins, a2 leaves.
	if _, e, c := cli(t, srv, "label", "device", "a2", "site=office"); c != 0 {
		t.Fatal(e)
	}
	if _, e, c := cli(t, srv, "label", "device", "a3", "site=home"); c != 0 {
		t.Fatal(e)
	}
	waitCounts(t, srv, "web", 2, 2, 0)
	retry.Until(t, 20*time.Second, func() error {
		keys := strings.Join(f.desiredKeys(ctx, desired), ",")
		if keys != "a1.web,a3.web" {
			return fmt.Errorf("desired keys %s", keys)
		}
		return nil
	})
	// k- removes a control-plane label even though the agent reports it.
	if _, e, c := cli(t, srv, "label", "device", "a1", "site-"); c != 0 {
		t.Fatal(e)
	}
	waitCounts(t, srv, "web", 1, 1, 0)
	if _, e, c := cli(t, srv, "label", "device", "a1", "site=home"); c != 0 {
		t.Fatal(e)
	}
	waitCounts(t, srv, "web", 2, 2, 0)

	// A stopped agent counts as offline within the staleness window, not as
	// succeeded.
	if code := f.agents["a1"].signalAndWait(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("agent exit %d", code)
	}
	waitCounts(t, srv, "web", 2, 1, 1)
	devOut, _, _ := cli(t, srv, "get", "devices")
	if !strings.Contains(devOut, "a1") || !strings.Contains(devOut, "Offline") {
		t.Fatalf("devices after stopping a1:\n%s", devOut)
	}
	// Commands to an offline device fail at once with a clear error; an
	// online one answers (the job's output through logs).
	start := time.Now()
	if _, e, c := cli(t, srv, "logs", "a1", "hello"); c == 0 || !strings.Contains(e, "offline") {
		t.Fatalf("logs of an offline device: exit %d, %q", c, e)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("a command to an offline device hung")
	}
	if o, e, c := cli(t, srv, "logs", "a3", "hello"); c != 0 || strings.TrimSpace(o) != "v1" {
		t.Fatalf("logs of a3's job: exit %d, %q %q", c, o, e)
	}
	// exec reaches the agent, which refuses it: exec is off unless enabled.
	if _, e, c := cli(t, srv, "exec", "a3", "--", "id"); c == 0 || !strings.Contains(e, "disabled") {
		t.Fatalf("exec on an agent without exec: exit %d, %q", c, e)
	}

	// Bad YAML and invalid specs are refused with the line or field; nothing
	// stored changes.
	before := f.desiredKeys(ctx, deployments)
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("apiVersion: harmony/v1alpha1\nkind: Deployment\nmetadata:\n  name: [broken\n"), 0o644)
	if _, e, c := cli(t, srv, "apply", "-f", bad); c == 0 || !strings.Contains(e, "line") {
		t.Fatalf("bad YAML: exit %d, stderr %q", c, e)
	}
	os.WriteFile(bad, []byte("apiVersion: harmony/v1alpha1\nkind: Deployment\nmetadata: {name: other}\nspec:\n  resources:\n  - id: f\n    kind: File\n    spec: {path: relative, content: x}\n"), 0o644)
	if _, e, c := cli(t, srv, "apply", "-f", bad); c == 0 || !strings.Contains(e, "spec.resources[0].spec.path") {
		t.Fatalf("invalid spec: exit %d, stderr %q", c, e)
	}
	if after := f.desiredKeys(ctx, deployments); strings.Join(after, ",") != strings.Join(before, ",") {
		t.Fatalf("a refused apply changed the deployments: %v -> %v", before, after)
	}

	// SIGKILL the server while things change; a deployment deleted while it
	// was down loses its desired state at convergence; the restarted server
	// shows the same counts as a fresh one.
	if _, e, c := cli(t, srv, "apply", "-f", deploymentFile(t, "gone", "site: office", "x")); c != 0 {
		t.Fatal(e)
	}
	retry.Until(t, 20*time.Second, func() error {
		if _, err := desired.Get(ctx, "a2.gone"); err != nil {
			return err
		}
		return nil
	})
	if err := f.servers[0].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-f.servers[0].done
	f.startAgent("a1", "home") // an agent comes back meanwhile
	cur, err := deployments.Get(ctx, "gone")
	if err != nil {
		t.Fatal(err)
	}
	if err := deployments.Delete(ctx, "gone", cur.Revision); err != nil {
		t.Fatal(err)
	}
	p, srv2 := startServerAt(t, f.nats)
	f.servers = append(f.servers, p)
	retry.Until(t, 20*time.Second, func() error {
		if _, err := desired.Get(ctx, "a2.gone"); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("orphaned desired state still there: %v", err)
		}
		return nil
	})
	waitCounts(t, srv2, "web", 2, 2, 0)
	_, fresh := startServerAt(t, f.nats)
	waitCounts(t, fresh, "web", 2, 2, 0)
	a, _ := describe(t, srv2, "web")
	b, _ := describe(t, fresh, "web")
	a.Status.Devices, b.Status.Devices = nil, nil // the counts, as before the shared types
	if !reflect.DeepEqual(a.Status, b.Status) {
		t.Fatalf("restarted server shows %+v, a fresh one %+v", a.Status, b.Status)
	}

	// Two servers render byte-identical values and never fight: after a new
	// generation, every desired key's revision settles and stays.
	writesBefore := metric(t, srv2, "harmony_operator_desired_writes_total") + metric(t, fresh, "harmony_operator_desired_writes_total")
	if _, e, c := cli(t, srv2, "apply", "-f", deploymentFile(t, "web", "site: home", "v2")); c != 0 {
		t.Fatal(e)
	}
	waitCounts(t, fresh, "web", 2, 2, 0)
	revs := func() map[string]uint64 {
		es, err := desired.List(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]uint64{}
		for _, e := range es {
			out[e.Key] = e.Revision
		}
		return out
	}
	r1 := revs()
	// Let both operators react to many heartbeat and status changes.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		waitCounts(t, fresh, "web", 2, 2, 0)
	}
	if r2 := revs(); fmt.Sprint(r1) != fmt.Sprint(r2) {
		t.Fatalf("desired state keeps being rewritten: %v -> %v", r1, r2)
	}
	// Across both operators, generation 2 cost exactly one write per key.
	if got := metric(t, srv2, "harmony_operator_desired_writes_total") + metric(t, fresh, "harmony_operator_desired_writes_total") - writesBefore; got != float64(len(r1)) {
		t.Fatalf("%v desired-state writes for %d keys", got, len(r1))
	}
}

// metric reads one unlabelled value from a server's /metrics.
func metric(t testing.TB, server, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + server + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}
