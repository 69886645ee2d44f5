//go:build !agent

package cli

import (
	"bytes"
	"os/user"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
)

// Dev's devices carry the labels the docs' examples select on, map File
// paths under their own root, allow what the examples run, and dev says
// so, and what the machine lacks, when it starts.
func TestDevDevices(t *testing.T) {
	dir := t.TempDir()
	sites := map[string]string{}
	for n, id := range []string{"dev-1", "dev-2", "dev-3"} {
		root := filepath.Join(dir, "devices", id, "root")
		cfg := devAgentConfig(id, n+1, "nats://127.0.0.1:4222", filepath.Join(dir, "devices", id, "state"), root, "unix:path=/nonexistent/bus", "/tmp/units")
		if err := cfg.Validate(); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		sites[id] = cfg.Labels["site"]
		if cfg.Labels["arch"] != runtime.GOARCH || cfg.Labels["env"] != "dev" || cfg.Labels["device"] != id {
			t.Errorf("%s: labels %v", id, cfg.Labels)
		}
		if cfg.RootDir != root || !strings.Contains(strings.Join(cfg.AllowedRoots, ","), "/etc/harmony") {
			t.Errorf("%s: root_dir %q, allowed_roots %v", id, cfg.RootDir, cfg.AllowedRoots)
		}
		for _, c := range []string{v1.CapabilityShellJob, v1.CapabilityExec, v1.CapabilitySystemdUnitFiles} {
			if !cfg.Allowed().Has(c) {
				t.Errorf("%s: capability %s not allowed", id, c)
			}
		}
		if cfg.SystemdBus != "unix:path=/nonexistent/bus" || cfg.SystemdUnitDir != "/tmp/units" {
			t.Errorf("%s: systemd %q %q", id, cfg.SystemdBus, cfg.SystemdUnitDir)
		}
	}
	if sites["dev-1"] != "home" || sites["dev-2"] != "home" || sites["dev-3"] != "office" {
		t.Errorf("sites %v", sites)
	}

	cfg := devAgentConfig("dev-1", 1, "nats://x:4222", dir, filepath.Join(dir, "devices", "dev-1", "root"), "unix:path=/nonexistent/bus", "/tmp/units")
	cfg.Podman = filepath.Join(dir, "no-podman")
	var out bytes.Buffer
	devNotes(&out, cfg)
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"shell jobs and exec run as " + u.Username + " on this machine",
		filepath.Join(dir, "devices", "<id>", "root"),
		"Podman:    not installed on this machine",
		"no system bus at unix:path=/nonexistent/bus",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("dev's notes do not say %q:\n%s", want, out.String())
		}
	}
}
