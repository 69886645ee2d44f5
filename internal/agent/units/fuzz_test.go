package units_test

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/agent/units"
)

// FuzzValidateName checks the unit names a deployment may give (they come
// from the network and become file names in the unit directory): an accepted
// name is one file name inside the directory, and the server (v1alpha1) and
// the agent agree on which names are valid.
func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"app.service", "harmony-test.timer", "getty@tty1.service", "dev-sda1.mount", `sys-devices-a\x2db.path`,
		"multi-user.target", "app.socket", "..service", "...service", "app", ".service", "app.Service", "app.service.d",
		"../../etc/systemd/system/evil.service", "a/b.service", "/etc/evil.service", "a\x00.service", "a b.service",
		"a\n.service", "ä.service", strings.Repeat("a", 248) + ".service", strings.Repeat("a", 247) + ".service"} {
		f.Add(s)
	}
	const dir = "/etc/systemd/system"
	f.Fuzz(func(t *testing.T, name string) {
		err := units.ValidateName(name)
		if err == nil {
			if len(name) > 255 || name == "." || name == ".." || strings.ContainsAny(name, "/\x00 \t\r\n") {
				t.Fatalf("accepted %q", name)
			}
			if p := filepath.Join(dir, name); filepath.Dir(p) != dir || filepath.Base(p) != name {
				t.Fatalf("%q is not one file in the unit directory: %s", name, p)
			}
			ok := false
			for _, suffix := range []string{".service", ".timer", ".socket", ".path", ".target", ".mount"} {
				ok = ok || (strings.HasSuffix(name, suffix) && len(name) > len(suffix))
			}
			if !ok {
				t.Fatalf("accepted %q without a unit suffix", name)
			}
		}
		spec, merr := json.Marshal(v1.SystemdUnitSpec{Name: name, Content: "[Service]\nExecStart=/bin/true\n"})
		if merr != nil {
			t.Fatal(merr)
		}
		_, serr := v1.DecodeSpec("r", v1.Resource{ID: "u", Kind: v1.KindSystemdUnit, Spec: spec})
		if (serr == nil) != (err == nil) {
			t.Fatalf("%q: server says %v, agent says %v", name, serr, err)
		}
	})
}
