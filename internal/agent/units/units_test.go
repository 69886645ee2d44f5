package units_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/agent/units"
	"github.com/harmony-fleet/harmony/internal/testutil/systemdtest"
)

const sleeper = "[Unit]\nDescription=harmony test\n[Service]\nExecStart=/usr/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n"

func TestUnitLifecycle(t *testing.T) {
	sys := systemdtest.Start(t)
	m := units.New(sys.UnitDir, sys.BusAddress)
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	u := units.Unit{Name: "harmony-test.service", Content: sleeper, Enabled: true, Active: true}

	changes, err := m.Apply(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(changes, ",") != "file written, daemon reloaded,enabled,started" {
		t.Fatalf("changes %v", changes)
	}
	st, err := m.Observe(ctx, u)
	if err != nil || st.ActiveState != "active" || st.UnitFileState != "enabled" || !st.FileMatches || st.MainPID == 0 {
		t.Fatalf("after apply: %+v %v", st, err)
	}
	pid := st.MainPID

	// Unchanged: nothing happens, the process stays.
	if changes, err := m.Apply(ctx, u); err != nil || len(changes) != 0 {
		t.Fatalf("second apply: %v %v", changes, err)
	}
	if st2, _ := m.Observe(ctx, u); st2.MainPID != pid {
		t.Fatal("an unchanged unit was restarted")
	}

	// New content: reload and restart.
	u.Content = strings.Replace(sleeper, "sleep infinity", "sleep 999999", 1)
	changes, err = m.Apply(ctx, u)
	if err != nil || strings.Join(changes, ",") != "file written, daemon reloaded,restarted" {
		t.Fatalf("changed content: %v %v", changes, err)
	}
	st, _ = m.Observe(ctx, u)
	if st.MainPID == pid || st.ActiveState != "active" {
		t.Fatalf("not restarted: %+v", st)
	}
	if out, _ := sys.Exec("cat", "/proc/"+itoa(st.MainPID)+"/cmdline"); !strings.Contains(out, "999999") {
		t.Fatalf("runs %q, not the new command", out)
	}

	// Stopped by hand: started again.
	if out, err := sys.Exec("systemctl", "stop", u.Name); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if changes, err := m.Apply(ctx, u); err != nil || strings.Join(changes, ",") != "started" {
		t.Fatalf("drift: %v %v", changes, err)
	}

	// Inactive and disabled on request.
	u.Active, u.Enabled = false, false
	if changes, err := m.Apply(ctx, u); err != nil || strings.Join(changes, ",") != "disabled,stopped" {
		t.Fatalf("stop+disable: %v %v", changes, err)
	}
	st, _ = m.Observe(ctx, u)
	if st.ActiveState != "inactive" || st.UnitFileState != "disabled" {
		t.Fatalf("%+v", st)
	}

	if err := m.Delete(ctx, u.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(sys.UnitDir, u.Name)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("unit file still there")
	}
	st, _ = m.Observe(ctx, u)
	if st.LoadState != "not-found" {
		t.Fatalf("unit still loaded: %+v", st)
	}
	if err := m.Delete(ctx, u.Name); err != nil {
		t.Fatalf("deleting a missing unit: %v", err)
	}
}

func TestFailingUnitIsAnError(t *testing.T) {
	sys := systemdtest.Start(t)
	m := units.New(sys.UnitDir, sys.BusAddress)
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	u := units.Unit{Name: "harmony-broken.service", Content: "[Service]\nType=oneshot\nExecStart=/usr/bin/false\n", Active: true}
	_, err := m.Apply(ctx, u)
	if err == nil || !strings.Contains(err.Error(), "harmony-broken.service") {
		t.Fatalf("err = %v, want a failure naming the unit", err)
	}
}

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"a.service", "x@1.timer", "srv-data.mount"} {
		if err := units.ValidateName(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a", "../a.service", "a b.service", "a.exe"} {
		if units.ValidateName(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func itoa(n uint32) string {
	const digits = "0123456789"
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{digits[n%10]}, b...)
	}
	return string(b)
}
