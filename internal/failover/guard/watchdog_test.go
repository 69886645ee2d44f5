package guard

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// holds reports whether this process has path open.
func holds(t *testing.T, path string) bool {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && target == path {
			return true
		}
	}
	return false
}

// TestWatchdog runs the guard against a regular file standing in for
// /dev/watchdog: written to while armed, 'V' and closed when disarmed or
// after a confirmed fence, never opened while disarmed.
func TestWatchdog(t *testing.T) {
	dir, sock := t.TempDir(), filepath.Join(shortDir(t), "g.sock")
	dev := filepath.Join(t.TempDir(), "watchdog")
	if err := os.WriteFile(dev, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	read := func() string {
		b, err := os.ReadFile(dev)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	runGuard(t, Config{Socket: sock, DataDir: dir, Watchdog: dev, WatchdogInterval: 10 * time.Millisecond})
	c := attach(t, sock, dir)
	if holds(t, dev) || read() != "" {
		t.Fatal("device opened while disarmed")
	}

	if err := c.Arm(Now() + time.Hour); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "petting", func() bool { return strings.Count(read(), "1") >= 5 })
	if !holds(t, dev) {
		t.Fatal("device not held open while armed")
	}
	if err := c.Disarm(); err != nil {
		t.Fatal(err)
	}
	// The answer to Disarm comes after the magic close.
	if got := read(); !strings.HasSuffix(got, "V") || holds(t, dev) {
		t.Fatalf("no magic close: %q, held %v", got, holds(t, dev))
	}

	// A deadline that passes: the fence (nothing to fence here) is
	// confirmed, so the device is released.
	n := len(read())
	until := Now() + 200*time.Millisecond
	if err := c.Arm(until); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the fence", func() bool {
		st, err := c.Status()
		return err == nil && st.Fired == 1
	})
	got := read()[n:]
	if !strings.HasSuffix(got, "V") || strings.Count(got, "1") < 2 || holds(t, dev) {
		t.Fatalf("after the fence: %q, held %v", got, holds(t, dev))
	}
	if st, _ := c.Status(); !st.Watchdog || st.WatchdogError != "" {
		t.Fatalf("status %+v", st)
	}
}

// TestWatchdogUnit: pets are spaced by the interval; release is idempotent.
func TestWatchdogUnit(t *testing.T) {
	dev := filepath.Join(t.TempDir(), "watchdog")
	if err := os.WriteFile(dev, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	w := &watchdog{path: dev, interval: 100 * time.Millisecond}
	for _, now := range []time.Duration{time.Second, time.Second + 50*time.Millisecond, time.Second + 100*time.Millisecond, time.Second + 150*time.Millisecond} {
		if err := w.pet(now); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.release(); err != nil {
		t.Fatal(err)
	}
	if err := w.release(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dev); string(b) != "11V" {
		t.Fatalf("device got %q, want 11V", b)
	}
	// A missing device is an error, reported, not fatal.
	w = &watchdog{path: filepath.Join(t.TempDir(), "none"), interval: time.Second}
	if err := w.pet(time.Second); err == nil {
		t.Fatal("no error for a missing device")
	}
}

// TestWatchdogFIFO: a FIFO stands in for the device. Without a reader the
// open fails at once instead of stalling the guard; with one, the reader
// sees the pets and the magic 'V'.
func TestWatchdogFIFO(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "watchdog")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	w := &watchdog{path: fifo, interval: time.Millisecond}
	if err := w.pet(time.Second); err == nil || w.open() {
		t.Fatalf("no reader: %v, open %v", err, w.open())
	}
	// O_RDWR opens a FIFO without waiting for a writer.
	r, err := os.OpenFile(fifo, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i := 1; i <= 3; i++ {
		if err := w.pet(time.Duration(i) * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.release(); err != nil {
		t.Fatal(err)
	}
	_ = r.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 16)
	got := ""
	for !strings.HasSuffix(got, "V") {
		n, err := r.Read(buf)
		if err != nil {
			t.Fatalf("read %q: %v", got, err)
		}
		got += string(buf[:n])
	}
	if got != "111V" {
		t.Fatalf("reader got %q, want 111V", got)
	}
}
