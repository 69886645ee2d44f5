package units_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/agent/units"
	"github.com/harmony-fleet/harmony/internal/testutil/systemdtest"
)

// A unit without content is one already installed on the device: it is
// enabled, started and stopped, and its file is never written.
func TestUnitWithoutContentManagesTheInstalledUnit(t *testing.T) {
	sys := systemdtest.Start(t)
	m := units.New(sys.UnitDir, sys.BusAddress)
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	path := filepath.Join(sys.UnitDir, "harmony-installed.service")
	if err := os.WriteFile(path, []byte(sleeper), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := sys.Exec("systemctl", "daemon-reload"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	u := units.Unit{Name: "harmony-installed.service", Enabled: true, Active: true}
	if u.InstallsFile() {
		t.Fatal("a unit without content installs a file")
	}
	changes, err := m.Apply(ctx, u)
	if err != nil || strings.Join(changes, ",") != "enabled,started" {
		t.Fatalf("apply: %v %v", changes, err)
	}
	if b, _ := os.ReadFile(path); string(b) != sleeper {
		t.Fatalf("the installed unit file was rewritten: %q", b)
	}
	st, err := m.Observe(ctx, u)
	if err != nil || !st.FileMatches || st.ActiveState != "active" || st.UnitFileState != "enabled" {
		t.Fatalf("after apply: %+v %v", st, err)
	}
	if changes, err := m.Apply(ctx, u); err != nil || len(changes) != 0 {
		t.Fatalf("second apply: %v %v", changes, err)
	}
	u.Active, u.Enabled = false, false
	if changes, err := m.Apply(ctx, u); err != nil || strings.Join(changes, ",") != "disabled,stopped" {
		t.Fatalf("stop+disable: %v %v", changes, err)
	}
	if b, _ := os.ReadFile(path); string(b) != sleeper {
		t.Fatalf("the installed unit file changed: %q", b)
	}

	// A unit that is not installed is an error that says so.
	_, err = m.Apply(ctx, units.Unit{Name: "harmony-absent.service", Enabled: true, Active: true})
	if !errors.Is(err, units.ErrNotInstalled) || !strings.Contains(err.Error(), "harmony-absent.service") {
		t.Fatalf("absent unit: %v, want ErrNotInstalled naming it", err)
	}
	if _, err := os.Stat(filepath.Join(sys.UnitDir, "harmony-absent.service")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a file was written for the absent unit: %v", err)
	}
}
