package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/harmony-fleet/harmony/internal/testutil/leak"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/agent"
	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/mesh"
	"github.com/harmony-fleet/harmony/internal/mesh/meshtest"
	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

func TestMain(m *testing.M) { leak.VerifyTestMain(m) }

// fleet is an embedded NATS with the fleet buckets, as the server makes them.
type fleet struct {
	srv   *mesh.Server
	nc    *nats.Conn // the control plane's connection
	kvs   map[string]store.KV
	close func()
}

func startFleet(t *testing.T) *fleet {
	t.Helper()
	return fleetOn(t, meshtest.StartServer(t))
}

// fleetOn ensures the fleet buckets on srv and opens them.
func fleetOn(t *testing.T, srv *mesh.Server) *fleet {
	t.Helper()
	f := fleetAt(t, srv.ClientURL())
	f.srv = srv
	return f
}

func agentConfig(t *testing.T, natsURL, root, stateDir string) config.Agent {
	cfg := config.DefaultAgent()
	cfg.ID = "dev-1"
	cfg.HTTP = "127.0.0.1:0"
	cfg.NATSURLs = []string{natsURL}
	cfg.StateDir = stateDir
	cfg.AllowedRoots = []string{root}
	cfg.Labels = map[string]string{"site": "home"}
	cfg.HeartbeatInterval = config.Duration(200 * time.Millisecond)
	cfg.ResyncInterval = config.Duration(300 * time.Millisecond)
	cfg.RetryInitial = config.Duration(100 * time.Millisecond)
	cfg.RetryMax = config.Duration(time.Second)
	cfg.ShellJobs = true
	cfg.Exec = true
	return cfg
}

func startAgent(t *testing.T, cfg config.Agent) func() {
	t.Helper()
	a, err := agent.New(cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), agent.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("agent Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("agent did not stop within 30s")
		}
	}
	t.Cleanup(stop)
	return stop
}

func (f *fleet) putDesired(t *testing.T, ds v1.DesiredState) {
	t.Helper()
	b, err := v1.Marshal(ds)
	if err != nil {
		t.Fatal(err)
	}
	f.putRaw(t, v1.DeviceKey(ds.Device, ds.Deployment), b)
}

func (f *fleet) putRaw(t *testing.T, key string, b []byte) {
	t.Helper()
	kv := f.kvs["desired-state"]
	ctx := context.Background()
	e, err := kv.Get(ctx, key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		_, err = kv.Create(ctx, key, b)
	case err == nil:
		_, err = kv.Update(ctx, key, b, e.Revision)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func (f *fleet) status(t *testing.T, dep string) (v1.DeviceState, error) {
	e, err := f.kvs["device-state"].Get(context.Background(), "dev-1."+dep)
	if err != nil {
		return v1.DeviceState{}, err
	}
	return v1.DecodeDeviceState(e.Value)
}

func (f *fleet) waitStatus(t *testing.T, dep string, ok func(v1.DeviceState) error) v1.DeviceState {
	t.Helper()
	var s v1.DeviceState
	retry.Until(t, 20*time.Second, func() error {
		var err error
		if s, err = f.status(t, dep); err != nil {
			return err
		}
		return ok(s)
	})
	return s
}

func fileRes(id, path, content, mode string) v1.Resource {
	spec, _ := json.Marshal(map[string]string{"path": path, "content": content, "mode": mode})
	return v1.Resource{ID: id, Kind: v1.KindFile, Spec: spec}
}

func readyAt(gen int64) func(v1.DeviceState) error {
	return func(s v1.DeviceState) error {
		if s.ObservedGeneration != gen || s.Phase != v1.PhaseReady {
			return fmt.Errorf("phase %s at generation %d (%s)", s.Phase, s.ObservedGeneration, s.Message)
		}
		return nil
	}
}

func TestAgentConvergesFiles(t *testing.T) {
	f := startFleet(t)
	root := t.TempDir()
	startAgent(t, agentConfig(t, f.srv.ClientURL(), root, t.TempDir()))

	// Device info and heartbeats arrive.
	retry.Until(t, 20*time.Second, func() error {
		e, err := f.kvs["device-info"].Get(context.Background(), "dev-1")
		if err != nil {
			return err
		}
		info, err := v1.DecodeDeviceInfo(e.Value)
		if err != nil || info.Labels["site"] != "home" || info.Inventory.CPUs == 0 {
			return fmt.Errorf("device info %+v %v", info, err)
		}
		return nil
	})
	var firstSeq uint64
	retry.Until(t, 20*time.Second, func() error {
		e, err := f.kvs["device-heartbeat"].Get(context.Background(), "dev-1")
		if err != nil {
			return err
		}
		if len(e.Value) >= 100 {
			t.Fatalf("heartbeat of %d bytes", len(e.Value))
		}
		h, err := v1.DecodeHeartbeat(e.Value)
		if err != nil {
			return err
		}
		if firstSeq == 0 {
			firstSeq = h.Seq
		}
		if h.Seq < firstSeq+2 {
			return fmt.Errorf("heartbeat seq %d not advancing yet", h.Seq)
		}
		return nil
	})

	conf := filepath.Join(root, "app", "app.conf")
	keep := filepath.Join(root, "not-ours.txt")
	if err := os.WriteFile(keep, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	f.putDesired(t, v1.DesiredState{V: 1, Device: "dev-1", Deployment: "web", Generation: 1, Resources: []v1.Resource{
		fileRes("conf", conf, "port=80\n", "0640"),
		fileRes("motd", filepath.Join(root, "motd"), "hi\n", ""),
	}})
	f.waitStatus(t, "web", readyAt(1))
	if b, _ := os.ReadFile(conf); string(b) != "port=80\n" {
		t.Fatalf("conf = %q", b)
	}

	// Drift: a hand edit is undone within a resync.
	if err := os.WriteFile(conf, []byte("port=8080\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	retry.Until(t, 10*time.Second, func() error {
		if b, _ := os.ReadFile(conf); string(b) != "port=80\n" {
			return fmt.Errorf("still %q", b)
		}
		return nil
	})

	// An invalid update is refused with the field named; generation 1 stays.
	f.putDesired(t, v1.DesiredState{V: 1, Device: "dev-1", Deployment: "web", Generation: 2, Resources: []v1.Resource{
		fileRes("conf", conf, "port=81\n", "0999"),
		fileRes("motd", filepath.Join(root, "motd"), "hi\n", ""),
	}})
	s := f.waitStatus(t, "web", func(s v1.DeviceState) error {
		if s.Phase != v1.PhaseFailed {
			return fmt.Errorf("phase %s", s.Phase)
		}
		return nil
	})
	if s.ObservedGeneration != 1 || s.RefusedGeneration != 2 || !strings.Contains(s.Message, "generation 1 is still enforced") {
		t.Fatalf("status %+v", s)
	}
	var field string
	for _, r := range s.Resources {
		if r.ID == "conf" {
			field = r.Field
		}
	}
	if field != "resources[0].spec.mode" {
		t.Fatalf("field at fault %q, want resources[0].spec.mode; status %+v", field, s)
	}
	if b, _ := os.ReadFile(conf); string(b) != "port=80\n" {
		t.Fatalf("a refused update changed the file: %q", b)
	}

	// A path outside the allowed roots and an unknown kind: refused, typed.
	outside := filepath.Join(t.TempDir(), "x")
	f.putDesired(t, v1.DesiredState{V: 1, Device: "dev-1", Deployment: "web", Generation: 3, Resources: []v1.Resource{
		fileRes("conf", outside, "x", ""),
		{ID: "tele", Kind: "Teleporter", Spec: json.RawMessage(`{}`)},
	}})
	s = f.waitStatus(t, "web", func(s v1.DeviceState) error {
		if !strings.Contains(s.Message, "generation 3 refused") || s.RefusedGeneration != 3 {
			return fmt.Errorf("message %q, refused generation %d", s.Message, s.RefusedGeneration)
		}
		return nil
	})
	phases := map[string]v1.ResourceStatus{}
	for _, r := range s.Resources {
		phases[r.ID] = r
	}
	if phases["conf"].Phase != v1.PhaseInvalid || phases["conf"].Field != "resources[0].spec.path" {
		t.Fatalf("outside path status %+v", phases["conf"])
	}
	if phases["tele"].Phase != v1.PhaseUnsupported {
		t.Fatalf("unknown kind status %+v", phases["tele"])
	}
	if _, err := os.Stat(outside); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a file was written outside the allowed roots")
	}

	// Removing a resource removes the file; the deployment's other file and
	// files the agent does not own stay.
	f.putDesired(t, v1.DesiredState{V: 1, Device: "dev-1", Deployment: "web", Generation: 4, Resources: []v1.Resource{
		fileRes("motd", filepath.Join(root, "motd"), "hi\n", ""),
	}})
	f.waitStatus(t, "web", readyAt(4))
	retry.Until(t, 10*time.Second, func() error {
		if _, err := os.Stat(conf); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("conf still there")
		}
		return nil
	})
	// Deleting the deployment removes the rest and its status.
	e, _ := f.kvs["desired-state"].Get(context.Background(), "dev-1.web")
	if err := f.kvs["desired-state"].Delete(context.Background(), "dev-1.web", e.Revision); err != nil {
		t.Fatal(err)
	}
	retry.Until(t, 10*time.Second, func() error {
		if _, err := os.Stat(filepath.Join(root, "motd")); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("motd still there")
		}
		if _, err := f.status(t, "web"); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("status still there: %v", err)
		}
		return nil
	})
	if b, err := os.ReadFile(keep); err != nil || string(b) != "mine" {
		t.Fatalf("a file the agent does not own was touched: %q %v", b, err)
	}
}

func TestAgentConflictRule(t *testing.T) {
	f := startFleet(t)
	root := t.TempDir()
	startAgent(t, agentConfig(t, f.srv.ClientURL(), root, t.TempDir()))
	shared := filepath.Join(root, "shared.conf")
	f.putDesired(t, v1.DesiredState{V: 1, Device: "dev-1", Deployment: "zeta", Generation: 1, Resources: []v1.Resource{fileRes("c", shared, "zeta\n", "")}})
	f.waitStatus(t, "zeta", readyAt(1))
	// alpha sorts first, but zeta owns the file: zeta keeps it.
	f.putDesired(t, v1.DesiredState{V: 1, Device: "dev-1", Deployment: "alpha", Generation: 1, Resources: []v1.Resource{fileRes("c", shared, "alpha\n", "")}})
	s := f.waitStatus(t, "alpha", func(s v1.DeviceState) error {
		if s.Phase != v1.PhaseConflict {
			return fmt.Errorf("phase %s", s.Phase)
		}
		return nil
	})
	if !strings.Contains(s.Resources[0].Message, "zeta") {
		t.Fatalf("conflict does not name the winner: %+v", s.Resources[0])
	}
	// The deployment's one line says which resource and why, not only how
	// many: it is what `apply --wait` and the deployment list show.
	if want := "1 resource(s) in conflict (first: c: File"; !strings.HasPrefix(s.Message, want) || !strings.Contains(s.Message, "zeta") {
		t.Fatalf("deployment message %q, want %q... naming zeta", s.Message, want)
	}
	if b, _ := os.ReadFile(shared); string(b) != "zeta\n" {
		t.Fatalf("shared = %q", b)
	}
}

func TestAgentEnforcesCacheWithoutMesh(t *testing.T) {
	f := startFleet(t)
	root, stateDir := t.TempDir(), t.TempDir()
	cfg := agentConfig(t, f.srv.ClientURL(), root, stateDir)
	stop := startAgent(t, cfg)
	conf := filepath.Join(root, "conf")
	f.putDesired(t, v1.DesiredState{V: 1, Device: "dev-1", Deployment: "web", Generation: 1, Resources: []v1.Resource{fileRes("c", conf, "v1\n", "")}})
	f.waitStatus(t, "web", readyAt(1))
	stop()
	f.srv.Shutdown()

	// The mesh is gone; a restarted agent still enforces what it had.
	if err := os.WriteFile(conf, []byte("tampered\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	startAgent(t, cfg)
	retry.Until(t, 10*time.Second, func() error {
		if b, _ := os.ReadFile(conf); string(b) != "v1\n" {
			return fmt.Errorf("conf = %q", b)
		}
		return nil
	})
}

func TestAgentCommands(t *testing.T) {
	f := startFleet(t)
	startAgent(t, agentConfig(t, f.srv.ClientURL(), t.TempDir(), t.TempDir()))
	nc := meshtest.Connect(t, f.srv)
	ask := func(req v1.CommandRequest) v1.CommandReply {
		b, _ := json.Marshal(req)
		var reply v1.CommandReply
		retry.Until(t, 10*time.Second, func() error {
			m, err := nc.Request(v1.CommandSubject("dev-1"), b, 5*time.Second)
			if err != nil {
				return err
			}
			return json.Unmarshal(m.Data, &reply)
		})
		return reply
	}
	if r := ask(v1.CommandRequest{Op: v1.OpPing}); !r.OK || r.Device != "dev-1" {
		t.Fatalf("ping: %+v", r)
	}
	if r := ask(v1.CommandRequest{Op: v1.OpExec, Command: []string{"echo", "hello"}}); !r.OK || r.Output != "hello\n" {
		t.Fatalf("exec: %+v", r)
	}
	if r := ask(v1.CommandRequest{Op: "format-disk"}); r.OK || r.Code != v1.CodeInvalid {
		t.Fatalf("unknown op: %+v", r)
	}
	// A job's output is readable through logs once it ran.
	job, _ := json.Marshal(map[string]any{"command": []string{"sh", "-c", "echo one; echo two; echo three"}})
	f.putDesired(t, v1.DesiredState{V: 1, Device: "dev-1", Deployment: "jobs", Generation: 1,
		Resources: []v1.Resource{{ID: "hello", Kind: v1.KindShellJob, Spec: job}}})
	f.waitStatus(t, "jobs", readyAt(1))
	if r := ask(v1.CommandRequest{Op: v1.OpLogs, Resource: "hello", Lines: 2}); !r.OK || r.Output != "two\nthree\n" {
		t.Fatalf("logs: %+v", r)
	}
	if r := ask(v1.CommandRequest{Op: v1.OpLogs, Resource: "nope"}); r.OK || r.Code != v1.CodeNotFound {
		t.Fatalf("logs of a missing resource: %+v", r)
	}
}

func TestExecDisabledByDefault(t *testing.T) {
	f := startFleet(t)
	cfg := agentConfig(t, f.srv.ClientURL(), t.TempDir(), t.TempDir())
	cfg.Exec = false
	cfg.ShellJobs = false
	startAgent(t, cfg)
	nc := meshtest.Connect(t, f.srv)
	b, _ := json.Marshal(v1.CommandRequest{Op: v1.OpExec, Command: []string{"id"}})
	var reply v1.CommandReply
	retry.Until(t, 10*time.Second, func() error {
		m, err := nc.Request(v1.CommandSubject("dev-1"), b, 5*time.Second)
		if err != nil {
			return err
		}
		return json.Unmarshal(m.Data, &reply)
	})
	if reply.OK || reply.Code != v1.CodeDisabled {
		t.Fatalf("exec with exec disabled: %+v", reply)
	}
	// A ShellJob on a device without shell_jobs is refused, typed.
	job, _ := json.Marshal(map[string]any{"command": []string{"true"}})
	f.putDesired(t, v1.DesiredState{V: 1, Device: "dev-1", Deployment: "jobs", Generation: 1,
		Resources: []v1.Resource{{ID: "j", Kind: v1.KindShellJob, Spec: job}}})
	s := f.waitStatus(t, "jobs", func(s v1.DeviceState) error {
		if s.Phase != v1.PhaseFailed {
			return fmt.Errorf("phase %s", s.Phase)
		}
		return nil
	})
	if s.Resources[0].Phase != v1.PhaseInvalid || s.Resources[0].Field != "resources[0].kind" {
		t.Fatalf("status %+v", s.Resources)
	}
}

// An agent started while the mesh is down enforces its cache, then joins when
// the mesh comes back on the same address: heartbeats resume and a new
// desired state is applied, without restarting the agent.
func TestAgentCatchesUpWhenMeshReturns(t *testing.T) {
	dir := t.TempDir()
	cfg := mesh.ServerConfig{Name: "n", DataDir: dir, Listen: fmt.Sprintf("127.0.0.1:%d", freePort(t)), SyncAlways: true}
	srv, err := mesh.StartServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := fleetOn(t, srv)
	root, stateDir := t.TempDir(), t.TempDir()
	acfg := agentConfig(t, "nats://"+cfg.Listen, root, stateDir)
	stop := startAgent(t, acfg)
	conf := filepath.Join(root, "conf")
	f.putDesired(t, v1.DesiredState{V: 1, Device: "dev-1", Deployment: "web", Generation: 1, Resources: []v1.Resource{fileRes("c", conf, "v1\n", "")}})
	f.waitStatus(t, "web", readyAt(1))
	stop()
	f.close()
	srv.Shutdown()

	startAgent(t, acfg) // the mesh is down
	retry.Until(t, 10*time.Second, func() error {
		if b, _ := os.ReadFile(conf); string(b) != "v1\n" {
			return fmt.Errorf("conf = %q", b)
		}
		return nil
	})
	srv2, err := mesh.StartServer(cfg) // back, same address and data
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv2.Shutdown)
	f2 := fleetOn(t, srv2)
	f2.putDesired(t, v1.DesiredState{V: 1, Device: "dev-1", Deployment: "web", Generation: 2, Resources: []v1.Resource{fileRes("c", conf, "v2\n", "")}})
	f2.waitStatus(t, "web", readyAt(2))
	if b, _ := os.ReadFile(conf); string(b) != "v2\n" {
		t.Fatalf("conf = %q after catching up", b)
	}
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestShellJobOfARecreatedDeploymentRuns: a deployment deleted and created
// again starts at generation 1 under a new UID; its job is another job and
// runs, although a job of the same id ran at generation 1 of the old one.
func TestShellJobOfARecreatedDeploymentRuns(t *testing.T) {
	f := startFleet(t)
	startAgent(t, agentConfig(t, f.srv.ClientURL(), t.TempDir(), t.TempDir()))
	out := filepath.Join(t.TempDir(), "ran")
	job := func(word string) json.RawMessage {
		b, _ := json.Marshal(map[string]any{"command": []string{"sh", "-c", "echo " + word + " > " + out}})
		return b
	}
	readyAs := func(uid string) func(v1.DeviceState) error {
		return func(s v1.DeviceState) error {
			if s.UID != uid || s.ObservedGeneration != 1 || s.Phase != v1.PhaseReady {
				return fmt.Errorf("phase %s at generation %d of %q (%s)", s.Phase, s.ObservedGeneration, s.UID, s.Message)
			}
			return nil
		}
	}
	f.putDesired(t, v1.DesiredState{V: 1, Device: "dev-1", Deployment: "jobs", UID: "OLD", Generation: 1,
		Resources: []v1.Resource{{ID: "j", Kind: v1.KindShellJob, Spec: job("one")}}})
	f.waitStatus(t, "jobs", readyAs("OLD"))
	f.putDesired(t, v1.DesiredState{V: 1, Device: "dev-1", Deployment: "jobs", UID: "NEW", Generation: 1,
		Resources: []v1.Resource{{ID: "j", Kind: v1.KindShellJob, Spec: job("two")}}})
	f.waitStatus(t, "jobs", readyAs("NEW"))
	if b, err := os.ReadFile(out); err != nil || string(b) != "two\n" {
		t.Fatalf("the re-created deployment's job did not run: %q %v", b, err)
	}
}

// TestRefusedFirstGenerationCarriesItsUID: a deployment whose very first
// desired state is refused reports the refusal under that deployment's
// UID, so the server counts it as failed (not as no status at all).
func TestRefusedFirstGenerationCarriesItsUID(t *testing.T) {
	f := startFleet(t)
	startAgent(t, agentConfig(t, f.srv.ClientURL(), t.TempDir(), t.TempDir()))
	outside := filepath.Join(t.TempDir(), "x")
	f.putDesired(t, v1.DesiredState{V: 1, Device: "dev-1", Deployment: "web", UID: "FIRST", Generation: 1,
		Resources: []v1.Resource{fileRes("conf", outside, "x", "")}})
	f.waitStatus(t, "web", func(s v1.DeviceState) error {
		if s.Phase != v1.PhaseFailed || s.UID != "FIRST" || s.RefusedGeneration != 1 || s.ObservedGeneration != 0 {
			return fmt.Errorf("status %s uid %q refused %d observed %d (%s)", s.Phase, s.UID, s.RefusedGeneration, s.ObservedGeneration, s.Message)
		}
		return nil
	})
}
