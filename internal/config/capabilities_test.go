package config_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/config"
)

// Every capability is off by default.
func TestAgentCapabilitiesOffByDefault(t *testing.T) {
	cfg := config.DefaultAgent()
	cfg.ID = "dev-1"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := cfg.Allowed().Names(); len(got) != 0 {
		t.Fatalf("defaults allow %v", got)
	}
	for _, name := range config.CapabilityNames() {
		if cfg.Allowed().Has(name) {
			t.Errorf("%s allowed by default", name)
		}
	}
}

// The capabilities list and the older boolean keys both allow a
// capability, from the file, the environment or a flag; Allowed lists them
// in one order whatever order they were given in.
func TestAgentCapabilitiesFromEverySource(t *testing.T) {
	all := []string{v1.CapabilityShellJob, v1.CapabilityExec, v1.CapabilitySystemdUnitFiles,
		v1.CapabilitySpecialFileModes, v1.CapabilityPrivilegedContainers, v1.CapabilityHostNetwork}
	if got := config.CapabilityNames(); !reflect.DeepEqual(got, all) {
		t.Fatalf("CapabilityNames() = %v, want %v", got, all)
	}
	tests := []struct {
		name  string
		yaml  string
		env   []string
		flags map[string]string // setting key -> value, applied after the environment
		want  []string
	}{
		{name: "new key in the file", yaml: "capabilities: [systemd_unit_files, shell_jobs]\n",
			want: []string{v1.CapabilityShellJob, v1.CapabilitySystemdUnitFiles}},
		{name: "every capability by name", yaml: "capabilities: [" + strings.Join(all, ", ") + "]\n", want: all},
		{name: "older keys in the file", yaml: "shell_jobs: true\nexec: true\nallow_privileged: true\nallow_host_network: true\n",
			want: []string{v1.CapabilityShellJob, v1.CapabilityExec, v1.CapabilityPrivilegedContainers, v1.CapabilityHostNetwork}},
		{name: "older keys false allow nothing", yaml: "shell_jobs: false\nexec: false\n", want: nil},
		{name: "both spellings add up", yaml: "capabilities: [special_file_modes]\nexec: true\n",
			want: []string{v1.CapabilityExec, v1.CapabilitySpecialFileModes}},
		{name: "environment list", env: []string{"HARMONY_CAPABILITIES=host_network, exec"},
			want: []string{v1.CapabilityExec, v1.CapabilityHostNetwork}},
		{name: "older environment variable", env: []string{"HARMONY_SHELL_JOBS=true", "HARMONY_ALLOW_PRIVILEGED=1"},
			want: []string{v1.CapabilityShellJob, v1.CapabilityPrivilegedContainers}},
		{name: "older variable false takes out what the file listed", yaml: "capabilities: [shell_jobs, exec]\n",
			env: []string{"HARMONY_SHELL_JOBS=false"}, want: []string{v1.CapabilityExec}},
		{name: "older flag false takes out what the file turned on", yaml: "exec: true\ncapabilities: [exec]\n",
			flags: map[string]string{"exec": "false"}, want: nil},
		{name: "flag list replaces the file's list", yaml: "capabilities: [shell_jobs]\n",
			flags: map[string]string{"capabilities": "systemd_unit_files"}, want: []string{v1.CapabilitySystemdUnitFiles}},
		{name: "bare older flag", flags: map[string]string{"shell_jobs": "true"}, want: []string{v1.CapabilityShellJob}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config.DefaultAgent()
			cfg.ID = "dev-1"
			if tt.yaml != "" {
				if err := config.LoadFile(writeFile(t, tt.yaml), &cfg); err != nil {
					t.Fatal(err)
				}
			}
			if err := config.ApplyEnv(cfg.Settings(), tt.env); err != nil {
				t.Fatal(err)
			}
			for _, s := range cfg.Settings() {
				if v, ok := tt.flags[s.Key]; ok {
					if err := s.Set(v); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			got := cfg.Allowed()
			if !reflect.DeepEqual(got.Names(), tt.want) {
				t.Fatalf("Allowed() = %v, want %v", got.Names(), tt.want)
			}
			for _, name := range all {
				if want := contains(tt.want, name); got.Has(name) != want {
					t.Errorf("Has(%s) = %v, want %v", name, got.Has(name), want)
				}
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// An unknown capability, or a list given as one word, is refused naming
// the setting; a typo must not silently leave a capability off (or on).
func TestAgentCapabilitiesRefused(t *testing.T) {
	cfg := config.DefaultAgent()
	cfg.ID = "dev-1"
	if err := config.LoadFile(writeFile(t, "capabilities: [shelljob, exec]\n"), &cfg); err != nil {
		t.Fatal(err)
	}
	err := cfg.Validate()
	var ce *config.Error
	if err == nil || !errors.As(err, &ce) || ce.Setting != "capabilities" || !strings.Contains(err.Error(), `"shelljob"`) ||
		!strings.Contains(err.Error(), v1.CapabilitySystemdUnitFiles) {
		t.Fatalf("unknown capability: %v, want an error naming capabilities, the name and the known ones", err)
	}

	cfg = config.DefaultAgent()
	if err := config.LoadFile(writeFile(t, "capabilities: true\n"), &cfg); err == nil || !strings.Contains(err.Error(), "capabilities") {
		t.Fatalf("capabilities: true: %v, want an error naming capabilities", err)
	}
	cfg = config.DefaultAgent()
	if err := config.LoadFile(writeFile(t, "capabilities:\n  shell_jobs: true\n"), &cfg); err == nil || !strings.Contains(err.Error(), "capabilities") {
		t.Fatalf("capabilities as a map: %v, want an error naming capabilities", err)
	}
}

// File resources under the unit directory would be unit files: allowed
// roots that overlap systemd_unit_dir need systemd_unit_files.
func TestAgentAllowedRootsOverlappingTheUnitDir(t *testing.T) {
	for _, tc := range []struct {
		roots []string
		ok    bool
	}{
		{[]string{"/etc/harmony", "/srv/harmony"}, true},
		{[]string{"/etc/systemd/systemd-harmony"}, true},
		{[]string{"/etc"}, false},
		{[]string{"/etc/systemd/system"}, false},
		{[]string{"/etc/harmony", "/etc/systemd/system/harmony.d"}, false},
	} {
		cfg := config.DefaultAgent()
		cfg.ID = "dev-1"
		cfg.AllowedRoots = tc.roots
		err := cfg.Validate()
		if tc.ok != (err == nil) {
			t.Errorf("roots %v: %v", tc.roots, err)
		}
		if err != nil && (!strings.Contains(err.Error(), "setting allowed_roots:") || !strings.Contains(err.Error(), v1.CapabilitySystemdUnitFiles)) {
			t.Errorf("roots %v: %v, want an error naming allowed_roots and systemd_unit_files", tc.roots, err)
		}
		cfg.Capabilities = []string{v1.CapabilitySystemdUnitFiles}
		if err := cfg.Validate(); err != nil {
			t.Errorf("roots %v with systemd_unit_files: %v", tc.roots, err)
		}
	}
}

func TestEnableHint(t *testing.T) {
	for name, want := range map[string]string{
		v1.CapabilityShellJob:             "capabilities: [shell_jobs], or the older shell_jobs: true",
		v1.CapabilityExec:                 "capabilities: [exec], or the older exec: true",
		v1.CapabilityPrivilegedContainers: "capabilities: [privileged_containers], or the older allow_privileged: true",
		v1.CapabilityHostNetwork:          "capabilities: [host_network], or the older allow_host_network: true",
		v1.CapabilitySystemdUnitFiles:     "capabilities: [systemd_unit_files]",
		v1.CapabilitySpecialFileModes:     "capabilities: [special_file_modes]",
	} {
		if got := config.EnableHint(name); got != want {
			t.Errorf("EnableHint(%s) = %q, want %q", name, got, want)
		}
	}
}

// The agent's settings cover the capabilities list and the older keys,
// each once.
func TestAgentCapabilitySettings(t *testing.T) {
	cfg := config.DefaultAgent()
	keys := map[string]bool{}
	for _, s := range cfg.Settings() {
		if keys[s.Key] {
			t.Fatalf("duplicate setting %s", s.Key)
		}
		keys[s.Key] = true
	}
	for _, k := range []string{"capabilities", "shell_jobs", "exec", "allow_privileged", "allow_host_network"} {
		if !keys[k] {
			t.Errorf("no setting %s", k)
		}
	}
}
