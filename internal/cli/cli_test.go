package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/api/httpapi"
	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/buildinfo"
	"github.com/harmony-fleet/harmony/internal/cli"
	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/mesh"
	"github.com/harmony-fleet/harmony/internal/server"
	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/testutil/leak"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
	"github.com/harmony-fleet/harmony/internal/web"
)

func TestMain(m *testing.M) { leak.VerifyTestMain(m) }

// syncBuffer is an output stream that goroutines of a running server may
// write while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// clearEnv unsets every HARMONY_* variable for the test (restored after it),
// so the caller's environment cannot leak into the settings.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "HARMONY_") {
			t.Setenv(k, "") // registers the restore
			if err := os.Unsetenv(k); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// blockedDir returns a data directory that cannot be created (its parent is
// a regular file), so a server that got past validation by mistake fails at
// once instead of starting.
func blockedDir(t *testing.T) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(file, "data")
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// run runs the CLI to completion; a command that should fail fast but
// starts a server instead is stopped after 30s rather than hanging the test.
func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut syncBuffer
	code = cli.Main(ctx, args, &out, &errOut)
	if ctx.Err() != nil {
		t.Errorf("harmony %s ran until the test's deadline", strings.Join(args, " "))
	}
	return code, out.String(), errOut.String()
}

func TestVersion(t *testing.T) {
	code, stdout, stderr := run(t, "version")
	if code != cli.ExitOK {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	want := fmt.Sprintf("harmony %s (commit %s, %s)\n", buildinfo.Version, buildinfo.Commit, runtime.Version())
	if stdout != want {
		t.Fatalf("stdout %q, want %q", stdout, want)
	}
	if stderr != "" {
		t.Fatalf("stderr %q, want nothing", stderr)
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantCode int // 0 means any non-zero code
		wantErr  string
	}{
		{"unknown root flag", []string{"--bogus"}, cli.ExitUsage, "bogus"},
		{"unknown server flag", []string{"server", "--bogus"}, cli.ExitUsage, "bogus"},
		{"unknown version flag", []string{"version", "--bogus"}, cli.ExitUsage, "bogus"},
		{"bad flag value", []string{"server", "--replicas", "x"}, cli.ExitUsage, "flag --replicas"},
		{"bad bool flag value", []string{"server", "--sync-always=maybe"}, cli.ExitUsage, "flag --sync-always"},
		{"unknown subcommand", []string{"bogus"}, cli.ExitUsage, "bogus"},
		{"stray argument", []string{"version", "extra"}, cli.ExitUsage, "extra"},
		{"bench on two servers", []string{"bench", "fleet", "--servers", "2"}, cli.ExitUsage, "--servers 2: want 1 or 3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			code, _, stderr := run(t, tt.args...)
			if tt.wantCode != 0 && code != tt.wantCode || code == cli.ExitOK {
				t.Errorf("exit %d, want %d (non-zero when 0)", code, tt.wantCode)
			}
			if !strings.Contains(stderr, tt.wantErr) {
				t.Errorf("stderr %q does not mention %q", stderr, tt.wantErr)
			}
		})
	}
}

func TestServerInvalidSettingFailsBeforeStarting(t *testing.T) {
	clearEnv(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	code, _, stderr := run(t, "server", "--replicas", "2", "--data-dir", dataDir, "--nats", "127.0.0.1:0", "--http", "127.0.0.1:0")
	if code != cli.ExitError {
		t.Fatalf("exit %d, want %d; stderr %q", code, cli.ExitError, stderr)
	}
	if !strings.Contains(stderr, "setting replicas: 2:") {
		t.Fatalf("stderr does not name replicas: %q", stderr)
	}
	// Nothing started: no data directory, no log lines.
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Errorf("data dir exists after a validation failure (stat: %v)", err)
	}
	if strings.Contains(stderr, "started") || strings.Contains(stderr, "level=") {
		t.Errorf("server logged after a validation failure: %q", stderr)
	}
}

func TestServerConfigFileErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nonexistent.yaml")
	unknownKey := writeFile(t, "unknown.yaml", "replicas: 3\nreplica_count: 3\n")
	badType := writeFile(t, "bad.yaml", "store_timeout: soon\n")
	tests := []struct {
		name  string
		env   string // HARMONY_CONFIG, when set
		args  []string
		wants []string
	}{
		{"missing --config", "", []string{"--config", missing}, []string{missing}},
		{"missing /nonexistent.yaml", "", []string{"--config", "/nonexistent.yaml"}, []string{"/nonexistent.yaml"}},
		{"missing HARMONY_CONFIG", missing, nil, []string{missing}},
		{"unknown key", "", []string{"--config", unknownKey}, []string{unknownKey, "replica_count"}},
		{"bad duration", "", []string{"--config", badType}, []string{badType, "soon"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			if tt.env != "" {
				t.Setenv("HARMONY_CONFIG", tt.env)
			}
			args := append([]string{"server", "--data-dir", blockedDir(t), "--nats", "127.0.0.1:0", "--http", "127.0.0.1:0"}, tt.args...)
			code, _, stderr := run(t, args...)
			if code == cli.ExitOK {
				t.Fatalf("exit 0, want an error; stderr %q", stderr)
			}
			for _, w := range tt.wants {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q does not mention %q", stderr, w)
				}
			}
		})
	}
}

func TestServerBadEnvironmentValue(t *testing.T) {
	clearEnv(t)
	t.Setenv("HARMONY_REPLICAS", "x")
	code, _, stderr := run(t, "server", "--data-dir", blockedDir(t))
	if code != cli.ExitError {
		t.Fatalf("exit %d, want %d; stderr %q", code, cli.ExitError, stderr)
	}
	if !strings.Contains(stderr, "setting replicas") || !strings.Contains(stderr, "HARMONY_REPLICAS") {
		t.Fatalf("stderr %q does not name replicas and HARMONY_REPLICAS", stderr)
	}
}

// TestPrecedence proves defaults < file < environment < flags. Each layer
// that sets replicas uses a value no other layer uses, so the message tells
// which layer won; where the winner is valid, an invalid log level keeps
// validation failing and the absence of a replicas error is the evidence
// (each such case has a control showing the overridden value is reported
// when nothing overrides it). Every run also gets a data directory that
// cannot be created, so a mistakenly valid configuration fails at once
// rather than starting a server.
func TestPrecedence(t *testing.T) {
	tests := []struct {
		name    string
		file    string            // --config content, when set
		envFile string            // HARMONY_CONFIG content, when set
		env     map[string]string // HARMONY_* variables
		args    []string          // flags after the common ones
		want    []string          // in stderr
		notWant []string          // not in stderr
	}{
		{
			name: "flag beats environment and file",
			file: "http: \"127.0.0.1:1\"\nreplicas: 3\n",
			env:  map[string]string{"HARMONY_REPLICAS": "5"},
			args: []string{"--replicas", "2"},
			want: []string{"setting replicas: 2:"},
			// The file's http would be reported if validation saw it was
			// bad; it is valid, so only replicas is at fault.
			notWant: []string{"setting http", "setting log_level"},
		},
		{
			name:    "environment beats file",
			file:    "replicas: 2\n",
			env:     map[string]string{"HARMONY_REPLICAS": "1"},
			args:    []string{"--log-level", "loud"},
			want:    []string{"setting log_level:", `"loud"`},
			notWant: []string{"replicas"},
		},
		{
			name:    "control: the file's replicas is read when nothing overrides it",
			file:    "replicas: 2\n",
			args:    []string{"--log-level", "loud"},
			want:    []string{"setting log_level:", "setting replicas: 2:"},
			notWant: nil,
		},
		{
			name: "control: file value alone",
			file: "replicas: 7\n",
			want: []string{"setting replicas: 7:"},
		},
		{
			name:    "environment value beats file value",
			file:    "replicas: 7\n",
			env:     map[string]string{"HARMONY_REPLICAS": "9"},
			want:    []string{"setting replicas: 9:"},
			notWant: []string{"replicas: 7"},
		},
		{
			name:    "flag value beats environment and file values",
			file:    "replicas: 7\n",
			env:     map[string]string{"HARMONY_REPLICAS": "9"},
			args:    []string{"--replicas", "2"},
			want:    []string{"setting replicas: 2:"},
			notWant: []string{"replicas: 7", "replicas: 9"},
		},
		{
			name:    "valid flag hides invalid environment and file values",
			file:    "replicas: 7\nlog_level: loud\n",
			env:     map[string]string{"HARMONY_REPLICAS": "9"},
			args:    []string{"--replicas", "3"},
			want:    []string{"setting log_level:"},
			notWant: []string{"replicas"},
		},
		{
			name:    "control: environment value alone",
			env:     map[string]string{"HARMONY_REPLICAS": "9", "HARMONY_LOG_LEVEL": "loud"},
			want:    []string{"setting replicas: 9:", "setting log_level:"},
			notWant: nil,
		},
		{
			name:    "layers merge per setting",
			file:    "replicas: 7\nlog_level: loud\nstore_timeout: 1ms\n",
			env:     map[string]string{"HARMONY_LOG_LEVEL": "debug"},
			args:    []string{"--store-timeout", "10s"},
			want:    []string{"setting replicas: 7:"},
			notWant: []string{"log_level", "store_timeout"},
		},
		{
			name:    "defaults apply when no layer sets a value",
			args:    []string{"--log-level", "loud"},
			want:    []string{"setting log_level:"},
			notWant: []string{"replicas", "store_timeout", "http", "setting nats"},
		},
		{
			name:    "control: HARMONY_CONFIG names the file",
			envFile: "replicas: 4\n",
			want:    []string{"setting replicas: 4:"},
		},
		{
			name:    "--config beats HARMONY_CONFIG",
			envFile: "replicas: 4\n",
			file:    "replicas: 7\n",
			want:    []string{"setting replicas: 7:"},
			notWant: []string{"replicas: 4"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			args := []string{"server", "--data-dir", blockedDir(t), "--nats", "127.0.0.1:0"}
			if tt.file != "" {
				args = append(args, "--config", writeFile(t, "flag.yaml", tt.file))
			}
			if tt.envFile != "" {
				t.Setenv("HARMONY_CONFIG", writeFile(t, "env.yaml", tt.envFile))
			}
			args = append(args, tt.args...)
			code, _, stderr := run(t, args...)
			if code != cli.ExitError {
				t.Errorf("exit %d, want %d", code, cli.ExitError)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not contain %q", w)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(stderr, w) {
					t.Errorf("stderr contains %q", w)
				}
			}
			// Only validation may fail: reaching the blocked data dir means
			// the merged settings were valid, which no case intends.
			if strings.Contains(stderr, "data dir") {
				t.Errorf("validation passed and the server tried to start")
			}
			if t.Failed() {
				t.Logf("harmony %s\nstderr: %s", strings.Join(args, " "), stderr)
			}
		})
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

func TestServerStartsAndStops(t *testing.T) {
	clearEnv(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var stdout, stderr syncBuffer
	var code int
	done := make(chan struct{})
	go func() {
		defer close(done)
		code = cli.Main(ctx, []string{"server", "--data-dir", dataDir, "--nats", "127.0.0.1:0", "--http", addr, "--tls", "off"}, &stdout, &stderr)
	}()
	// However the test ends, the server stops before goleak looks.
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("server still running 30s after cancel")
		}
	})

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	defer client.CloseIdleConnections()
	url := "http://" + addr + "/readyz"
	deadline := time.Now().Add(30 * time.Second)
	pause := 5 * time.Millisecond
	var last string
	for {
		select {
		case <-done:
			t.Fatalf("harmony server exited with %d before it was ready; stderr:\n%s", code, stderr.String())
		default:
		}
		resp, err := client.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
			last = fmt.Sprintf("%s: %s", resp.Status, body)
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after 30s: %s; stderr:\n%s", url, last, stderr.String())
		}
		time.Sleep(pause)
		if pause < 200*time.Millisecond {
			pause *= 2
		}
	}
	// --data-dir was used for the embedded server's storage.
	if fi, err := os.Stat(filepath.Join(dataDir, "nats")); err != nil || !fi.IsDir() {
		t.Errorf("no NATS storage under --data-dir: %v", err)
	}

	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Main did not return within 30s of cancel")
	}
	if code != cli.ExitOK {
		t.Fatalf("exit %d after cancel, want 0; stderr:\n%s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "harmony server stopped") {
		t.Errorf("no stop message in stderr:\n%s", stderr.String())
	}
	if stdout.String() != "" {
		t.Errorf("server wrote to stdout: %q", stdout.String())
	}
}

func TestTokenNeverGoesOverPlainHTTPToAnotherMachine(t *testing.T) {
	clearEnv(t)
	t.Setenv("HARMONY_TOKEN", "secret")
	code, _, stderr := run(t, "get", "devices", "--server", "http://192.0.2.1:8080")
	if code == cli.ExitOK || !strings.Contains(stderr, "refusing to send the token over plain HTTP") {
		t.Fatalf("exit %d, stderr %q: want a refusal before any connection", code, stderr)
	}
}

// fleetServer is a harmony server run in-process for the fleet commands,
// with a store the test writes devices' reports into.
type fleetServer struct {
	url   string
	store store.Store
}

const testAdminToken = "cli-test-admin-token-5e1b7c9d3f"

func startFleetServer(t *testing.T) fleetServer {
	t.Helper()
	cfg := config.DefaultServer()
	cfg.DataDir = t.TempDir()
	cfg.NATSListen, cfg.HTTP = "127.0.0.1:0", "127.0.0.1:0"
	cfg.TLS, cfg.NATSAuth = "off", "off"
	cfg.Tokens = []config.Token{{Name: "admin", Role: "admin", SHA256: web.HashToken(testAdminToken)}}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan server.Info, 1)
	done := make(chan error, 1)
	go func() {
		done <- server.Run(ctx, cfg, slog.New(slog.DiscardHandler), server.Options{OnReady: func(i server.Info) { ready <- i }})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	var info server.Info
	select {
	case info = <-ready:
	case err := <-done:
		t.Fatalf("server stopped before it was ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("server not ready within 30s")
	}
	nc, err := mesh.Connect(mesh.ClientConfig{URLs: []string{info.NATSURL}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	st, err := store.NewNATS(nc, store.NATSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("HARMONY_TOKEN", testAdminToken)
	retry.Until(t, 30*time.Second, func() error {
		if code, out, errOut := run(t, "get", "deployments", "--server", info.HTTPURL); code != 0 {
			return fmt.Errorf("get deployments: %d %s%s", code, out, errOut)
		}
		return nil
	})
	return fleetServer{url: info.HTTPURL, store: st}
}

// put writes a device's report (device-info, device-heartbeat or
// device-state) as its agent would.
func (f fleetServer) put(t *testing.T, bucket, key string, v any) {
	t.Helper()
	ctx := context.Background()
	kv, err := f.store.Open(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	b, err := v1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	cur, err := kv.Get(ctx, key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		_, err = kv.Create(ctx, key, b)
	case err == nil:
		_, err = kv.Update(ctx, key, b, cur.Revision)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// device makes a device that has reported and beats.
func (f fleetServer) device(t *testing.T, id, site string) {
	f.put(t, "device-info", id, v1.DeviceInfo{V: v1.FormatVersion, ID: id, Labels: map[string]string{"site": site}})
	f.put(t, "device-heartbeat", id, v1.Heartbeat{V: v1.FormatVersion, Boot: "b", Seq: 1})
}

func manifest(t *testing.T, name, site, content string) string {
	return writeFile(t, name+".yaml", fmt.Sprintf(`apiVersion: harmony/v1alpha1
kind: Deployment
metadata: {name: %s}
spec:
  selector: {matchLabels: {site: %s}}
  resources:
    - {id: motd, kind: File, spec: {path: /etc/motd, content: %q}}
`, name, site, content))
}

// TestLabelUnknownDevice: labelling a device that never reported fails
// with not-found naming it (it used to print "labeled" and exit 0).
func TestLabelUnknownDevice(t *testing.T) {
	clearEnv(t)
	f := startFleetServer(t)
	f.device(t, "dev-1", "home")
	code, out, errOut := run(t, "label", "device", "nosuch", "a=b", "--server", f.url)
	if code != cli.ExitError || out != "" || !strings.Contains(errOut, `device "nosuch" not found`) {
		t.Fatalf("label an unknown device: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, out, errOut := run(t, "label", "device", "dev-1", "a=b", "--server", f.url); code != 0 || out != "device/dev-1 labeled\n" {
		t.Fatalf("label a known device: exit %d, %q %q", code, out, errOut)
	}
}

// TestServerMustBeAURL: a scheme-less --server or HARMONY_SERVER is
// refused, saying what was written and what is wanted.
func TestServerMustBeAURL(t *testing.T) {
	clearEnv(t)
	code, _, errOut := run(t, "get", "devices", "--server", "127.0.0.1:18080")
	if code != cli.ExitUsage || !strings.Contains(errOut, `--server "127.0.0.1:18080": want a URL such as https://127.0.0.1:18080`) {
		t.Fatalf("--server without a scheme: exit %d, stderr %q", code, errOut)
	}
	t.Setenv("HARMONY_SERVER", "127.0.0.1:18080")
	for _, args := range [][]string{{"get", "devices"}, {"enroll", "--nkey", filepath.Join(t.TempDir(), "k")}} {
		code, _, errOut = run(t, args...)
		if code != cli.ExitUsage || !strings.Contains(errOut, `HARMONY_SERVER "127.0.0.1:18080": want a URL such as https://127.0.0.1:18080`) {
			t.Errorf("%v with HARMONY_SERVER without a scheme: exit %d, stderr %q", args, code, errOut)
		}
	}
}

// TestApplyWaitIgnoresAnOlderGenerationsFailure: --wait on a corrected
// file waits for the new generation instead of failing at once with the
// failure the device reported for the previous one.
func TestApplyWaitIgnoresAnOlderGenerationsFailure(t *testing.T) {
	clearEnv(t)
	f := startFleetServer(t)
	f.device(t, "dev-1", "home")
	if code, out, errOut := run(t, "apply", "-f", manifest(t, "web", "home", "broken"), "--server", f.url); code != 0 || !strings.Contains(out, "generation 1") {
		t.Fatalf("apply: %d %s%s", code, out, errOut)
	}
	// A device reports for the deployment's UID, which the server made.
	// (describe reads the operator's view, which sees the apply a moment
	// after the store has it.)
	var created httpapi.DeploymentView
	retry.Until(t, 30*time.Second, func() error {
		if _, out, _ := run(t, "describe", "deployment", "web", "-o", "json", "--server", f.url); json.Unmarshal([]byte(out), &created) != nil || created.Deployment.Metadata.UID == "" {
			return fmt.Errorf("no deployment UID in:\n%s", out)
		}
		return nil
	})
	uid := created.Deployment.Metadata.UID
	f.put(t, "device-state", "dev-1.web", v1.DeviceState{V: v1.FormatVersion, Device: "dev-1", Deployment: "web", UID: uid,
		RefusedGeneration: 1, Phase: v1.PhaseFailed, Message: "generation 1 refused"})
	retry.Until(t, 30*time.Second, func() error { // the server has seen the failure
		_, out, _ := run(t, "describe", "deployment", "web", "-o", "json", "--server", f.url)
		var v httpapi.DeploymentView
		if err := json.Unmarshal([]byte(out), &v); err != nil || v.Status.Failed != 1 {
			return fmt.Errorf("not failed yet (%v):\n%s", err, out)
		}
		return nil
	})

	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- cli.Main(context.Background(), []string{"apply", "-f", manifest(t, "web", "home", "fixed"), "--wait", "--timeout", "30s", "--server", f.url}, &stdout, &stderr)
	}()
	// Once --wait shows the new generation pending, the device reports it.
	retry.Until(t, 30*time.Second, func() error {
		select {
		case code := <-done:
			t.Fatalf("--wait ended (exit %d) before the device reported generation 2:\n%s%s", code, stdout.String(), stderr.String())
		default:
		}
		if !strings.Contains(stdout.String(), "0/1 succeeded, 0 failed, 1 pending") {
			return fmt.Errorf("no pending line yet:\n%s", stdout.String())
		}
		return nil
	})
	f.put(t, "device-state", "dev-1.web", v1.DeviceState{V: v1.FormatVersion, Device: "dev-1", Deployment: "web", UID: uid,
		ObservedGeneration: 2, Phase: v1.PhaseReady})
	select {
	case code := <-done:
		if code != 0 || !strings.Contains(stdout.String(), "1/1 succeeded") || !strings.Contains(stdout.String(), "deployment/web rolled out") {
			t.Fatalf("apply --wait: exit %d\n%s%s", code, stdout.String(), stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("apply --wait did not end:\n%s%s", stdout.String(), stderr.String())
	}

	// A failure at the new generation still fails --wait.
	var out2, err2 syncBuffer
	go func() {
		done <- cli.Main(context.Background(), []string{"apply", "-f", manifest(t, "web", "home", "broken again"), "--wait", "--timeout", "30s", "--server", f.url}, &out2, &err2)
	}()
	retry.Until(t, 30*time.Second, func() error {
		if !strings.Contains(out2.String(), "pending") {
			return errors.New("no pending line yet")
		}
		return nil
	})
	// As the agent reports it: generation 2 still enforced, 3 refused.
	f.put(t, "device-state", "dev-1.web", v1.DeviceState{V: v1.FormatVersion, Device: "dev-1", Deployment: "web", UID: uid,
		ObservedGeneration: 2, RefusedGeneration: 3, Phase: v1.PhaseFailed, Message: "generation 3 refused"})
	select {
	case code := <-done:
		if code != cli.ExitError || !strings.Contains(err2.String(), "dev-1: generation 3 refused") {
			t.Fatalf("apply --wait of a failing generation: exit %d\n%s%s", code, out2.String(), err2.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("apply --wait did not end:\n%s%s", out2.String(), err2.String())
	}
}

// TestApplyWaitWarnsWhenNothingMatches: --wait on a deployment that
// matches no device says so (stdout and a warning on stderr) and exits 0.
func TestApplyWaitWarnsWhenNothingMatches(t *testing.T) {
	clearEnv(t)
	f := startFleetServer(t)
	f.device(t, "dev-1", "home")
	code, out, errOut := run(t, "apply", "-f", manifest(t, "lonely", "nowhere", "x"), "--wait", "--timeout", "20s", "--server", f.url)
	if code != 0 || !strings.Contains(out, "deployment/lonely: matches no device") || strings.Contains(out, "rolled out") ||
		!strings.Contains(errOut, "warning: deployment/lonely matches no device (selector site=nowhere)") {
		t.Fatalf("apply --wait matching nothing: exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
}
