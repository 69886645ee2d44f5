package cli_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/harmony-fleet/harmony/internal/cli"
)

// Errors say what was written and what is expected, in the terms of the
// command line and the file.
func TestErrorsInTheUsersTerms(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"switch with a separate value", []string{"server", "--sync-always", "maybe"},
			`"maybe": --sync-always is a switch, which takes a value only after "="; write --sync-always=false to turn it off (--sync-always alone turns it on)`},
		{"switch with a separate false", []string{"server", "--no-advertise", "false"},
			`"false": --no-advertise is a switch`},
		{"agent switch", []string{"agent", "--exec", "no"}, `"no": --exec is a switch`},
		{"a stray argument is still one", []string{"server", "extra"}, `harmony server takes no arguments, got ["extra"]`},
		{"after --", []string{"server", "--sync-always", "--", "false"}, `takes no arguments`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			code, _, stderr := run(t, tt.args...)
			if code != cli.ExitUsage {
				t.Errorf("exit %d, want %d", code, cli.ExitUsage)
			}
			if !strings.Contains(stderr, tt.wantErr) {
				t.Errorf("stderr %q does not contain %q", stderr, tt.wantErr)
			}
		})
	}
}

// A config file's errors name the file, the line and the key as written.
func TestConfigFileErrorsInYAMLTerms(t *testing.T) {
	clearEnv(t)
	path := writeFile(t, "agent.yaml", "id: pi\nnats_urls: [nats://a:4222]\n")
	_, _, stderr := run(t, "agent", "--config", path)
	want := path + ` line 2: unknown field "nats_urls" (known: `
	if !strings.Contains(stderr, want) || strings.Contains(stderr, "json") {
		t.Errorf("stderr %q, want it to contain %q and no json", stderr, want)
	}
	// A comma-separated string is a list, as in the variable and the flag.
	path = writeFile(t, "server.yaml", "nats_url: nats://a:4222,nats://b:4222\nreplicas: 2\n")
	_, _, stderr = run(t, "server", "--config", path)
	if !strings.Contains(stderr, "setting replicas: 2:") {
		t.Errorf("stderr %q: want the file read and replicas refused", stderr)
	}
}

func TestCheckCommandLine(t *testing.T) {
	for _, tc := range []struct {
		args    string
		wantErr string // "" when valid
	}{
		{"get devices", ""},
		{"apply -f web.yaml --wait", ""},
		{"token create --server https://h:8080 --ca ca.pem --expires 1h --device kiosk-3", ""},
		{"device approve kiosk-3 --fingerprint a7c1", ""},
		{"server --help", ""},
		{"server --sync-always=false", ""},
		{"gett devices", `unknown command "gett"`},
		{"token create --expire 1h", "unknown flag: --expire"},
		{"device approve", "want: approve ID"},
		{"server --sync-always maybe", `"maybe": --sync-always is a switch`},
		{"version extra", "takes no arguments"},
	} {
		err := cli.CheckCommandLine(strings.Fields(tc.args))
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("harmony %s: %v", tc.args, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("harmony %s: got %v, want an error containing %q", tc.args, err, tc.wantErr)
		}
	}
}

// harmony exec ends with the exit code of the command on the device, after
// printing its output, as ssh does.
func TestExecExitsWithTheCommandsCode(t *testing.T) {
	clearEnv(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/api/v1/devices/d1/exec" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadGateway)
		io.WriteString(w, `{"error":{"code":"device_error","message":"d1: exit status 3","reply":{"ok":false,"output":"partial\n","exitCode":3}}}`)
	}))
	t.Cleanup(srv.Close)
	code, stdout, stderr := run(t, "exec", "d1", "--server", srv.URL, "--", "false")
	if code != 3 || stdout != "partial\n" || !strings.Contains(stderr, "exit status 3") {
		t.Fatalf("exit %d, stdout %q, stderr %q; want 3, the output and the error", code, stdout, stderr)
	}
}
