package guard

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The test binary doubles as the two other processes the tests need:
//   - `TEST guard [--detach] --socket ...`: the guard, as `harmony guard`
//     runs it (Attach starts it from os.Executable);
//   - with GUARD_TEST_CLIENT=1: an agent stand-in that attaches, arms a
//     deadline GUARD_TEST_IN from then, prints "armed UNTIL" (ns) and
//     waits to be killed.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "guard" {
		os.Exit(guardMain(os.Args[2:]))
	}
	if os.Getenv("GUARD_TEST_CLIENT") == "1" {
		os.Exit(clientMain())
	}
	os.Exit(m.Run())
}

func guardMain(args []string) int {
	var cfg Config
	fs := flag.NewFlagSet("guard", flag.ContinueOnError)
	detach := fs.Bool("detach", false, "")
	fs.StringVar(&cfg.Socket, "socket", "", "")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "")
	fs.StringVar(&cfg.Watchdog, "watchdog", "", "")
	fs.DurationVar(&cfg.WatchdogInterval, "watchdog-interval", 0, "")
	fs.DurationVar(&cfg.IdleExit, "idle-exit", 0, "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *detach {
		exe, _ := os.Executable()
		if err := StartDetached(exe, cfg); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	}
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := Run(context.Background(), cfg); err != nil && !errors.Is(err, ErrRunning) {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func clientMain() int {
	exe, _ := os.Executable()
	c, err := Attach(context.Background(), ClientConfig{Socket: os.Getenv("GUARD_TEST_SOCKET"), DataDir: os.Getenv("GUARD_TEST_DATA_DIR"),
		Executable: exe, LogFile: os.Getenv("GUARD_TEST_LOG")})
	if err != nil {
		fmt.Fprintln(os.Stderr, "attach:", err)
		return 1
	}
	in, _ := time.ParseDuration(os.Getenv("GUARD_TEST_IN"))
	until := Now() + in
	if err := c.Arm(until); err != nil {
		fmt.Fprintln(os.Stderr, "arm:", err)
		return 1
	}
	fmt.Println("armed", int64(until))
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // until killed
	return 0
}

// startClient runs the agent stand-in, which arms a deadline in from when
// it attached, and returns it and the deadline once it has armed.
func startClient(t *testing.T, socket, dataDir string, in time.Duration) (*exec.Cmd, time.Duration) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "GUARD_TEST_CLIENT=1", "GUARD_TEST_SOCKET="+socket, "GUARD_TEST_DATA_DIR="+dataDir,
		"GUARD_TEST_IN="+in.String(), "GUARD_TEST_LOG="+filepath.Join(t.TempDir(), "guard.log"))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	word, ns, _ := strings.Cut(strings.TrimSpace(line), " ")
	until, perr := strconv.ParseInt(ns, 10, 64)
	if word != "armed" || perr != nil {
		t.Fatalf("client did not arm: %q %v", line, err)
	}
	return cmd, time.Duration(until)
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// waitUntil waits until the guard's clock reads at least at.
func waitUntil(t *testing.T, at time.Duration) {
	t.Helper()
	waitFor(t, at-Now()+5*time.Second, fmt.Sprintf("clock %s", at), func() bool { return Now() >= at })
}

// running is a guard run in this process.
type running struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// stop ends the guard and returns what Run returned.
func (r *running) stop() error { r.cancel(); <-r.done; return r.err }

// exited reports whether Run has returned by itself.
func (r *running) exited() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// runGuard runs a guard in this process until the test ends, and returns
// once it listens.
func runGuard(t *testing.T, cfg Config) *running {
	t.Helper()
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = Run(ctx, cfg)
	}()
	t.Cleanup(func() { _ = r.stop() })
	waitFor(t, 5*time.Second, "guard to listen", func() bool {
		if r.exited() {
			t.Fatalf("guard exited: %v", r.err)
		}
		c, err := net.Dial("unix", cfg.Socket)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return r
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// shortDir: Unix socket paths are limited to 108 bytes, which t.TempDir
// under a long test name can exceed.
func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "g")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// fakeServer starts a stand-in postmaster in dataDir: a shell with two
// children, all running in the data directory, its PID in postmaster.pid.
func fakeServer(t *testing.T, dataDir string) (*exec.Cmd, []int) {
	t.Helper()
	cmd := exec.Command("sh", "-c", "sleep 1000 & sleep 1000 & wait")
	cmd.Dir = dataDir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var kids []int
	waitFor(t, 5*time.Second, "the fake server's children", func() bool {
		kids = children(cmd.Process.Pid)
		return len(kids) == 2
	})
	pidFile := fmt.Sprintf("%d\n%s\n", cmd.Process.Pid, dataDir)
	if err := os.WriteFile(filepath.Join(dataDir, "postmaster.pid"), []byte(pidFile), 0o600); err != nil {
		t.Fatal(err)
	}
	return cmd, kids
}

func children(pid int) []int {
	pids, _ := allPIDs()
	var out []int
	for _, p := range pids {
		if pr, err := readProc(p); err == nil && pr.PPID == pid && pr.State != 'Z' {
			out = append(out, p)
		}
	}
	return out
}

// alive: the process exists and is neither a zombie nor stopped for good.
func alive(pid int) bool {
	p, err := readProc(pid)
	return err == nil && p.State != 'Z' && p.State != 'X'
}
