// Package e2e runs the real harmony binary as a user would.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/mesh"
	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
	"github.com/harmony-fleet/harmony/internal/web"
)

var binary string

// e2eToken is the admin token of the tests.
const e2eToken = "e2e-token-5f1c9a7e3b2d4c6a8e0f1b3d5c7e9a1b"

// apiClient sends the e2e token with every request.
var apiClient = &http.Client{Transport: bearer{http.DefaultTransport}}

type bearer struct{ base http.RoundTripper }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+e2eToken)
	return b.base.RoundTrip(r)
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "harmony-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "harmony")
	build := exec.Command("go", "build", "-o", binary, "../../cmd/harmony")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build harmony:", err)
		os.Exit(1)
	}
	// Every server the tests start accepts the e2e admin token (through
	// HARMONY_TOKENS_FILE) and every CLI call sends it (HARMONY_TOKEN).
	tokens := filepath.Join(dir, "tokens.yaml")
	if err := os.WriteFile(tokens, []byte("- {name: e2e, role: admin, sha256: "+web.HashToken(e2eToken)+"}\n"), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("HARMONY_TOKENS_FILE", tokens)
	os.Setenv("HARMONY_TOKEN", e2eToken)
	// Plain connections and NATS open to any client, except in
	// TestTLSEverywhere and TestEnrolledDevices.
	os.Setenv("HARMONY_TLS", "off")
	os.Setenv("HARMONY_NATS_AUTH", "off")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// handedOut are the ports freePort gave out.
var (
	portMu    sync.Mutex
	handedOut = map[int]bool{}
	nextPort  = 20000 + os.Getpid()%5000
)

// freePort returns a loopback port that is free now and that nothing else
// in this test run will be given: ports come from below the kernel's
// ephemeral range (32768 and up on Debian), so no listener on port 0 and no
// outgoing connection can take one between this check and its use (a
// proxy on port 0 once took a server's HTTP port that way).
func freePort(t testing.TB) int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	for range 12000 {
		port := nextPort
		nextPort++
		if nextPort >= 32000 {
			nextPort = 20000
		}
		if handedOut[port] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		l.Close()
		handedOut[port] = true
		return port
	}
	t.Fatal("no free port from 20000 to 32000")
	return 0
}

// proc is a running harmony process.
type proc struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	done   chan error
}

func startHarmony(t testing.TB, args ...string) *proc {
	t.Helper()
	return startHarmonyEnv(t, nil, args...)
}

// startHarmonyEnv is startHarmony with an environment of its own (nil:
// this process's).
func startHarmonyEnv(t testing.TB, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = env
	p := &proc{cmd: cmd, stderr: &bytes.Buffer{}}
	cmd.Stderr = p.stderr
	return startProc(t, p)
}

// startProc starts p.cmd (its stderr set by the caller) and kills it at
// the test's end if it still runs.
func startProc(t testing.TB, p *proc) *proc {
	t.Helper()
	cmd := p.cmd
	p.done = make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// signalAndWait sends sig and returns the exit code.
func (p *proc) signalAndWait(t testing.TB, sig os.Signal) int {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(30 * time.Second):
		t.Fatalf("harmony did not stop within 30s of %v; stderr:\n%s", sig, p.stderr)
	}
	return -1
}

func waitReady(t testing.TB, base string) {
	t.Helper()
	retry.Until(t, 30*time.Second, func() error {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz %d: %s", resp.StatusCode, body)
		}
		return nil
	})
}

func storeAt(t testing.TB, url string) store.Store {
	t.Helper()
	return storeAs(t, url, "")
}

// storeAs is storeAt with an nkey identity (seed file; "" for none).
func storeAs(t testing.TB, url, seed string) store.Store {
	t.Helper()
	return storeWith(t, mesh.ClientConfig{URLs: []string{url}, NkeySeedFile: seed})
}

// storeWith opens a store over a connection made with cfg, closed at
// cleanup.
func storeWith(t testing.TB, cfg mesh.ClientConfig) store.Store {
	t.Helper()
	nc, err := mesh.Connect(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	st, err := store.NewNATS(nc, store.NATSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// A user starts the server, stores something, stops it with Ctrl-C and starts
// it again on the same data directory: buckets and values are still there.
func TestServerSurvivesCtrlC(t *testing.T) {
	dir := t.TempDir()
	natsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	args := []string{"server", "--data-dir", dir, "--nats", natsAddr, "--http", httpAddr}

	p := startHarmony(t, args...)
	waitReady(t, "http://"+httpAddr)
	ctx := context.Background()
	kv, err := storeAt(t, "nats://"+natsAddr).Open(ctx, "deployments")
	if err != nil {
		t.Fatalf("deployments bucket: %v", err)
	}
	rev, err := kv.Create(ctx, "web", []byte(`{"v":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if code := p.signalAndWait(t, os.Interrupt); code != 0 {
		t.Fatalf("exit code %d after Ctrl-C; stderr:\n%s", code, p.stderr)
	}

	p2 := startHarmony(t, args...)
	waitReady(t, "http://"+httpAddr)
	kv2, err := storeAt(t, "nats://"+natsAddr).Open(ctx, "deployments")
	if err != nil {
		t.Fatalf("deployments bucket after restart: %v", err)
	}
	e, err := kv2.Get(ctx, "web")
	if err != nil || string(e.Value) != `{"v":1}` || e.Revision != rev {
		t.Fatalf("after restart: %q@%d, %v; want the value written before at %d", e.Value, e.Revision, err, rev)
	}
	if code := p2.signalAndWait(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("exit code %d after SIGTERM; stderr:\n%s", code, p2.stderr)
	}
}

func TestInvalidSettingExitsNamingIt(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  string
		want string
	}{
		{args: []string{"server", "--replicas", "2"}, want: "replicas"},
		{args: []string{"server"}, env: "HARMONY_HTTP=nowhere", want: "http"},
		{args: []string{"server", "--store-timeout", "soon"}, want: "store_timeout"},
	} {
		cmd := exec.Command(binary, tc.args...)
		if tc.env != "" {
			cmd.Env = append(os.Environ(), tc.env)
		}
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 {
			t.Errorf("%v %s: exit %v, want non-zero", tc.args, tc.env, err)
		}
		if !strings.Contains(string(out), tc.want) {
			t.Errorf("%v %s: output does not name %q:\n%s", tc.args, tc.env, tc.want, out)
		}
	}
}

func TestVersion(t *testing.T) {
	out, err := exec.Command(binary, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(out), "harmony ") || !strings.Contains(string(out), "go1.") {
		t.Fatalf("version output %q", out)
	}
}

// harmony dev prints the dashboard URL, serves it, and stops on SIGTERM.
func TestDevPrintsDashboardURL(t *testing.T) {
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cmd := exec.Command(binary, "dev", "--http", httpAddr)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "Dashboard: "); ok {
				urls <- u
			}
		}
		done <- cmd.Wait()
	}()
	var url string
	select {
	case url = <-urls:
	case err := <-done:
		t.Fatalf("dev exited: %v\n%s", err, stderr.String())
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("no Dashboard line within 30s\n%s", stderr.String())
	}
	if url != "http://"+httpAddr+"/" {
		t.Fatalf("Dashboard URL %q, want http://%s/", url, httpAddr)
	}
	waitReady(t, strings.TrimSuffix(url, "/"))
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "Harmony") {
		t.Fatalf("GET %s: %d\n%s", url, resp.StatusCode, page)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("dev exit after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("dev did not stop within 30s of SIGTERM")
	}
}
