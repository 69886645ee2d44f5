package guard

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestFenceKillsTheServerAndItsChildren(t *testing.T) {
	dir := t.TempDir()
	pm, kids := fakeServer(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rep, err := fence(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Postmaster != pm.Process.Pid || len(rep.Stopped) != 3 {
		t.Fatalf("report %+v: want postmaster %d and 2 children %v", rep, pm.Process.Pid, kids)
	}
	for _, pid := range append(kids, pm.Process.Pid) {
		if alive(pid) {
			t.Errorf("process %d still alive", pid)
		}
	}
	t.Log(rep)
}

func TestFenceNothingToFence(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	rep, err := fence(ctx, dir)
	if err != nil || rep.Skipped != "no postmaster.pid" {
		t.Fatalf("no pid file: %+v %v", rep, err)
	}
	// A PID the kernel gave to another process since the server died:
	// it runs elsewhere, so it must be left alone.
	other := exec.Command("sleep", "1000")
	other.Dir = t.TempDir()
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })
	if err := os.WriteFile(filepath.Join(dir, "postmaster.pid"), []byte(strconv.Itoa(other.Process.Pid)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err = fence(ctx, dir)
	if err != nil || rep.Skipped == "" || !alive(other.Process.Pid) {
		t.Fatalf("reused PID: %+v %v, alive %v", rep, err, alive(other.Process.Pid))
	}
	t.Log(rep)
	// A postmaster already gone.
	_ = other.Process.Kill()
	_ = other.Wait()
	rep, err = fence(ctx, dir)
	if err != nil || rep.Skipped == "" {
		t.Fatalf("gone: %+v %v", rep, err)
	}
}
