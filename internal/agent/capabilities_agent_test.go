package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
	"github.com/harmony-fleet/harmony/internal/testutil/systemdtest"
)

// refusedAt waits for generation gen to be refused while good stays
// enforced, and returns the refused resource's status.
func refusedAt(t *testing.T, f *fleet, dep string, gen, good int64) v1.ResourceStatus {
	t.Helper()
	s := f.waitStatus(t, dep, func(s v1.DeviceState) error {
		if !strings.Contains(s.Message, fmt.Sprintf("generation %d refused", gen)) {
			return fmt.Errorf("generation %d not refused yet: %s %s", gen, s.Phase, s.Message)
		}
		return nil
	})
	if s.Phase != v1.PhaseFailed || s.ObservedGeneration != good {
		t.Fatalf("phase %s at generation %d, want Failed with generation %d still enforced", s.Phase, s.ObservedGeneration, good)
	}
	for _, r := range s.Resources {
		if r.Phase == v1.PhaseInvalid {
			return r
		}
	}
	t.Fatalf("no Invalid resource in %+v", s.Resources)
	return v1.ResourceStatus{}
}

func wantRefusal(t *testing.T, r v1.ResourceStatus, field, capability string) {
	t.Helper()
	if r.Field != field {
		t.Errorf("refused field %q, want %q", r.Field, field)
	}
	for _, want := range []string{"capability " + capability, config.EnableHint(capability)} {
		if !strings.Contains(r.Message, want) {
			t.Errorf("refusal %q does not say %q", r.Message, want)
		}
	}
}

// A File whose mode has setuid or setgid bits is refused on a device that
// does not allow special_file_modes: typed status, no file, the last good
// generation untouched. Allowed, it is written with those bits.
func TestSpecialFileModesNeedTheCapability(t *testing.T) {
	f := startFleet(t)
	root := t.TempDir()
	startAgent(t, agentConfig(t, f.srv.ClientURL(), root, t.TempDir()))
	good := filepath.Join(root, "good")
	f.putDesired(t, v1.DesiredState{V: 1, Device: "dev-1", Deployment: "web", Generation: 1,
		Resources: []v1.Resource{fileRes("good", good, "v1\n", "0755")}})
	f.waitStatus(t, "web", readyAt(1))

	for i, mode := range []string{"4755", "2755", "6755"} {
		gen := int64(2 + i)
		path := filepath.Join(root, "su-"+mode)
		f.putDesired(t, v1.DesiredState{V: 1, Device: "dev-1", Deployment: "web", Generation: gen,
			Resources: []v1.Resource{fileRes("good", good, "v2\n", "0755"), fileRes("su", path, "#!/bin/sh\nid\n", mode)}})
		r := refusedAt(t, f, "web", gen, 1)
		wantRefusal(t, r, "resources[1].spec.mode", v1.CapabilitySpecialFileModes)
		if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("mode %s: %s was written", mode, path)
		}
		if b, _ := os.ReadFile(good); string(b) != "v1\n" {
			t.Fatalf("mode %s: the rest of the refused generation was applied: %q", mode, b)
		}
	}

	// The same device allowing special_file_modes writes them.
	f2 := startFleet(t)
	root2 := t.TempDir()
	cfg := agentConfig(t, f2.srv.ClientURL(), root2, t.TempDir())
	cfg.Capabilities = []string{v1.CapabilitySpecialFileModes}
	startAgent(t, cfg)
	su, sg := filepath.Join(root2, "su"), filepath.Join(root2, "sg")
	f2.putDesired(t, v1.DesiredState{V: 1, Device: "dev-1", Deployment: "web", Generation: 1,
		Resources: []v1.Resource{fileRes("su", su, "x\n", "4755"), fileRes("sg", sg, "x\n", "2755")}})
	f2.waitStatus(t, "web", readyAt(1))
	for path, bit := range map[string]fs.FileMode{su: fs.ModeSetuid, sg: fs.ModeSetgid} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode()&bit == 0 || fi.Mode().Perm() != 0o755 {
			t.Fatalf("%s: %v %v, want %v and 0755", path, fi.Mode(), err, bit)
		}
	}
}

// A SystemdUnit with content installs a unit file whose ExecStart systemd
// runs as root: refused on a device that does not allow
// systemd_unit_files, before anything is written or systemd is asked.
func TestUnitFilesNeedTheCapability(t *testing.T) {
	f := startFleet(t)
	root, unitDir := t.TempDir(), t.TempDir()
	cfg := agentConfig(t, f.srv.ClientURL(), root, t.TempDir())
	cfg.SystemdUnitDir = unitDir
	cfg.SystemdBus = "unix:path=" + filepath.Join(unitDir, "no-bus") // never reached
	startAgent(t, cfg)
	good := filepath.Join(root, "good")
	f.putDesired(t, v1.DesiredState{V: 1, Device: "dev-1", Deployment: "web", Generation: 1,
		Resources: []v1.Resource{fileRes("good", good, "v1\n", "")}})
	f.waitStatus(t, "web", readyAt(1))

	f.putDesired(t, v1.DesiredState{V: 1, Device: "dev-1", Deployment: "web", Generation: 2,
		Resources: []v1.Resource{fileRes("good", good, "v1\n", ""), unitRes("svc", "pwn.service", "[Service]\nExecStart=/bin/sh -c 'id > /tmp/pwned'\n")}})
	r := refusedAt(t, f, "web", 2, 1)
	wantRefusal(t, r, "resources[1].spec.content", v1.CapabilitySystemdUnitFiles)
	if entries, _ := os.ReadDir(unitDir); len(entries) != 0 {
		t.Fatalf("unit directory holds %v", entries)
	}
}

func unitRes(id, name, content string) v1.Resource {
	spec, _ := json.Marshal(map[string]any{"name": name, "content": content})
	return v1.Resource{ID: id, Kind: v1.KindSystemdUnit, Spec: spec}
}

// On a device that allows systemd_unit_files, the same unit is installed
// and runs (real systemd).
func TestUnitFilesAllowed(t *testing.T) {
	sys := systemdtest.Start(t)
	f := startFleet(t)
	cfg := agentConfig(t, f.srv.ClientURL(), t.TempDir(), t.TempDir())
	cfg.SystemdUnitDir, cfg.SystemdBus = sys.UnitDir, sys.BusAddress
	cfg.Capabilities = []string{v1.CapabilitySystemdUnitFiles}
	startAgent(t, cfg)
	f.putDesired(t, v1.DesiredState{V: 1, Device: "dev-1", Deployment: "web", Generation: 1,
		Resources: []v1.Resource{unitRes("svc", "harmony-cap.service", "[Service]\nExecStart=/usr/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n")}})
	f.waitStatus(t, "web", readyAt(1))
	if out, _ := sys.Exec("systemctl", "is-active", "harmony-cap.service"); strings.TrimSpace(out) != "active" {
		t.Fatalf("unit is %q", out)
	}
}

// An agent restarted with a capability turned off refuses the desired
// state it cached, and destroys nothing it applied before: refusing is not
// removing.
func TestCapabilityTurnedOffDestroysNothing(t *testing.T) {
	f := startFleet(t)
	root, state := t.TempDir(), t.TempDir()
	cfg := agentConfig(t, f.srv.ClientURL(), root, state)
	cfg.Capabilities = []string{v1.CapabilitySpecialFileModes}
	stop := startAgent(t, cfg)
	conf, su := filepath.Join(root, "app.conf"), filepath.Join(root, "su")
	f.putDesired(t, v1.DesiredState{V: 1, Device: "dev-1", Deployment: "web", Generation: 1,
		Resources: []v1.Resource{fileRes("conf", conf, "port=80\n", "0644"), fileRes("su", su, "x\n", "4755")}})
	f.waitStatus(t, "web", readyAt(1))
	stop()

	cfg.Capabilities = nil
	startAgent(t, cfg)
	r := refusedAt(t, f, "web", 1, 0)
	wantRefusal(t, r, "resources[1].spec.mode", v1.CapabilitySpecialFileModes)
	// The pass that refused it (and published that) is the one that would
	// have removed them.
	for _, p := range []string{conf, su} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s: %v: refusing the cached state removed what it had applied", p, err)
		}
	}
}

// The agent announces what it allows in its device info, whichever
// spelling its config used, in one order.
func TestAgentAnnouncesItsCapabilities(t *testing.T) {
	f := startFleet(t)
	cfg := agentConfig(t, f.srv.ClientURL(), t.TempDir(), t.TempDir()) // shell_jobs and exec by their older keys
	cfg.Capabilities = []string{v1.CapabilityHostNetwork, v1.CapabilitySystemdUnitFiles}
	startAgent(t, cfg)
	want := []string{v1.CapabilityShellJob, v1.CapabilityExec, v1.CapabilitySystemdUnitFiles, v1.CapabilityHostNetwork}
	retry.Until(t, 20*time.Second, func() error {
		e, err := f.kvs["device-info"].Get(context.Background(), "dev-1")
		if err != nil {
			return err
		}
		info, err := v1.DecodeDeviceInfo(e.Value)
		if err != nil {
			return err
		}
		if !reflect.DeepEqual(info.Capabilities, want) {
			return fmt.Errorf("announced %v, want %v", info.Capabilities, want)
		}
		return nil
	})
}
