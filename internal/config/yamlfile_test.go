package config_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/harmony-fleet/harmony/internal/config"
)

// Errors in a config file are said in the file's terms: its name and line,
// the key as written and what it takes; never the decoder's "json:" or Go
// type names.
func TestParseErrorsSpeakYAML(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		agent      bool
		want       string // the whole message
	}{
		{"unknown top-level key", "replicas: 3\nreplica_count: 3\n", false,
			`server.yaml line 2: unknown field "replica_count" (known: buckets, client_advertise, cluster_advertise, cluster_listen, cluster_name, data_dir, heartbeat_staleness, http, log_level, name, nats, nats_auth, nats_ca, nats_cert, nats_creds, nats_key, nats_key_exchange, nats_url, no_advertise, replicas, routes, store_timeout, sync_always, tls, tls_cert, tls_hosts, tls_key, tokens, tokens_file)`},
		{"unknown nested key", "http: :8080\nbuckets:\n  deployments: d\n  deployment: x\n", false,
			`server.yaml line 4: buckets: unknown field "deployment" (known: deployments, desired_state, device_heartbeat, device_info, device_labels, device_presence, device_state, identities, leases, rollouts, secrets)`},
		{"unknown key in a list item", "tokens:\n  - name: a\n    role: admin\n  - name: b\n    rol: viewer\n", false,
			`server.yaml line 5: tokens[1]: unknown field "rol" (known: name, role, sha256)`},
		{"unknown key in failover", "id: db-1\nfailover:\n  cluster: main\n  postgres:\n    data_dir: /d\n    prot: 5433\n", true,
			`agent.yaml line 6: failover.postgres: unknown field "prot" (known: bin_dir, data_dir, host, max_slot_wal_keep_size, os_user, port, socket_dir, superuser)`},
		{"number for a list", "nats_url: 5\n", true,
			`agent.yaml line 1: nats_url: want a list of strings (or one comma-separated string), got a number (5)`},
		{"mapping for a list", "nats_url:\n  a: b\n", true,
			`agent.yaml line 1: nats_url: want a list of strings (or one comma-separated string), got a mapping`},
		{"text for a number", "replicas: many\n", false,
			`server.yaml line 1: replicas: want a whole number, got a string ("many")`},
		{"text for a switch", "sync_always: maybe\n", false,
			`server.yaml line 1: sync_always: want true or false, got a string ("maybe")`},
		{"bad duration", "store_timeout: soon\n", false,
			`server.yaml line 1: store_timeout: want a duration such as 10s, got "soon"`},
		{"duration without unit", "store_timeout: 5\n", false,
			`server.yaml line 1: store_timeout: want a duration such as 10s, got a number (5)`},
		{"list for a mapping", "labels: [a, b]\n", true,
			`agent.yaml line 1: labels: want a mapping of strings, got a list`},
		{"syntax", "id: a\nlabels: {a: [\n", true,
			`agent.yaml line 2: not valid YAML: did not find expected node content`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.agent {
				c := config.DefaultAgent()
				err = config.Parse("agent.yaml", []byte(tc.yaml), &c)
			} else {
				c := config.DefaultServer()
				err = config.Parse("server.yaml", []byte(tc.yaml), &c)
			}
			if err == nil || err.Error() != tc.want {
				t.Fatalf("got  %v\nwant %s", err, tc.want)
			}
			if strings.Contains(err.Error(), "json") || strings.Contains(err.Error(), "Go ") {
				t.Errorf("%q speaks of the decoder", err)
			}
		})
	}
}

// A list setting may be written as YAML list or, as in its environment
// variable and flag, as one comma-separated string.
func TestParseListAsCommaSeparatedString(t *testing.T) {
	for _, yaml := range []string{
		"nats_url: nats://a:4222,nats://b:4222\n",
		"nats_url: 'nats://a:4222, nats://b:4222'\n",
		"nats_url: [nats://a:4222, nats://b:4222]\n",
		"nats_url:\n  - nats://a:4222\n  - nats://b:4222\n",
	} {
		c := config.DefaultAgent()
		if err := config.Parse("agent.yaml", []byte(yaml), &c); err != nil {
			t.Fatalf("%q: %v", yaml, err)
		}
		if want := []string{"nats://a:4222", "nats://b:4222"}; !reflect.DeepEqual(c.NATSURLs, want) {
			t.Errorf("%q: nats_url = %q, want %q", yaml, c.NATSURLs, want)
		}
	}
	s := config.DefaultServer()
	if err := config.Parse("server.yaml", []byte("routes: hm-1:6222,hm-2:6222\ntls_hosts: hm.example.org\n"), &s); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s.Routes, []string{"hm-1:6222", "hm-2:6222"}) || !reflect.DeepEqual(s.TLSHosts, []string{"hm.example.org"}) {
		t.Errorf("routes %q, tls_hosts %q", s.Routes, s.TLSHosts)
	}
}

// YAML reads off, yes and 8080 as a boolean or a number; a string setting
// gets the text as written.
func TestParseStringSettingKeepsTheText(t *testing.T) {
	c := config.DefaultServer()
	if err := config.Parse("server.yaml", []byte("tls: off  # plain\nnats_auth: off\nname: 1234\nlog_level: \"info\"\n"), &c); err != nil {
		t.Fatal(err)
	}
	if c.TLS != "off" || c.NATSAuth != "off" || c.Name != "1234" || c.LogLevel != "info" {
		t.Errorf("tls %q, nats_auth %q, name %q, log_level %q", c.TLS, c.NATSAuth, c.Name, c.LogLevel)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}
