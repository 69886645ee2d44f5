// Package podmantest prepares real rootful podman for tests: it runs
// scripts/podman-setup.sh (install, runc configuration, local busybox image).
package podmantest

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Image is the local test image the setup script builds.
const Image = "localhost/harmony-busybox:test"

var (
	once     sync.Once
	setupErr error
	seq      atomic.Int64
)

// Setup runs the setup script once per test binary.
func Setup() error {
	once.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		script := filepath.Join(filepath.Dir(file), "..", "..", "..", "scripts", "podman-setup.sh")
		out, err := exec.Command("bash", script).CombinedOutput()
		if err != nil {
			setupErr = fmt.Errorf("podman setup (%s) failed: %v\n%s", script, err, out)
		}
	})
	return setupErr
}

// Name is a unique container name for a test.
func Name(t testing.TB) string {
	base := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(base) > 30 {
		base = base[:30]
	}
	return fmt.Sprintf("harmony-test-%s-%d-%d", strings.Trim(base, "-"), time.Now().UnixNano()%100000, seq.Add(1))
}
