package cli_test

import (
	"bytes"
	"context"
	"fmt"
	"github.com/harmony-fleet/harmony/internal/testutil/leak"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/buildinfo"
	"github.com/harmony-fleet/harmony/internal/cli"
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
