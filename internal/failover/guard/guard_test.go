package guard

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// attach connects to a guard this test runs; it must never start one.
func attach(t *testing.T, socket, dataDir string) *Client {
	t.Helper()
	c, err := Attach(context.Background(), ClientConfig{Socket: socket, DataDir: dataDir, Executable: "/bin/false", StartTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestGuardFencesAtTheDeadlineOnly(t *testing.T) {
	dir, sock := t.TempDir(), filepath.Join(shortDir(t), "g.sock")
	pm, kids := fakeServer(t, dir)
	runGuard(t, Config{Socket: sock, DataDir: dir})
	c := attach(t, sock, dir)

	// Fed in time: never fenced, past several of the deadlines it was given.
	first := Now() + 200*time.Millisecond
	for until := first; Now() < first+500*time.Millisecond; until = Now() + 200*time.Millisecond {
		if err := c.Arm(until); err != nil {
			t.Fatal(err)
		}
		if !alive(pm.Process.Pid) {
			t.Fatal("fenced while fed")
		}
	}
	// Disarmed: never fenced, even after the last deadline.
	if err := c.Disarm(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, Now()+400*time.Millisecond)
	st, err := c.Status()
	if err != nil || st.Armed || st.Fired != 0 || !alive(pm.Process.Pid) {
		t.Fatalf("disarmed: %+v %v alive %v", st, err, alive(pm.Process.Pid))
	}

	// Not fed: fenced at the deadline, not before.
	until := Now() + 300*time.Millisecond
	if err := c.Arm(until); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the fence", func() bool { return !alive(pm.Process.Pid) })
	if now := Now(); now < until {
		t.Fatalf("fenced at %s, before the deadline %s", now, until)
	}
	// The answer to Status comes after the fence confirmed every process
	// gone.
	st, err = c.Status()
	for _, k := range kids {
		if alive(k) {
			t.Errorf("child %d survived", k)
		}
	}
	if err != nil || st.Armed || st.Fired != 1 || st.Fed < 2 || !strings.Contains(st.LastFence, "killed") {
		t.Fatalf("after the fence: %+v %v", st, err)
	}
	t.Logf("status %+v", st)
}

func TestGuardFencesWhenTheClientIsKilled(t *testing.T) {
	dir, sock := t.TempDir(), filepath.Join(shortDir(t), "g.sock")
	pm, _ := fakeServer(t, dir)
	runGuard(t, Config{Socket: sock, DataDir: dir})

	client, until := startClient(t, sock, dir, 700*time.Millisecond)
	if err := client.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = client.Wait()
	if !alive(pm.Process.Pid) {
		t.Fatal("fenced when the client died, before the deadline")
	}
	waitFor(t, 5*time.Second, "the fence", func() bool { return !alive(pm.Process.Pid) })
	if now := Now(); now < until {
		t.Fatalf("fenced at %s, before the deadline %s", now, until)
	}
}

func TestGuardReattachedClientPreventsTheFence(t *testing.T) {
	dir, sock := t.TempDir(), filepath.Join(shortDir(t), "g.sock")
	pm, _ := fakeServer(t, dir)
	runGuard(t, Config{Socket: sock, DataDir: dir})

	client, until := startClient(t, sock, dir, 700*time.Millisecond)
	_ = client.Process.Kill()
	_ = client.Wait()
	// A restarted agent attaches and feeds before the deadline.
	c := attach(t, sock, dir)
	st, err := c.Status()
	if err != nil || !st.Armed || st.Until != until {
		t.Fatalf("the deadline did not survive the client: %+v %v", st, err)
	}
	for Now() < until+300*time.Millisecond {
		if err := c.Arm(Now() + 300*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Disarm(); err != nil {
		t.Fatal(err)
	}
	if st, _ := c.Status(); st.Fired != 0 || !alive(pm.Process.Pid) {
		t.Fatalf("fenced although fed: %+v", st)
	}
}

func TestAttachStartsAGuardThatOutlivesIt(t *testing.T) {
	dir, sock := t.TempDir(), filepath.Join(shortDir(t), "g.sock")
	pm, _ := fakeServer(t, dir)
	// The stand-in agent finds no guard: Attach starts one.
	client, until := startClient(t, sock, dir, time.Second)
	c := attach(t, sock, dir)
	st, err := c.Status()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The guard this test caused to start, by its PID.
		if p, err := os.FindProcess(st.PID); err == nil {
			_ = p.Kill()
		}
	})
	g, err := readProc(st.PID)
	if err != nil || st.PID == os.Getpid() || g.PPID == client.Process.Pid || g.PPID == os.Getpid() {
		t.Fatalf("guard %d (parent %d): not detached from client %d / test %d: %v", st.PID, g.PPID, client.Process.Pid, os.Getpid(), err)
	}
	if !st.Armed || st.Until != until {
		t.Fatalf("status %+v", st)
	}
	_ = client.Process.Kill()
	_ = client.Wait()
	waitFor(t, 5*time.Second, "the fence", func() bool { return !alive(pm.Process.Pid) })
	if Now() < until {
		t.Fatal("fenced before the deadline")
	}
	st, err = c.Status()
	if err != nil || st.Fired != 1 {
		t.Fatalf("after the fence: %+v %v", st, err)
	}
}

func TestGuardExitsWhenIdle(t *testing.T) {
	dir, sock := t.TempDir(), filepath.Join(shortDir(t), "g.sock")
	g := runGuard(t, Config{Socket: sock, DataDir: dir, IdleExit: 200 * time.Millisecond})
	c := attach(t, sock, dir)
	if err := c.Arm(Now() + time.Hour); err != nil {
		t.Fatal(err)
	}
	c.Close()
	// Armed: it stays, with no client, well past IdleExit.
	waitUntil(t, Now()+600*time.Millisecond)
	if g.exited() {
		t.Fatalf("an armed guard exited: %v", g.err)
	}
	c = attach(t, sock, dir)
	if err := c.Disarm(); err != nil {
		t.Fatal(err)
	}
	// Disarmed with a client: it stays.
	waitUntil(t, Now()+600*time.Millisecond)
	if g.exited() {
		t.Fatalf("a guard with a client exited: %v", g.err)
	}
	c.Close()
	waitFor(t, 5*time.Second, "the idle exit", g.exited)
	if g.err != nil {
		t.Fatal(g.err)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left behind: %v", err)
	}
}

func TestGuardStaleSocket(t *testing.T) {
	dir, sock := t.TempDir(), filepath.Join(shortDir(t), "g.sock")
	// A dead guard's socket: the file is there, nobody listens.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := net.Dial("unix", sock); err == nil {
		t.Fatal("stale socket answered")
	}
	runGuard(t, Config{Socket: sock, DataDir: dir})
	c := attach(t, sock, dir)
	if _, err := c.Status(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", fi.Mode(), err)
	}
	// A second guard on the same socket refuses, and leaves the first be.
	err = Run(context.Background(), Config{Socket: sock, DataDir: dir})
	if !errors.Is(err, ErrRunning) {
		t.Fatalf("second guard: %v", err)
	}
	if _, err := c.Status(); err != nil {
		t.Fatal(err)
	}
	// Something that is not a socket is not removed.
	file := filepath.Join(shortDir(t), "f")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Run(context.Background(), Config{Socket: file, DataDir: dir}); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("non-socket: %v", err)
	}
}

func TestAttachRefusesAnotherDataDir(t *testing.T) {
	dir, sock := t.TempDir(), filepath.Join(shortDir(t), "g.sock")
	runGuard(t, Config{Socket: sock, DataDir: dir})
	_, err := Attach(context.Background(), ClientConfig{Socket: sock, DataDir: t.TempDir(), Executable: "/bin/false"})
	if !errors.Is(err, ErrOtherDataDir) {
		t.Fatalf("got %v", err)
	}
}

func TestClientReconnects(t *testing.T) {
	dir, sock := t.TempDir(), filepath.Join(shortDir(t), "g.sock")
	g := runGuard(t, Config{Socket: sock, DataDir: dir})
	c := attach(t, sock, dir)
	if err := c.Arm(Now() + time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := g.stop(); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	runGuard(t, Config{Socket: sock, DataDir: dir})
	// The connection is broken; the next request reconnects once.
	until := Now() + time.Hour
	if err := c.Arm(until); err != nil {
		t.Fatal(err)
	}
	st, err := c.Status()
	if err != nil || !st.Armed || st.Until != until || st.Fed != 1 || c.Fed() != 2 {
		t.Fatalf("%+v %v fed %d", st, err, c.Fed())
	}
	if err := c.Disarm(); err != nil {
		t.Fatal(err)
	}
}

func TestGuardRefusesBadRequests(t *testing.T) {
	dir, sock := t.TempDir(), filepath.Join(shortDir(t), "g.sock")
	runGuard(t, Config{Socket: sock, DataDir: dir})
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	for _, line := range []string{`{"v":2,"op":"status"}`, `{"v":1,"op":"fence"}`, `{"v":1,"op":"arm"}`, `not json`} {
		if _, err := conn.Write([]byte(line + "\n")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		n, err := conn.Read(buf)
		if err != nil || !strings.Contains(string(buf[:n]), `"error"`) {
			t.Fatalf("%s: %q %v", line, buf[:n], err)
		}
	}
}
