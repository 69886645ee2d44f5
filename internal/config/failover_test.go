package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/failover"
)

func loadAgent(t *testing.T, yaml string) (config.Agent, error) {
	t.Helper()
	c := config.DefaultAgent()
	if err := config.LoadFile(writeFile(t, yaml), &c); err != nil {
		return c, err
	}
	return c, c.Validate()
}

func TestFailoverSectionDefaultsAndProfiles(t *testing.T) {
	c, err := loadAgent(t, "id: db-1\nfailover:\n  cluster: main\n  postgres:\n    data_dir: /var/lib/postgresql/15/main\n")
	if err != nil {
		t.Fatal(err)
	}
	f := c.Failover
	if f.Node != "db-1" || f.Strategy != "AbsoluteConsistency" || f.Postgres.Port != 5432 || f.Postgres.Host != "/var/run/postgresql" || f.HTTP != "127.0.0.1:8008" {
		t.Fatalf("defaults not applied: %+v", f)
	}
	if f.Peer != ":8009" || !f.GuardOn() || f.Watchdog != "" || f.PeerAddress("8009") != "127.0.0.1:8009" {
		t.Fatalf("failsafe and guard defaults not applied: peer %q guard %v watchdog %q advertised %q", f.Peer, f.GuardOn(), f.Watchdog, f.PeerAddress("8009"))
	}
	f.Postgres.Host = "db-1.internal"
	if got := f.PeerAddress("8009"); got != "db-1.internal:8009" {
		t.Fatalf("advertised failsafe address %q, want the PostgreSQL host's", got)
	}
	if f.Timings() != failover.DefaultTimings() {
		t.Fatalf("default profile: %+v", f.Timings())
	}
	c, err = loadAgent(t, "id: db-1\nfailover:\n  cluster: main\n  profile: fast\n  success_threshold: 5\n  postgres:\n    data_dir: /d\n")
	if err != nil {
		t.Fatal(err)
	}
	want := failover.FastTimings()
	want.SuccessThreshold = 5
	if got := c.Failover.Timings(); got != want {
		t.Fatalf("fast profile with an override: %+v, want %+v", got, want)
	}
	if err := failover.FastTimings().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestFailoverSectionRefusals(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"failover:\n  cluster: main\n  postgres:\n    data_dir: /d\n  failover_timeout: 1s\n",
			"failover.failover_timeout: failover_timeout: 1s must exceed heartbeat_interval (250ms) + heartbeat_timeout (250ms) x (failure_threshold (3) + 1) + safety_margin (400ms) = 1.65s"},
		{"failover:\n  postgres:\n    data_dir: /d\n", "failover.cluster"},
		{"failover:\n  cluster: Main_DB\n  postgres:\n    data_dir: /d\n", "failover.cluster"},
		{"failover:\n  cluster: main\n  strategy: Eventually\n  postgres:\n    data_dir: /d\n", "failover.strategy"},
		{"failover:\n  cluster: main\n  profile: turbo\n  postgres:\n    data_dir: /d\n", "failover.profile"},
		{"failover:\n  cluster: main\n  postgres:\n    data_dir: relative\n", "failover.postgres.data_dir"},
		{"failover:\n  cluster: main\n  heartbeat_timeout: 0s\n  heartbeat_interval: -1s\n  postgres:\n    data_dir: /d\n", "failover.heartbeat_interval"},
		{"failover:\n  cluster: main\n  max_lag_on_failover: -1\n  postgres:\n    data_dir: /d\n", "failover.max_lag_on_failover"},
		{"failover:\n  cluster: main\n  fencing: hard\n  postgres:\n    data_dir: /d\n", `unknown field "fencing"`},
		{"failover:\n  cluster: main\n  peer: db-1\n  postgres:\n    data_dir: /d\n", "failover.peer"},
		{"failover:\n  cluster: main\n  watchdog: watchdog\n  postgres:\n    data_dir: /d\n", "failover.watchdog"},
		{"failover:\n  cluster: main\n  guard: false\n  watchdog: /dev/watchdog\n  postgres:\n    data_dir: /d\n", "failover.watchdog"},
		{"failover:\n  cluster: main\n  postgres:\n    data_dir: /d\n    max_slot_wal_keep_size: -5\n", "failover.postgres.max_slot_wal_keep_size"},
	} {
		_, err := loadAgent(t, "id: db-1\n"+tc.yaml)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error containing %q", tc.yaml, err, tc.want)
		}
	}
	// Safe timings of one's own are accepted.
	c, err := loadAgent(t, "id: db-1\nfailover:\n  cluster: main\n  heartbeat_interval: 1s\n  heartbeat_timeout: 1s\n  failover_timeout: 10s\n  postgres:\n    data_dir: /d\n")
	if err != nil || c.Failover.Timings().FailoverTimeout != 10*time.Second {
		t.Fatalf("%v %+v", err, c.Failover)
	}
}
