package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/harmony-fleet/harmony/internal/failover"
)

// Failover is the agent's PostgreSQL high-availability role (off unless the
// section is present).
type Failover struct {
	// Cluster names the PostgreSQL cluster; its state lives in the bucket
	// failover-<cluster>, so clusters sharing one NATS never collide.
	Cluster string `json:"cluster"`
	// Node is this member's name (default: the agent id); it is also the
	// application_name of its replication connection.
	Node string `json:"node"`
	// Strategy: AbsoluteConsistency (default) or SplitBrainAllowed.
	Strategy string `json:"strategy"`
	// Profile picks the base timings: "default" or "fast"; the timing
	// settings below override single values.
	Profile           string   `json:"profile"`
	HeartbeatInterval Duration `json:"heartbeat_interval"`
	HeartbeatTimeout  Duration `json:"heartbeat_timeout"`
	FailureThreshold  int      `json:"failure_threshold"`
	SuccessThreshold  int      `json:"success_threshold"`
	FailoverTimeout   Duration `json:"failover_timeout"`
	SafetyMargin      Duration `json:"safety_margin"`
	// MaxLagOnFailover (bytes): in SplitBrainAllowed a replica further
	// behind than this does not promote itself. 0: no bound.
	MaxLagOnFailover int64 `json:"max_lag_on_failover"`
	// HTTP is where /primary, /replica, /health and /metrics are served
	// ("" turns them off).
	HTTP string `json:"http"`
	// Peer is where this member answers the other members' failsafe
	// requests: mutual TLS, each side pinned to the other's identity key
	// ("" turns the failsafe off: a primary cut off from the store fences).
	Peer string `json:"peer"`
	// PeerAdvertise is the host (or host:port) the other members reach
	// Peer at (default: postgres.host when it is a host name, else
	// 127.0.0.1; the port: Peer's).
	PeerAdvertise string `json:"peer_advertise"`
	// Guard runs a small process beside PostgreSQL that stops a primary
	// whose agent stopped renewing its licence to serve (the agent died,
	// hung or froze). On by default.
	Guard *bool `json:"guard"`
	// Watchdog is a Linux watchdog device the guard keeps fed while the
	// primary may serve (e.g. /dev/watchdog; "" for none, the default):
	// if the guard itself dies or freezes, the machine resets.
	Watchdog string `json:"watchdog"`
	// Replicas of the cluster's bucket (as many as NATS servers, up to 5).
	Replicas int              `json:"replicas"`
	Postgres FailoverPostgres `json:"postgres"`
}

// FailoverPostgres locates the local PostgreSQL.
type FailoverPostgres struct {
	BinDir  string `json:"bin_dir"`
	DataDir string `json:"data_dir"`
	Port    int    `json:"port"`
	// SocketDir is the local Unix socket directory.
	SocketDir string `json:"socket_dir"`
	// Host is how the other members reach this PostgreSQL for replication
	// and pg_rewind (default: socket_dir, for members on one machine).
	Host string `json:"host"`
	// OSUser runs PostgreSQL's programs when the agent runs as root.
	OSUser    string `json:"os_user"`
	Superuser string `json:"superuser"`
	// MaxSlotWALKeepSize (bytes) bounds the WAL the agent's replication
	// slots may hold back (PostgreSQL's max_slot_wal_keep_size, set when
	// it is unset); 0: 1 GiB.
	MaxSlotWALKeepSize int64 `json:"max_slot_wal_keep_size"`
}

// DefaultFailover returns the section's defaults (cluster and data dir have
// none).
func DefaultFailover() Failover {
	return Failover{Strategy: string(failover.AbsoluteConsistency), Profile: "default", HTTP: "127.0.0.1:8008", Peer: ":8009", Replicas: 1,
		MaxLagOnFailover: 1 << 20,
		Postgres: FailoverPostgres{BinDir: "/usr/lib/postgresql/15/bin", Port: 5432, SocketDir: "/var/run/postgresql",
			OSUser: "postgres", Superuser: "postgres"}}
}

// UnmarshalJSON fills the section over its defaults, refusing unknown keys.
func (f *Failover) UnmarshalJSON(b []byte) error {
	type plain Failover
	v := plain(DefaultFailover())
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return fmt.Errorf("failover: %w", err)
	}
	*f = Failover(v)
	return nil
}

// Timings are the profile's timings with the explicit settings applied.
func (f *Failover) Timings() failover.Timings {
	t := failover.DefaultTimings()
	if f.Profile == "fast" {
		t = failover.FastTimings()
	}
	set := func(dst *time.Duration, v Duration) {
		if v != 0 {
			*dst = v.Std()
		}
	}
	set(&t.HeartbeatInterval, f.HeartbeatInterval)
	set(&t.HeartbeatTimeout, f.HeartbeatTimeout)
	set(&t.FailoverTimeout, f.FailoverTimeout)
	set(&t.SafetyMargin, f.SafetyMargin)
	if f.FailureThreshold != 0 {
		t.FailureThreshold = f.FailureThreshold
	}
	if f.SuccessThreshold != 0 {
		t.SuccessThreshold = f.SuccessThreshold
	}
	return t
}

// validate checks the section; errors name the setting (failover.<key>).
func (f *Failover) validate(bad func(key, format string, args ...any)) {
	if f.Cluster == "" {
		bad("failover.cluster", "must be set")
	} else if err := ValidateDNSSubdomain(f.Cluster); err != nil || len(f.Cluster) > 48 {
		bad("failover.cluster", "%q: must be a lowercase name of up to 48 characters (letters, digits, '-', '.')", f.Cluster)
	}
	if err := ValidateDNSSubdomain(f.Node); err != nil {
		bad("failover.node", "%q: %v", f.Node, err)
	}
	switch failover.Strategy(f.Strategy) {
	case failover.AbsoluteConsistency, failover.SplitBrainAllowed:
	default:
		bad("failover.strategy", "%q: must be AbsoluteConsistency or SplitBrainAllowed", f.Strategy)
	}
	switch f.Profile {
	case "default", "fast":
		if err := f.Timings().Validate(); err != nil {
			bad("failover."+errKey(err), "%v", err)
		}
	default:
		bad("failover.profile", "%q: must be default or fast", f.Profile)
	}
	if f.MaxLagOnFailover < 0 {
		bad("failover.max_lag_on_failover", "%d: must not be negative", f.MaxLagOnFailover)
	}
	if f.Peer != "" {
		if _, port, err := net.SplitHostPort(f.Peer); err != nil || port == "" {
			bad("failover.peer", "%q: must be host:port (e.g. :8009), or empty to turn the failsafe off", f.Peer)
		}
	}
	if f.Watchdog != "" && !filepath.IsAbs(f.Watchdog) {
		bad("failover.watchdog", "%q: must be an absolute path (e.g. /dev/watchdog)", f.Watchdog)
	}
	if f.Watchdog != "" && !f.GuardOn() {
		bad("failover.watchdog", "needs the guard (failover.guard: true)")
	}
	if f.Replicas < 1 || f.Replicas > 5 {
		bad("failover.replicas", "%d: must be 1 to 5", f.Replicas)
	}
	p := f.Postgres
	for key, dir := range map[string]string{"bin_dir": p.BinDir, "data_dir": p.DataDir, "socket_dir": p.SocketDir} {
		if !filepath.IsAbs(dir) {
			bad("failover.postgres."+key, "%q: must be an absolute path", dir)
		}
	}
	if p.Port < 1 || p.Port > 65535 {
		bad("failover.postgres.port", "%d: must be 1 to 65535", p.Port)
	}
	if p.MaxSlotWALKeepSize < 0 {
		bad("failover.postgres.max_slot_wal_keep_size", "%d: must not be negative (0: 1 GiB)", p.MaxSlotWALKeepSize)
	}
	if p.Superuser == "" {
		bad("failover.postgres.superuser", "must be set")
	}
}

// GuardOn reports whether the guard runs (the default).
func (f *Failover) GuardOn() bool { return f.Guard == nil || *f.Guard }

// PeerAddress is the host:port the other members reach this member's
// failsafe listener at, given the port it listens on.
func (f *Failover) PeerAddress(port string) string {
	host := f.PeerAdvertise
	if h, p, err := net.SplitHostPort(host); err == nil {
		return net.JoinHostPort(h, p)
	}
	if host == "" && !filepath.IsAbs(f.Postgres.Host) {
		host = f.Postgres.Host
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// errKey is the setting a timings error is about (its text starts with it).
func errKey(err error) string {
	var key string
	if _, e := fmt.Sscanf(err.Error(), "%s", &key); e != nil || len(key) < 2 {
		return "timings"
	}
	return key[:len(key)-1] // drop the colon
}
