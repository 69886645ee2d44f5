package agent

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/agent/files"
	"github.com/harmony-fleet/harmony/internal/agent/localstate"
	"github.com/harmony-fleet/harmony/internal/agent/units"
	"github.com/harmony-fleet/harmony/internal/config"
)

// capKinds are the kinds as New builds them for a device that allows caps.
func capKinds(t *testing.T, root string, caps ...string) map[string]Kind {
	t.Helper()
	cfg := config.DefaultAgent()
	cfg.Capabilities = caps
	allow := cfg.Allowed()
	fm := files.New([]string{root})
	return map[string]Kind{
		v1.KindFile: fileKind{m: fm, specialModes: allow.Has(v1.CapabilitySpecialFileModes)},
		v1.KindContainer: containerKind{files: fm, allowPrivileged: allow.Has(v1.CapabilityPrivilegedContainers),
			allowHostNetwork: allow.Has(v1.CapabilityHostNetwork)},
		v1.KindSystemdUnit: unitKind{unitFiles: allow.Has(v1.CapabilitySystemdUnitFiles)},
		v1.KindShellJob:    shellJobKind{enabled: allow.Has(v1.CapabilityShellJob)},
	}
}

// Each risky field of each kind needs its capability: refused by default
// with a field error that names the field, the capability and the config
// that allows it; admitted once the agent allows that capability (and only
// that one).
func TestAdmitNeedsTheCapability(t *testing.T) {
	root := t.TempDir()
	spec := func(v any) json.RawMessage { b, _ := json.Marshal(v); return b }
	unit := "[Unit]\nDescription=x\n[Service]\nExecStart=/usr/bin/sleep infinity\n"
	tests := []struct {
		name       string
		res        v1.Resource
		capability string
		field      string // as the status names it
	}{
		{"setuid file", v1.Resource{ID: "r", Kind: v1.KindFile, Spec: spec(map[string]string{"path": filepath.Join(root, "su"), "content": "x", "mode": "4755"})},
			v1.CapabilitySpecialFileModes, "resources[0].spec.mode"},
		{"setgid file", v1.Resource{ID: "r", Kind: v1.KindFile, Spec: spec(map[string]string{"path": filepath.Join(root, "sg"), "content": "x", "mode": "2755"})},
			v1.CapabilitySpecialFileModes, "resources[0].spec.mode"},
		{"sticky file", v1.Resource{ID: "r", Kind: v1.KindFile, Spec: spec(map[string]string{"path": filepath.Join(root, "st"), "content": "x", "mode": "1644"})},
			v1.CapabilitySpecialFileModes, "resources[0].spec.mode"},
		{"every special bit", v1.Resource{ID: "r", Kind: v1.KindFile, Spec: spec(map[string]string{"path": filepath.Join(root, "all"), "content": "x", "mode": "7777"})},
			v1.CapabilitySpecialFileModes, "resources[0].spec.mode"},
		{"unit file with ExecStart", v1.Resource{ID: "r", Kind: v1.KindSystemdUnit, Spec: spec(map[string]any{"name": "x.service", "content": unit})},
			v1.CapabilitySystemdUnitFiles, "resources[0].spec.content"},
		{"unit file without any Exec", v1.Resource{ID: "r", Kind: v1.KindSystemdUnit, Spec: spec(map[string]any{"name": "x.target", "content": "[Unit]\nDescription=x\n"})},
			v1.CapabilitySystemdUnitFiles, "resources[0].spec.content"},
		{"shell job", v1.Resource{ID: "r", Kind: v1.KindShellJob, Spec: spec(map[string]any{"command": []string{"id"}})},
			v1.CapabilityShellJob, "resources[0].kind"},
		{"privileged container", v1.Resource{ID: "r", Kind: v1.KindContainer, Spec: spec(map[string]any{"image": "i", "privileged": true})},
			v1.CapabilityPrivilegedContainers, "resources[0].spec.privileged"},
		{"host network container", v1.Resource{ID: "r", Kind: v1.KindContainer, Spec: spec(map[string]any{"image": "i", "hostNetwork": true})},
			v1.CapabilityHostNetwork, "resources[0].spec.hostNetwork"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ds := v1.DesiredState{V: v1.FormatVersion, Device: "dev-1", Deployment: "web", Generation: 3, Resources: []v1.Resource{tt.res}}

			// Every other capability allowed: still refused.
			var others []string
			for _, c := range config.CapabilityNames() {
				if c != tt.capability {
					others = append(others, c)
				}
			}
			for _, caps := range [][]string{nil, others} {
				e := &engine{a: &Agent{kinds: capKinds(t, root, caps...)}}
				admitted, problems := e.decode(ds)
				if len(admitted) != 0 || len(problems) != 1 {
					t.Fatalf("with %v: admitted %d, %d problems, want the resource refused", caps, len(admitted), len(problems))
				}
				p := problems[0]
				if p.Phase != v1.PhaseInvalid || p.Field != tt.field {
					t.Errorf("with %v: phase %s field %q, want Invalid %s", caps, p.Phase, p.Field, tt.field)
				}
				for _, want := range []string{"is disabled on this device", "capability " + tt.capability, config.EnableHint(tt.capability)} {
					if !strings.Contains(p.Message, want) {
						t.Errorf("with %v: message %q does not say %q", caps, p.Message, want)
					}
				}
			}

			e := &engine{a: &Agent{kinds: capKinds(t, root, tt.capability)}}
			if admitted, problems := e.decode(ds); len(admitted) != 1 || len(problems) != 0 {
				t.Fatalf("with %s allowed: admitted %d, problems %+v", tt.capability, len(admitted), problems)
			}
		})
	}
}

// What needs no capability is admitted on a device that allows none.
func TestAdmitWithoutCapabilities(t *testing.T) {
	root := t.TempDir()
	kinds := capKinds(t, root)
	tr := true
	for _, d := range []Desired{
		{Kind: v1.KindFile, Spec: &v1.FileSpec{Path: filepath.Join(root, "a"), Mode: "0755"}},
		{Kind: v1.KindFile, Spec: &v1.FileSpec{Path: filepath.Join(root, "b"), Mode: "0600", Owner: "0"}},
		{Kind: v1.KindContainer, Spec: &v1.ContainerSpec{Image: "i", Volumes: []v1.Volume{{HostPath: filepath.Join(root, "data"), ContainerPath: "/d"}}}},
		// A unit already installed on the device: enable and start it.
		{Kind: v1.KindSystemdUnit, Spec: &v1.SystemdUnitSpec{Name: "chronyd.service", Enabled: &tr, Active: &tr}},
	} {
		if _, err := kinds[d.Kind].Admit(d); err != nil {
			t.Errorf("%s %+v: %v", d.Kind, d.Spec, err)
		}
	}
}

// A unit the agent did not install (no content) is left alone when its
// resource goes away; a unit it installed is removed (here the removal
// reaches systemd, which is not there).
func TestUnitDeleteLeavesInstalledUnits(t *testing.T) {
	dir := t.TempDir()
	k := unitKind{m: units.New(dir, "unix:path="+filepath.Join(dir, "no-bus"))}
	defer k.m.Close()
	for _, name := range []string{"chronyd.service", "app.service"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("[Service]\nExecStart=/bin/true\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	owned := func(s v1.SystemdUnitSpec) localstate.Owned {
		b, _ := v1.Marshal(s)
		return localstate.Owned{Kind: v1.KindSystemdUnit, Claim: s.Name, Deployment: "web", ResourceID: "u", Spec: b}
	}
	if err := k.Delete(context.Background(), owned(v1.SystemdUnitSpec{Name: "chronyd.service"})); err != nil {
		t.Fatalf("delete of a unit Harmony did not install: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "chronyd.service")); err != nil {
		t.Fatalf("the unit Harmony did not install was touched: %v", err)
	}
	err := k.Delete(context.Background(), owned(v1.SystemdUnitSpec{Name: "app.service", Content: "[Service]\nExecStart=/bin/true\n"}))
	if err == nil || !strings.Contains(err.Error(), "systemd") {
		t.Fatalf("delete of a unit Harmony installed: %v, want it to reach systemd", err)
	}
}

// exec is refused like a resource: typed (CodeDisabled), naming the
// capability and how to allow it; the older key exec still allows it.
func TestExecNeedsTheCapability(t *testing.T) {
	req := v1.CommandRequest{Op: v1.OpExec, Command: []string{"true"}}
	for _, tc := range []struct {
		name string
		cfg  config.Agent
		ok   bool
	}{
		{"default", config.Agent{ID: "d"}, false},
		{"other capabilities", config.Agent{ID: "d", ShellJobs: true, Capabilities: []string{v1.CapabilitySystemdUnitFiles}}, false},
		{"capabilities list", config.Agent{ID: "d", Capabilities: []string{v1.CapabilityExec}}, true},
		{"older key", config.Agent{ID: "d", Exec: true}, true},
	} {
		a := &Agent{cfg: tc.cfg, log: slog.New(slog.DiscardHandler)}
		r := a.exec(context.Background(), req)
		if r.OK != tc.ok {
			t.Errorf("%s: %+v, want OK=%v", tc.name, r, tc.ok)
		}
		if !tc.ok && (r.Code != v1.CodeDisabled || !strings.Contains(r.Error, "capability exec") ||
			!strings.Contains(r.Error, config.EnableHint(v1.CapabilityExec))) {
			t.Errorf("%s: %+v, want CodeDisabled naming capability exec and how to allow it", tc.name, r)
		}
	}
}

// The text of every refusal has one shape.
func TestRefusalText(t *testing.T) {
	err := refuse("spec.mode", "mode 4755 (setuid)", v1.CapabilitySpecialFileModes)
	var fe *v1.FieldError
	if !errors.As(err, &fe) || fe.Field != "spec.mode" {
		t.Fatalf("%v is not a field error for spec.mode", err)
	}
	want := "mode 4755 (setuid) is disabled on this device: it needs capability special_file_modes (agent config: capabilities: [special_file_modes])"
	if fe.Reason != want {
		t.Fatalf("reason %q\nwant   %q", fe.Reason, want)
	}
}
