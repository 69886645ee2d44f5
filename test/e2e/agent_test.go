package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	desired   store.KV
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
	if e.desired, err = st.Open(context.Background(), "desired-state"); err != nil {
		t.Fatal(err)
	}
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
	e.agent = startHarmony(e.t, "agent", "--id", "dev-1", "--nats-url", e.natsURL, "--state-dir", e.stateDir,
		"--label", "site=home", "--allowed-roots", e.root, "--systemd-unit-dir", e.sys.UnitDir, "--systemd-bus", e.sys.BusAddress,
		"--heartbeat-interval", "1s", "--resync-interval", "1s", "--retry-initial", "200ms", "--retry-max", "2s")
}

func (e *fleetEnv) put(gen int64, resources ...v1.Resource) {
	e.t.Helper()
	b, err := v1.Marshal(v1.DesiredState{V: 1, Device: "dev-1", Deployment: "web", Generation: gen, Resources: resources})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx := context.Background()
	cur, err := e.desired.Get(ctx, "dev-1.web")
	switch {
	case errors.Is(err, store.ErrNotFound):
		_, err = e.desired.Create(ctx, "dev-1.web", b)
	case err == nil:
		_, err = e.desired.Update(ctx, "dev-1.web", b, cur.Revision)
	}
	if err != nil {
		e.t.Fatal(err)
	}
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
	e.put(1, e.resources("0644", "a", true)...)
	s := e.waitStatus("ready", ready(1))
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
	// spec recreates nothing.
	e.put(2, e.resources("0644", "b", true)...)
	e.waitStatus("generation 2", ready(2))
	id2 := e.containerID()
	if id2 == id || id2 == "" {
		t.Fatalf("container not replaced: %s -> %s", id, id2)
	}
	e.put(3, e.resources("0644", "b", true)...) // same spec, new generation
	e.waitStatus("generation 3", ready(3))
	if got := e.containerID(); got != id2 {
		t.Fatal("re-applying the same spec recreated the container")
	}

	// An invalid value gives a typed status naming the field, and nothing
	// that runs is disturbed.
	e.put(4, e.resources("9999", "b", true)...)
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
	if field != "resources[0].spec.mode" || s.ObservedGeneration != 3 {
		t.Fatalf("refused status: field %q, observed generation %d", field, s.ObservedGeneration)
	}
	if got := e.containerID(); got != id2 {
		t.Fatal("a refused update disturbed the container")
	}

	// Removing a resource removes what the agent created; deleting the
	// deployment removes the rest; nothing else is touched.
	e.put(5, e.resources("0644", "b", false)...)
	e.waitStatus("generation 5", ready(5))
	retry.Until(t, 30*time.Second, func() error {
		if e.containerID() != "" {
			return errors.New("container still there")
		}
		return nil
	})
	cur, _ := e.desired.Get(context.Background(), "dev-1.web")
	if err := e.desired.Delete(context.Background(), "dev-1.web", cur.Revision); err != nil {
		t.Fatal(err)
	}
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
	e.put(6, e.resources("0644", "b", false)[:1]...)
	e.waitStatus("generation 6", ready(6))
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
