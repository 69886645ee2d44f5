package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/testutil/podmantest"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
	"github.com/harmony-fleet/harmony/internal/testutil/systemdtest"
)

// fleetEnv is a real server and a real agent, both the harmony binary, with
// systemd running in a container and podman on the host.
type fleetEnv struct {
	t         testing.TB
	natsURL   string
	httpAddr  string
	dataDir   string
	root      string // the agent's allowed root
	stateDir  string
	sys       *systemdtest.Systemd
	server    *proc
	agent     *proc
	status    store.KV
	container string
}

func newFleetEnv(t testing.TB) *fleetEnv {
	if err := podmantest.Setup(); err != nil {
		t.Fatal(err)
	}
	e := &fleetEnv{t: t, dataDir: t.TempDir(), root: t.TempDir(), stateDir: t.TempDir(), sys: systemdtest.Start(t),
		natsURL: fmt.Sprintf("nats://127.0.0.1:%d", freePort(t)), httpAddr: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	e.container = podmantest.Name(t)
	t.Cleanup(func() { _ = exec.Command("podman", "rm", "-f", "-t", "0", e.container).Run() })
	e.startServer()
	st := storeAt(t, e.natsURL)
	var err error
	if e.status, err = st.Open(context.Background(), "device-state"); err != nil {
		t.Fatal(err)
	}
	e.startAgent()
	return e
}

func (e *fleetEnv) startServer() {
	e.server = startHarmony(e.t, "server", "--data-dir", e.dataDir, "--nats", strings.TrimPrefix(e.natsURL, "nats://"), "--http", e.httpAddr)
	waitReady(e.t, "http://"+e.httpAddr)
}

func (e *fleetEnv) startAgent() {
	e.agent = startHarmony(e.t, "agent", "--http", "127.0.0.1:0", "--id", "dev-1", "--nats-url", e.natsURL, "--state-dir", e.stateDir,
		"--label", "site=home", "--allowed-roots", e.root, "--systemd-unit-dir", e.sys.UnitDir, "--systemd-bus", e.sys.BusAddress, "--capabilities", "systemd_unit_files",
		"--heartbeat-interval", "1s", "--resync-interval", "1s", "--retry-initial", "200ms", "--retry-max", "2s")
}

// apply sends deployment "web" (selecting site=home) through the HTTP API
// and returns the generation the server gave it.
func (e *fleetEnv) apply(resources ...v1.Resource) int64 {
	e.t.Helper()
	gen, err := e.tryApply(resources...)
	if err != nil {
		e.t.Fatal(err)
	}
	return gen
}

func (e *fleetEnv) tryApply(resources ...v1.Resource) (int64, error) {
	if resources == nil {
		resources = []v1.Resource{}
	}
	d := v1.Deployment{APIVersion: v1.APIVersion, Kind: "Deployment", Metadata: v1.Metadata{Name: "web"},
		Spec: v1.DeploymentSpec{Selector: v1.Selector{MatchLabels: map[string]string{"site": "home"}}, Resources: resources}}
	body, _ := json.Marshal(d)
	resp, err := apiClient.Post("http://"+e.httpAddr+"/api/v1/deployments", "application/yaml", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("apply: %d %s", resp.StatusCode, out)
	}
	var res struct {
		Items []struct {
			Generation int64 `json:"generation"`
		} `json:"items"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.Items) != 1 {
		return 0, fmt.Errorf("apply answer %s: %v", out, err)
	}
	return res.Items[0].Generation, nil
}

func (e *fleetEnv) waitStatus(what string, ok func(v1.DeviceState) error) v1.DeviceState {
	e.t.Helper()
	var s v1.DeviceState
	retry.Until(e.t, 60*time.Second, func() error {
		entry, err := e.status.Get(context.Background(), "dev-1.web")
		if err != nil {
			return err
		}
		if s, err = v1.DecodeDeviceState(entry.Value); err != nil {
			return err
		}
		if err := ok(s); err != nil {
			return fmt.Errorf("%s: %v (status %+v)", what, err, s)
		}
		return nil
	})
	return s
}

func ready(gen int64) func(v1.DeviceState) error {
	return func(s v1.DeviceState) error {
		if s.ObservedGeneration != gen || s.Phase != v1.PhaseReady {
			return fmt.Errorf("phase %s at generation %d", s.Phase, s.ObservedGeneration)
		}
		return nil
	}
}

func res(id, kind string, spec any) v1.Resource {
	b, _ := json.Marshal(spec)
	return v1.Resource{ID: id, Kind: kind, Spec: b}
}

func (e *fleetEnv) containerID() string {
	out, err := exec.Command("podman", "container", "inspect", "--format", "{{.Id}}", e.container).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

func (e *fleetEnv) resources(mode, env string, withContainer bool) []v1.Resource {
	rs := []v1.Resource{
		res("conf", v1.KindFile, map[string]any{"path": filepath.Join(e.root, "app.conf"), "content": "port=80\n", "mode": mode}),
		res("svc", v1.KindSystemdUnit, map[string]any{"name": "harmony-e2e.service",
			"content": "[Service]\nExecStart=/usr/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n"}),
	}
	if withContainer {
		rs = append(rs, res("app", v1.KindContainer, map[string]any{"name": e.container, "image": podmantest.Image,
			"command": []string{"sleep"}, "args": []string{"3600"}, "env": map[string]string{"MODE": env}, "stopTimeoutSeconds": 1}))
	}
	return rs
}

// The acceptance list of the agent issue, end to end with the real binary,
// real podman, real systemd and the real embedded NATS of `harmony server`.
func TestAgentEndToEnd(t *testing.T) {
	e := newFleetEnv(t)
	conf := filepath.Join(e.root, "app.conf")
	unitFile := filepath.Join(e.sys.UnitDir, "harmony-e2e.service")
	foreign := filepath.Join(e.root, "foreign.txt")
	if err := os.WriteFile(foreign, []byte("not harmony's"), 0o644); err != nil {
		t.Fatal(err)
	}

	// A deployment with a File, a Container and a SystemdUnit reaches Ready.
	gen := e.apply(e.resources("0644", "a", true)...)
	s := e.waitStatus("ready", ready(gen))
	details := map[string]map[string]string{}
	for _, r := range s.Resources {
		details[r.ID] = r.Details
	}
	if details["app"]["containerId"] == "" || details["app"]["state"] != "running" || details["app"]["startedAt"] == "" {
		t.Fatalf("container status details %v", details["app"])
	}
	if out, _ := e.sys.Exec("systemctl", "is-active", "harmony-e2e.service"); strings.TrimSpace(out) != "active" {
		t.Fatalf("unit is %q", out)
	}
	id := e.containerID()

	// A file edited by hand and a container stopped by hand are undone
	// within one resync.
	if err := os.WriteFile(conf, []byte("port=9999\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("podman", "stop", "-t", "0", e.container).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	retry.Until(t, 30*time.Second, func() error {
		if b, _ := os.ReadFile(conf); string(b) != "port=80\n" {
			return fmt.Errorf("conf = %q", b)
		}
		out, _ := exec.Command("podman", "container", "inspect", "--format", "{{.State.Running}}", e.container).Output()
		if strings.TrimSpace(string(out)) != "true" {
			return fmt.Errorf("container running = %s", out)
		}
		return nil
	})
	if got := e.containerID(); got != id {
		t.Fatal("restarting a stopped container recreated it")
	}

	// Changing the container's env replaces it once; re-applying the same
	// spec changes nothing (same generation) and recreates nothing.
	gen2 := e.apply(e.resources("0644", "b", true)...)
	if gen2 != gen+1 {
		t.Fatalf("generation %d after a spec change from %d", gen2, gen)
	}
	e.waitStatus("generation 2", ready(gen2))
	id2 := e.containerID()
	if id2 == id || id2 == "" {
		t.Fatalf("container not replaced: %s -> %s", id, id2)
	}
	if again := e.apply(e.resources("0644", "b", true)...); again != gen2 {
		t.Fatalf("re-applying the same spec moved the generation to %d", again)
	}
	e.waitStatus("still generation 2", ready(gen2))
	if got := e.containerID(); got != id2 {
		t.Fatal("re-applying the same spec recreated the container")
	}

	// An invalid value is refused with the field named; nothing changes.
	if _, err := e.tryApply(e.resources("9999", "b", true)...); err == nil || !strings.Contains(err.Error(), "spec.resources[0].spec.mode") {
		t.Fatalf("bad mode: %v, want a refusal naming spec.resources[0].spec.mode", err)
	}
	// A path the server cannot judge but the device refuses (outside its
	// allowed roots): typed status naming the field; nothing running is
	// disturbed.
	outside := filepath.Join(t.TempDir(), "x.conf")
	bad := e.resources("0644", "b", true)
	bad[0] = res("conf", v1.KindFile, map[string]any{"path": outside, "content": "x"})
	gen3 := e.apply(bad...)
	s = e.waitStatus("refused", func(s v1.DeviceState) error {
		if s.Phase != v1.PhaseFailed {
			return fmt.Errorf("phase %s", s.Phase)
		}
		return nil
	})
	var field string
	for _, r := range s.Resources {
		if r.ID == "conf" {
			field = r.Field
		}
	}
	if field != "resources[0].spec.path" || s.ObservedGeneration != gen2 || !strings.Contains(s.Message, fmt.Sprintf("generation %d refused", gen3)) {
		t.Fatalf("refused status: field %q, observed generation %d, message %q", field, s.ObservedGeneration, s.Message)
	}
	if got := e.containerID(); got != id2 {
		t.Fatal("a refused update disturbed the container")
	}
	if b, _ := os.ReadFile(conf); string(b) != "port=80\n" {
		t.Fatalf("a refused update disturbed the file: %q", b)
	}
	if _, err := os.Stat(outside); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a file was written outside the allowed roots")
	}

	// Removing a resource removes what the agent created; deleting the
	// deployment removes the rest; nothing else is touched.
	gen5 := e.apply(e.resources("0644", "b", false)...)
	e.waitStatus("without the container", ready(gen5))
	retry.Until(t, 30*time.Second, func() error {
		if e.containerID() != "" {
			return errors.New("container still there")
		}
		return nil
	})
	req, _ := http.NewRequest(http.MethodDelete, "http://"+e.httpAddr+"/api/v1/deployments/web", nil)
	resp, err := apiClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("delete: %v %v", resp, err)
	}
	resp.Body.Close()
	retry.Until(t, 30*time.Second, func() error {
		for _, p := range []string{conf, unitFile} {
			if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("%s still there", p)
			}
		}
		return nil
	})
	if b, err := os.ReadFile(foreign); err != nil || string(b) != "not harmony's" {
		t.Fatalf("a file the agent does not own was touched: %q %v", b, err)
	}

	// With the mesh down, a restarted agent still enforces its last desired
	// state.
	gen6 := e.apply(e.resources("0644", "b", false)[:1]...)
	e.waitStatus("file only", ready(gen6))
	if code := e.server.signalAndWait(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("server exit %d", code)
	}
	if code := e.agent.signalAndWait(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("agent exit %d; stderr:\n%s", code, e.agent.stderr)
	}
	if err := os.WriteFile(conf, []byte("tampered\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.startAgent()
	retry.Until(t, 30*time.Second, func() error {
		if b, _ := os.ReadFile(conf); string(b) != "port=80\n" {
			return fmt.Errorf("conf = %q", b)
		}
		return nil
	})
}
