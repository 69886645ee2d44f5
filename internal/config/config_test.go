package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/config"
)

// leaves returns the errors joined in err (or err itself when it is not a
// join).
func leaves(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "harmony.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDefaultsValidate(t *testing.T) {
	cfg := config.DefaultServer()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if !cfg.Embedded() {
		t.Fatal("defaults should embed NATS")
	}
}

func TestLoadFile(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		want    func(*config.Server) // applied to the defaults: the expected result
		wantErr []string             // substrings of the error; nil means success
	}{
		{
			name: "keys set their fields, others keep defaults",
			yaml: `
data_dir: /var/lib/harmony
http: "0.0.0.0:9090"
replicas: 3
sync_always: false
store_timeout: 1m30s
nats_url: ["nats://a:4222", "nats://b:4222"]
buckets:
  deployments: deps
`,
			want: func(c *config.Server) {
				c.DataDir = "/var/lib/harmony"
				c.HTTP = "0.0.0.0:9090"
				c.Replicas = 3
				c.SyncAlways = false
				c.StoreTimeout = config.Duration(90 * time.Second)
				c.NATSURLs = []string{"nats://a:4222", "nats://b:4222"}
				c.Buckets.Deployments = "deps"
			},
		},
		{
			name: "empty file keeps defaults",
			yaml: "",
			want: func(*config.Server) {},
		},
		{
			name:    "unknown top-level key is named",
			yaml:    "replicas: 3\nreplica_count: 3\n",
			wantErr: []string{`"replica_count"`},
		},
		{
			name:    "unknown nested key is named",
			yaml:    "buckets:\n  deployment: x\n",
			wantErr: []string{`"deployment"`},
		},
		{
			name:    "bad duration",
			yaml:    "store_timeout: soon\n",
			wantErr: []string{`"soon"`, "store_timeout"},
		},
		{
			name:    "duration without unit",
			yaml:    "store_timeout: 5\n",
			wantErr: []string{"duration"},
		},
		{
			name:    "wrong type is named",
			yaml:    "replicas: many\n",
			wantErr: []string{"replicas"},
		},
		{
			name:    "not YAML",
			yaml:    "replicas: [3\n",
			wantErr: []string{"line 1: not valid YAML"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, tt.yaml)
			got := config.DefaultServer()
			err := config.LoadFile(path, &got)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("LoadFile succeeded, want an error containing %q; got %+v", tt.wantErr, got)
				}
				for _, s := range append([]string{path}, tt.wantErr...) {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not contain %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadFile: %v", err)
			}
			want := config.DefaultServer()
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("LoadFile:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestLoadFileMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "absent.yaml")
	cfg := config.DefaultServer()
	err := config.LoadFile(path, &cfg)
	if err == nil || !strings.Contains(err.Error(), path) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("LoadFile(missing) = %v, want a not-exist error naming %s", err, path)
	}
}

func TestApplyEnv(t *testing.T) {
	tests := []struct {
		name    string
		environ []string
		want    func(*config.Server)
	}{
		{
			name: "variables set their fields",
			environ: []string{
				"HARMONY_DATA_DIR=/data/h",
				"HARMONY_REPLICAS=3",
				"HARMONY_SYNC_ALWAYS=false",
				"HARMONY_NATS_URL=a,b",
				"HARMONY_STORE_TIMEOUT=2s",
				"HARMONY_LOG_LEVEL=debug",
			},
			want: func(c *config.Server) {
				c.DataDir = "/data/h"
				c.Replicas = 3
				c.SyncAlways = false
				c.NATSURLs = []string{"a", "b"}
				c.StoreTimeout = config.Duration(2 * time.Second)
				c.LogLevel = "debug"
			},
		},
		{
			name:    "list items are trimmed and empty ones dropped",
			environ: []string{"HARMONY_NATS_URL= nats://a:1 ,,nats://b:2,"},
			want:    func(c *config.Server) { c.NATSURLs = []string{"nats://a:1", "nats://b:2"} },
		},
		{
			name:    "value keeps its own '='",
			environ: []string{"HARMONY_NATS_CREDS=/x=y"},
			want:    func(c *config.Server) { c.NATSCreds = "/x=y" },
		},
		{
			name:    "HARMONY_NATS is not HARMONY_NATS_URL",
			environ: []string{"HARMONY_NATS=127.0.0.1:5222"},
			want:    func(c *config.Server) { c.NATSListen = "127.0.0.1:5222" },
		},
		{
			name: "other and malformed variables are ignored",
			environ: []string{
				"PATH=/bin", "REPLICAS=3", "harmony_replicas=3", "HARMONY_REPLICAS", "HARMONY_UNKNOWN=1",
			},
			want: func(*config.Server) {},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := config.DefaultServer()
			if err := config.ApplyEnv(got.Settings(), tt.environ); err != nil {
				t.Fatalf("ApplyEnv: %v", err)
			}
			want := config.DefaultServer()
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("ApplyEnv:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestApplyEnvBadValue(t *testing.T) {
	tests := []struct {
		env     string
		setting string
	}{
		{"HARMONY_REPLICAS=x", "replicas"},
		{"HARMONY_SYNC_ALWAYS=maybe", "sync_always"},
		{"HARMONY_STORE_TIMEOUT=soon", "store_timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.env, func(t *testing.T) {
			cfg := config.DefaultServer()
			err := config.ApplyEnv(cfg.Settings(), []string{tt.env})
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Fatalf("ApplyEnv(%s) = %v, want a *config.Error", tt.env, err)
			}
			name, value, _ := strings.Cut(tt.env, "=")
			if ce.Setting != tt.setting {
				t.Errorf("Setting = %q, want %q", ce.Setting, tt.setting)
			}
			if !strings.Contains(ce.Source, name) {
				t.Errorf("Source = %q, want it to mention %s", ce.Source, name)
			}
			if !strings.Contains(err.Error(), value) {
				t.Errorf("error %q does not show the bad value %q", err, value)
			}
		})
	}
}

func TestValidateNamesTheSetting(t *testing.T) {
	tests := []struct {
		key    string
		mutate func(*config.Server)
	}{
		{"replicas", func(c *config.Server) { c.Replicas = 2 }},
		{"replicas", func(c *config.Server) { c.Replicas = 0 }},
		{"http", func(c *config.Server) { c.HTTP = "nohost" }},
		{"http", func(c *config.Server) { c.HTTP = "127.0.0.1:http" }},
		{"nats", func(c *config.Server) { c.NATSListen = ":99999" }},
		{"nats", func(c *config.Server) { c.NATSListen = "127.0.0.1:-1" }},
		{"log_level", func(c *config.Server) { c.LogLevel = "loud" }},
		{"log_level", func(c *config.Server) { c.LogLevel = "INFO" }},
		{"store_timeout", func(c *config.Server) { c.StoreTimeout = config.Duration(time.Millisecond) }},
		{"store_timeout", func(c *config.Server) { c.StoreTimeout = config.Duration(2 * time.Minute) }},
		{"data_dir", func(c *config.Server) { c.DataDir = "" }},
		{"data_dir", func(c *config.Server) { c.DataDir = "  " }},
		{"nats_url", func(c *config.Server) { c.NATSURLs = []string{"nats://ok:4222", "nohost"} }},
		{"buckets.deployments", func(c *config.Server) { c.Buckets.Deployments = "fleet.deployments" }},
		{"buckets.desired_state", func(c *config.Server) { c.Buckets.DesiredState = "desired state" }},
		{"buckets.device_info", func(c *config.Server) { c.Buckets.DeviceInfo = "" }},
		{"buckets.device_state", func(c *config.Server) { c.Buckets.DeviceState = "state*" }},
		{"buckets.device_heartbeat", func(c *config.Server) { c.Buckets.DeviceHeartbeat = "hb>" }},
		{"buckets.identities", func(c *config.Server) { c.Buckets.Identities = "ids.x" }},
		{"nats_auth", func(c *config.Server) { c.NATSAuth = "none" }},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			cfg := config.DefaultServer()
			tt.mutate(&cfg)
			err := cfg.Validate()
			if err == nil {
				t.Fatalf("Validate accepted an invalid %s: %+v", tt.key, cfg)
			}
			if !strings.Contains(err.Error(), tt.key) {
				t.Errorf("error %q does not name %s", err, tt.key)
			}
			errs := leaves(err)
			if len(errs) != 1 {
				t.Fatalf("want exactly one problem, got %d: %v", len(errs), err)
			}
			var ce *config.Error
			if !errors.As(errs[0], &ce) || ce.Setting != tt.key {
				t.Fatalf("error %v is not a *config.Error for %s", errs[0], tt.key)
			}
		})
	}
}

func TestValidateAcceptsEdges(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*config.Server)
	}{
		{"replicas 3", func(c *config.Server) { c.Replicas = 3 }},
		{"replicas 5", func(c *config.Server) { c.Replicas = 5 }},
		{"store_timeout 100ms", func(c *config.Server) { c.StoreTimeout = config.Duration(100 * time.Millisecond) }},
		{"store_timeout 1m", func(c *config.Server) { c.StoreTimeout = config.Duration(time.Minute) }},
		{"port 0", func(c *config.Server) { c.HTTP = "127.0.0.1:0"; c.NATSListen = ":0" }},
		{"port 65535", func(c *config.Server) { c.HTTP = "[::1]:65535" }},
		{"external NATS needs no data_dir or listen address", func(c *config.Server) {
			c.NATSURLs = []string{"nats://a:4222", "b:4222"}
			c.DataDir = ""
			c.TLS = "off"
			c.NATSListen = "unused"
		}},
		{"bucket names with - and _", func(c *config.Server) { c.Buckets.Deployments = "My_deploy-2" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config.DefaultServer()
			tt.mutate(&cfg)
			if err := cfg.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
		})
	}
}

func TestValidateReportsAllProblems(t *testing.T) {
	cfg := config.DefaultServer()
	cfg.Replicas = 2
	cfg.HTTP = "nohost"
	cfg.NATSListen = ":99999"
	cfg.LogLevel = "loud"
	cfg.StoreTimeout = config.Duration(time.Millisecond)
	cfg.DataDir = ""
	cfg.Buckets.DeviceState = "a.b"
	cfg.Buckets.Deployments = "a b"
	keys := []string{
		"buckets.deployments", "buckets.device_state", "data_dir", "http",
		"log_level", "nats", "replicas", "store_timeout",
	} // sorted: the order Validate reports them in

	err := cfg.Validate()
	if err == nil {
		t.Fatal("Validate accepted eight problems")
	}
	var got []string
	for _, e := range leaves(err) {
		var ce *config.Error
		if !errors.As(e, &ce) {
			t.Fatalf("%v is not a *config.Error", e)
		}
		got = append(got, ce.Setting)
	}
	if !reflect.DeepEqual(got, keys) {
		t.Fatalf("settings reported: %q, want %q", got, keys)
	}
	for _, k := range keys {
		if !strings.Contains(err.Error(), "setting "+k+":") {
			t.Errorf("message does not name %s: %v", k, err)
		}
	}
	// Bucket names are checked from a map; the message must still be stable.
	for range 20 {
		if again := cfg.Validate(); again.Error() != err.Error() {
			t.Fatalf("Validate message changed between calls:\n%v\n---\n%v", err, again)
		}
	}
}

func TestErrorMessage(t *testing.T) {
	tests := []struct {
		err  config.Error
		want string
	}{
		{config.Error{Setting: "replicas", Reason: "bad"}, "setting replicas: bad"},
		{config.Error{Setting: "replicas", Source: "flag --replicas", Reason: "bad"}, "setting replicas (from flag --replicas): bad"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestSettingsRoundTrip(t *testing.T) {
	// Every setting's Get returns what its Set stored, and the keys, flags
	// and environment names are unique.
	values := map[string]string{
		"data_dir": "/d", "nats": "127.0.0.1:1", "nats_url": "nats://a:1,nats://b:2",
		"nats_creds": "/c", "nats_ca": "/ca", "nats_cert": "/cert", "nats_key": "/key",
		"http": "127.0.0.1:2", "replicas": "5", "sync_always": "false",
		"store_timeout": "7s", "log_level": "warn", "heartbeat_staleness": "45s",
		"name": "s1", "cluster_name": "hc", "cluster_listen": "127.0.0.1:3", "routes": "127.0.0.1:3,127.0.0.1:4",
		"cluster_advertise": "10.0.0.1:6222", "client_advertise": "10.0.0.1:4222", "no_advertise": "true",
		"tokens_file": "/etc/harmony/tokens.yaml", "tls": "off", "tls_cert": "/c.pem", "tls_key": "/k.pem",
		"tls_hosts": "harmony.example,10.0.0.7", "nats_auth": "off", "nats_key_exchange": "hybrid",
	}
	cfg := config.DefaultServer()
	keys, flags := map[string]bool{}, map[string]bool{}
	for _, s := range cfg.Settings() {
		if keys[s.Key] || flags[s.Flag] {
			t.Fatalf("duplicate setting %s / --%s", s.Key, s.Flag)
		}
		keys[s.Key], flags[s.Flag] = true, true
		v, ok := values[s.Key]
		if !ok {
			t.Fatalf("setting %s not covered by this test", s.Key)
		}
		if err := s.Set(v); err != nil {
			t.Fatalf("%s.Set(%q): %v", s.Key, v, err)
		}
		if got := s.Get(); got != v {
			t.Errorf("%s: Get() = %q after Set(%q)", s.Key, got, v)
		}
		if got, want := config.EnvName(s.Key), "HARMONY_"+strings.ToUpper(s.Key); got != want {
			t.Errorf("EnvName(%s) = %s, want %s", s.Key, got, want)
		}
	}
	if len(keys) != len(values) {
		t.Errorf("%d settings, test covers %d", len(keys), len(values))
	}
	// With nats_url set, the embedded server's own settings are refused,
	// each named; without it, everything set here is valid.
	err := cfg.Validate()
	for _, k := range []string{"cluster_name", "cluster_listen", "routes", "cluster_advertise", "client_advertise", "no_advertise"} {
		if err == nil || !strings.Contains(err.Error(), "setting "+k+": applies to the embedded NATS only") {
			t.Errorf("nats_url with %s set: %v", k, err)
		}
	}
	cfg.NATSURLs = nil
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config set through every setting does not validate: %v", err)
	}
}

func TestClusterSettingsAreCheckedTogether(t *testing.T) {
	for _, tc := range []struct {
		set  func(*config.Server)
		want string
	}{
		{func(c *config.Server) { c.ClusterName = "hc"; c.Name = "s1"; c.ClusterListen = "127.0.0.1:6222" }, "setting routes"},
		{func(c *config.Server) {
			c.ClusterName = "hc"
			c.ClusterListen = "127.0.0.1:6222"
			c.Routes = []string{"127.0.0.1:6222"}
		}, "setting name"},
		{func(c *config.Server) { c.Routes = []string{"127.0.0.1:6222"} }, "setting cluster_name"},
		{func(c *config.Server) {
			c.ClusterName = "hc"
			c.Name = "s1"
			c.ClusterListen = "nowhere"
			c.Routes = []string{"a:1"}
		}, "setting cluster_listen"},
		{func(c *config.Server) { c.NoAdvertise = true }, "setting cluster_name"},
		{func(c *config.Server) {
			c.ClusterName, c.Name, c.ClusterListen, c.Routes = "hc", "s1", "127.0.0.1:6222", []string{"a:1"}
			c.ClusterAdvertise = "no port"
		}, "setting cluster_advertise"},
		{func(c *config.Server) { c.ClientAdvertise = "10.0.0.1" }, "setting client_advertise"},
	} {
		cfg := config.DefaultServer()
		tc.set(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want an error naming %q", err, tc.want)
		}
	}
	cfg := config.DefaultServer()
	cfg.ClusterName, cfg.Name, cfg.ClusterListen, cfg.Routes = "hc", "s1", "127.0.0.1:6222", []string{"127.0.0.1:6222", "127.0.0.1:6223"}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("a complete cluster setting refused: %v", err)
	}
}

func TestTokensAreValidatedAndLoadedFromAFile(t *testing.T) {
	hash := strings.Repeat("ab", 32)
	cfg := config.DefaultServer()
	cfg.Tokens = []config.Token{
		{Name: "alice", Role: "admin", SHA256: hash},
		{Name: "alice", Role: "root", SHA256: "beef"},
	}
	err := cfg.Validate()
	for _, want := range []string{"tokens[1].name", "tokens[1].role", "tokens[1].sha256"} {
		if err == nil || !strings.Contains(err.Error(), "setting "+want+":") {
			t.Errorf("Validate does not name %s: %v", want, err)
		}
	}

	path := filepath.Join(t.TempDir(), "tokens.yaml")
	if err := os.WriteFile(path, []byte("- {name: bob, role: viewer, sha256: "+hash+"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg = config.DefaultServer()
	cfg.Tokens = []config.Token{{Name: "alice", Role: "admin", SHA256: hash}}
	cfg.TokensFile = path
	if err := cfg.LoadTokensFile(); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Tokens) != 2 || cfg.Tokens[1].Name != "bob" || cfg.Tokens[1].Role != "viewer" {
		t.Fatalf("tokens after loading the file: %+v", cfg.Tokens)
	}
	for _, bad := range []string{"- {name: bob, role: viewer, sha: x}\n", "not: [a list\n"} {
		if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg.TokensFile = path
		if err := cfg.LoadTokensFile(); err == nil || !strings.Contains(err.Error(), "setting tokens_file") {
			t.Errorf("file %q: %v, want an error naming tokens_file", bad, err)
		}
	}
}

func TestAgentHasOneNATSIdentity(t *testing.T) {
	cfg := config.DefaultAgent()
	cfg.ID = "dev-1"
	cfg.NATSNkey, cfg.NATSCreds = "/etc/harmony/dev.nk", "/etc/harmony/dev.creds"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "setting nats_nkey:") {
		t.Fatalf("nkey and creds together: %v, want an error naming nats_nkey", err)
	}
	cfg.NATSCreds = ""
	if err := cfg.Validate(); err != nil {
		t.Fatalf("an nkey alone: %v", err)
	}
}
