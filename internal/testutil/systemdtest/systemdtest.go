// Package systemdtest boots a real systemd for tests. systemd is not PID 1 on
// the development machines, so it runs as PID 1 of a podman container whose
// root is a small directory holding a copy of the host's /etc and the host's
// /usr mounted read-only. The container's /run/dbus is a host directory, so
// the test process reaches its system bus over a Unix socket, and its
// /etc/systemd/system is a host directory the test can write unit files to.
package systemdtest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/testutil/podmantest"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// Systemd is a running systemd in a container.
type Systemd struct {
	Name string
	// Root is the container's root directory on the host.
	Root string
	// UnitDir is the host path of the container's /etc/systemd/system.
	UnitDir string
	// BusAddress is the D-Bus address of its system bus, usable from the host.
	BusAddress string
}

// Start boots systemd and waits until its bus answers; it is removed at
// cleanup. Any failure fails the test: the test setup must provide podman.
func Start(t testing.TB) *Systemd {
	t.Helper()
	if err := podmantest.Setup(); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "harmony-systemd-")
	if err != nil {
		t.Fatal(err)
	}
	s := &Systemd{Name: podmantest.Name(t), Root: filepath.Join(dir, "root")}
	t.Cleanup(func() {
		_ = exec.Command("podman", "rm", "-f", "-t", "0", s.Name).Run()
		_ = os.RemoveAll(dir)
	})
	busDir := filepath.Join(dir, "dbus")
	for _, d := range []string{"usr", "var/lib", "var/log", "run", "tmp", "proc", "sys", "dev", "root", "srv"} {
		if err := os.MkdirAll(filepath.Join(s.Root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(busDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"bin", "lib", "lib64", "sbin"} {
		if err := os.Symlink("usr/"+l, filepath.Join(s.Root, l)); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("cp", "-a", "/etc", filepath.Join(s.Root, "etc")).CombinedOutput(); err != nil {
		t.Fatalf("copy /etc: %v: %s", err, out)
	}
	s.UnitDir = filepath.Join(s.Root, "etc", "systemd", "system")
	// Keep the boot small: none of the host's own enabled services.
	wants, _ := filepath.Glob(filepath.Join(s.UnitDir, "*.wants", "*"))
	for _, w := range wants {
		base := filepath.Base(w)
		if strings.HasPrefix(base, "dbus") || strings.HasPrefix(base, "systemd-") {
			continue
		}
		_ = os.Remove(w)
	}
	args := []string{"run", "-d", "--name", s.Name, "--systemd=always", "--network", "none",
		"-v", "/usr:/usr:ro", "-v", busDir + ":/run/dbus", "--rootfs", s.Root, "/lib/systemd/systemd"}
	if out, err := exec.Command("podman", args...).CombinedOutput(); err != nil {
		t.Fatalf("boot systemd: %v: %s", err, out)
	}
	sock := filepath.Join(busDir, "system_bus_socket")
	s.BusAddress = "unix:path=" + sock
	retry.Until(t, 60*time.Second, func() error {
		state, _ := s.Exec("systemctl", "is-system-running")
		state = strings.TrimSpace(state)
		if state != "running" && state != "degraded" {
			return fmt.Errorf("systemd is %q", state)
		}
		c, err := net.Dial("unix", sock)
		if err != nil {
			return err
		}
		c.Close()
		return nil
	})
	return s
}

// Exec runs a command inside the container and returns its output.
func (s *Systemd) Exec(args ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.Command("podman", append([]string{"exec", s.Name}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}
