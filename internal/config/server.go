package config

import (
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// Buckets are the names of the fleet buckets (design brief, section 2).
type Buckets struct {
	Deployments     string `json:"deployments"`
	DesiredState    string `json:"desired_state"`
	DeviceInfo      string `json:"device_info"`
	DeviceState     string `json:"device_state"`
	DeviceHeartbeat string `json:"device_heartbeat"`
	DeviceLabels    string `json:"device_labels"`
	// DevicePresence holds the servers' records of the heartbeats they
	// answered (docs/adr/0020-presence.md).
	DevicePresence string `json:"device_presence"`
	// Leases holds the servers' leases on once-only work.
	Leases string `json:"leases"`
	// Identities holds the devices' NATS identities, enrollment requests
	// and enrollment tokens (hashed); only the control plane reads it.
	Identities string `json:"identities"`
	// Secrets holds the secrets resources reference by name
	// (docs/adr/0025-secrets.md); devices read only those their desired
	// state names.
	Secrets string `json:"secrets"`
	// Rollouts holds the progress of deployments' batched rollouts
	// (docs/adr/0028-progressive-rollouts.md).
	Rollouts string `json:"rollouts"`
}

// Server is the configuration of `harmony server`.
type Server struct {
	// DataDir holds the embedded NATS server's JetStream storage and the
	// dashboard's session key (and generated admin token).
	DataDir string `json:"data_dir"`
	// NATSListen is the embedded server's client address.
	NATSListen string `json:"nats"`
	// Name is this server's name, unique within a cluster.
	Name string `json:"name"`
	// ClusterName, ClusterListen and Routes make the embedded NATS servers
	// of several harmony servers one JetStream cluster: each lists the
	// route addresses of all members.
	ClusterName   string   `json:"cluster_name"`
	ClusterListen string   `json:"cluster_listen"`
	Routes        []string `json:"routes"`
	// ClusterAdvertise is the route address the other members are told to
	// use for this server when it differs from ClusterListen (NAT, a proxy).
	ClusterAdvertise string `json:"cluster_advertise"`
	// ClientAdvertise is the client address NATS tells clients about;
	// NoAdvertise stops telling clients about the other members at all,
	// so they use only the URLs they were configured with.
	ClientAdvertise string `json:"client_advertise"`
	NoAdvertise     bool   `json:"no_advertise"`
	// NATSURLs, when set, use an external NATS instead of embedding one.
	NATSURLs  []string `json:"nats_url"`
	NATSCreds string   `json:"nats_creds"`
	NATSCA    string   `json:"nats_ca"`
	NATSCert  string   `json:"nats_cert"`
	NATSKey   string   `json:"nats_key"`
	// HTTP is the API, dashboard and metrics address.
	HTTP string `json:"http"`
	// Replicas of every bucket the server creates (1, 3 or 5).
	Replicas int `json:"replicas"`
	// SyncAlways makes the embedded server fsync each write before it
	// acknowledges it (docs/adr/0002-durability.md).
	SyncAlways bool `json:"sync_always"`
	// StoreTimeout bounds each store call.
	StoreTimeout Duration `json:"store_timeout"`
	// HeartbeatStaleness is how long a device may stay silent before it
	// counts as offline (three default heartbeat intervals).
	HeartbeatStaleness Duration `json:"heartbeat_staleness"`
	// LogLevel is debug, info, warn or error.
	LogLevel string  `json:"log_level"`
	Buckets  Buckets `json:"buckets"`
	// Tokens may sign in to the dashboard and call the API. With none, the
	// server creates an admin token in <data_dir>/admin-token on first
	// start.
	Tokens []Token `json:"tokens"`
	// TLS is "auto" (the default: a CA and a server certificate made in
	// <data_dir>/tls on first start, or TLSCert/TLSKey when given) or "off".
	// It covers the HTTP address and the embedded NATS's client port.
	TLS      string   `json:"tls"`
	TLSCert  string   `json:"tls_cert"`
	TLSKey   string   `json:"tls_key"`
	TLSHosts []string `json:"tls_hosts"` // more names and addresses for the generated certificate
	// NATSKeyExchange is the TLS 1.3 key exchange the embedded NATS
	// offers devices: "x25519" (classic, the default: a fleet
	// reconnecting at once costs the server half the handshake CPU) or
	// "hybrid" (X25519MLKEM768 first, post-quantum; docs/adr/0019).
	NATSKeyExchange string `json:"nats_key_exchange"`
	// TokensFile is a YAML list of more tokens (same fields), so that
	// several servers can share one file and tokens can be set from the
	// environment or a flag.
	TokensFile string `json:"tokens_file"`
	// NATSAuth is "identities" (the default: the embedded NATS accepts only
	// enrolled devices, each limited to its own keys, the server itself and
	// admin identities) or "off" (any client that reaches the port, as
	// before enrollment existed). It applies to the embedded NATS only.
	NATSAuth string `json:"nats_auth"`
}

// Token is a dashboard credential: the server keeps only the secret's
// SHA-256 (`printf %s "$SECRET" | sha256sum`).
type Token struct {
	Name   string `json:"name"`
	Role   string `json:"role"`   // admin or viewer
	SHA256 string `json:"sha256"` // 64 hex digits
}

// DefaultServer returns the defaults, the first of the three steps.
func DefaultServer() Server {
	return Server{
		DataDir:            "./harmony-data",
		NATSListen:         "127.0.0.1:4222",
		NATSKeyExchange:    "x25519",
		Name:               "harmony",
		HTTP:               "127.0.0.1:8080",
		Replicas:           1,
		SyncAlways:         true,
		StoreTimeout:       Duration(5 * time.Second),
		HeartbeatStaleness: Duration(30 * time.Second),
		LogLevel:           "info",
		TLS:                "auto",
		NATSAuth:           "identities",
		Buckets: Buckets{
			Deployments:     "deployments",
			DesiredState:    "desired-state",
			DeviceInfo:      "device-info",
			DeviceState:     "device-state",
			DeviceHeartbeat: "device-heartbeat",
			DeviceLabels:    "device-labels",
			DevicePresence:  "device-presence",
			Leases:          "leases",
			Identities:      "identities",
			Secrets:         "secrets",
			Rollouts:        "rollouts",
		},
	}
}

// Settings lists the server's settings for the environment and flags.
func (c *Server) Settings() []Setting {
	return []Setting{
		stringSetting("data_dir", "data-dir", "directory of the embedded NATS server's storage and the dashboard's keys", &c.DataDir),
		stringSetting("nats", "nats", "client address of the embedded NATS server", &c.NATSListen),
		stringSetting("name", "name", "this server's name, unique within a cluster", &c.Name),
		stringSetting("cluster_name", "cluster-name", "join the embedded NATS servers of several harmony servers into this JetStream cluster", &c.ClusterName),
		stringSetting("cluster_listen", "cluster-listen", "route address of this server's embedded NATS (host:port)", &c.ClusterListen),
		listSetting("routes", "routes", "route addresses of all cluster members, comma-separated", &c.Routes),
		stringSetting("cluster_advertise", "cluster-advertise", "route address the other members should use for this server (host:port), when not cluster_listen", &c.ClusterAdvertise),
		stringSetting("client_advertise", "client-advertise", "client address NATS tells clients about (host:port), when not nats", &c.ClientAdvertise),
		boolSetting("no_advertise", "no-advertise", "do not tell clients about the other cluster members; they use only their configured URLs", &c.NoAdvertise),
		listSetting("nats_url", "nats-url", "external NATS URLs, comma-separated (no embedded server then)", &c.NATSURLs),
		stringSetting("nats_creds", "nats-creds", "NATS credentials file for an external NATS", &c.NATSCreds),
		stringSetting("nats_ca", "nats-ca", "CA bundle that signs the external NATS servers' certificates", &c.NATSCA),
		stringSetting("nats_cert", "nats-cert", "client certificate for an external NATS", &c.NATSCert),
		stringSetting("nats_key", "nats-key", "client key for an external NATS", &c.NATSKey),
		stringSetting("http", "http", "address of the HTTP API, dashboard and metrics", &c.HTTP),
		intSetting("replicas", "replicas", "replicas of the buckets the server creates (1, 3 or 5)", &c.Replicas),
		boolSetting("sync_always", "sync-always", "fsync every write before acknowledging it (embedded server)", &c.SyncAlways),
		durationSetting("store_timeout", "store-timeout", "deadline of each store call", &c.StoreTimeout),
		durationSetting("heartbeat_staleness", "heartbeat-staleness", "silence after which a device counts as offline", &c.HeartbeatStaleness),
		stringSetting("log_level", "log-level", "debug, info, warn or error", &c.LogLevel),
		stringSetting("nats_auth", "nats-auth", "identities (embedded NATS accepts only enrolled devices, each limited to its own keys) or off", &c.NATSAuth),
		stringSetting("tls", "tls", "auto (own CA and certificate in <data_dir>/tls, or tls_cert/tls_key) or off", &c.TLS),
		stringSetting("tls_cert", "tls-cert", "server certificate (PEM) to use instead of a generated one", &c.TLSCert),
		stringSetting("tls_key", "tls-key", "key of tls_cert (PEM)", &c.TLSKey),
		listSetting("tls_hosts", "tls-hosts", "more DNS names and IP addresses for the generated certificate, comma-separated", &c.TLSHosts),
		stringSetting("nats_key_exchange", "nats-key-exchange", "TLS key exchange offered to devices: x25519 or hybrid (post-quantum X25519MLKEM768 first)", &c.NATSKeyExchange),
		stringSetting("tokens_file", "tokens-file", "YAML list of API and dashboard tokens (name, role, sha256)", &c.TokensFile),
	}
}

// LoadTokensFile appends the tokens of tokens_file to tokens; Validate then
// checks them all. Errors name the setting.
func (c *Server) LoadTokensFile() error {
	if c.TokensFile == "" {
		return nil
	}
	data, err := os.ReadFile(c.TokensFile)
	if err != nil {
		return &Error{Setting: "tokens_file", Reason: err.Error()}
	}
	var tokens []Token
	if err := Parse(c.TokensFile, data, &tokens); err != nil {
		return &Error{Setting: "tokens_file", Reason: err.Error()}
	}
	c.Tokens = append(c.Tokens, tokens...)
	c.TokensFile = "" // loaded once
	return nil
}

// Embedded reports whether the server runs its own NATS.
func (c *Server) Embedded() bool { return len(c.NATSURLs) == 0 }

// Validate checks the merged configuration; errors name the setting.
func (c *Server) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &Error{Setting: key, Reason: fmt.Sprintf(format, args...)})
	}
	if c.Embedded() {
		if strings.TrimSpace(c.DataDir) == "" {
			bad("data_dir", "must not be empty")
		}
		if err := checkAddr(c.NATSListen); err != nil {
			bad("nats", "%v", err)
		}
		if err := ValidateDNSSubdomain(c.Name); err != nil {
			bad("name", "%q: %v", c.Name, err)
		}
		if c.ClusterName != "" {
			if err := ValidateDNSSubdomain(c.ClusterName); err != nil {
				bad("cluster_name", "%q: %v", c.ClusterName, err)
			}
			if err := checkAddr(c.ClusterListen); err != nil {
				bad("cluster_listen", "%v", err)
			}
			if len(c.Routes) == 0 {
				bad("routes", "a cluster needs the route addresses of its members")
			}
			if c.ClusterAdvertise != "" {
				if err := checkAddr(c.ClusterAdvertise); err != nil {
					bad("cluster_advertise", "%v", err)
				}
			}
			if c.Name == "harmony" {
				bad("name", "every member of a cluster needs its own name (the default %q is for a single server)", c.Name)
			}
		} else if c.ClusterListen != "" || len(c.Routes) > 0 || c.ClusterAdvertise != "" || c.NoAdvertise {
			bad("cluster_name", "cluster_listen, routes, cluster_advertise and no_advertise need a cluster_name")
		}
		if c.ClientAdvertise != "" {
			if err := checkAddr(c.ClientAdvertise); err != nil {
				bad("client_advertise", "%v", err)
			}
		}
	} else {
		for _, s := range []struct {
			key string
			set bool
		}{{"cluster_name", c.ClusterName != ""}, {"cluster_listen", c.ClusterListen != ""}, {"routes", len(c.Routes) > 0},
			{"cluster_advertise", c.ClusterAdvertise != ""}, {"client_advertise", c.ClientAdvertise != ""}, {"no_advertise", c.NoAdvertise}} {
			if s.set {
				bad(s.key, "applies to the embedded NATS only, and nats_url is set")
			}
		}
		for _, u := range c.NATSURLs {
			if !strings.Contains(u, "://") && strings.Count(u, ":") != 1 {
				bad("nats_url", "%q is not a URL such as nats://host:4222", u)
			}
		}
	}
	if err := checkAddr(c.HTTP); err != nil {
		bad("http", "%v", err)
	}
	if c.Replicas != 1 && c.Replicas != 3 && c.Replicas != 5 {
		bad("replicas", "%d: must be 1, 3 or 5", c.Replicas)
	}
	if c.StoreTimeout.Std() < 100*time.Millisecond || c.StoreTimeout.Std() > time.Minute {
		bad("store_timeout", "%s: must be between 100ms and 1m", c.StoreTimeout.Std())
	}
	if c.HeartbeatStaleness.Std() < 100*time.Millisecond {
		bad("heartbeat_staleness", "%s: must be at least 100ms", c.HeartbeatStaleness.Std())
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level", "%q: must be debug, info, warn or error", c.LogLevel)
	}
	for key, name := range map[string]string{
		"buckets.deployments": c.Buckets.Deployments, "buckets.desired_state": c.Buckets.DesiredState,
		"buckets.device_info": c.Buckets.DeviceInfo, "buckets.device_state": c.Buckets.DeviceState,
		"buckets.device_heartbeat": c.Buckets.DeviceHeartbeat, "buckets.device_labels": c.Buckets.DeviceLabels,
		"buckets.leases": c.Buckets.Leases, "buckets.identities": c.Buckets.Identities,
		"buckets.device_presence": c.Buckets.DevicePresence, "buckets.secrets": c.Buckets.Secrets,
		"buckets.rollouts": c.Buckets.Rollouts,
	} {
		if !validBucketName(name) {
			bad(key, "%q: only letters, digits, '-' and '_'", name)
		}
	}
	switch c.NATSAuth {
	case "identities", "off":
	default:
		bad("nats_auth", "%q: must be identities or off", c.NATSAuth)
	}
	switch c.NATSKeyExchange {
	case "x25519", "hybrid":
	default:
		bad("nats_key_exchange", "%q: must be x25519 or hybrid", c.NATSKeyExchange)
	}
	switch c.TLS {
	case "auto":
		if (c.TLSCert == "") != (c.TLSKey == "") {
			bad("tls_cert", "tls_cert and tls_key go together")
		}
		if c.TLSCert == "" && strings.TrimSpace(c.DataDir) == "" && !c.Embedded() { // embedded: data_dir is reported already
			bad("tls", "auto needs a data_dir to keep its CA in (or tls_cert and tls_key, or tls: off)")
		}
	case "off":
	default:
		bad("tls", "%q: must be auto or off", c.TLS)
	}
	names := map[string]int{}
	for i, t := range c.Tokens {
		key := fmt.Sprintf("tokens[%d]", i)
		if err := ValidateDNSSubdomain(t.Name); err != nil {
			bad(key+".name", "%q: %v", t.Name, err)
		} else if j, dup := names[t.Name]; dup {
			bad(key+".name", "%q is also tokens[%d]", t.Name, j)
		}
		names[t.Name] = i
		if t.Role != "admin" && t.Role != "viewer" {
			bad(key+".role", "%q: must be admin or viewer", t.Role)
		}
		if b, err := hex.DecodeString(t.SHA256); err != nil || len(b) != 32 {
			bad(key+".sha256", "must be the 64 hex digits of the token's SHA-256")
		}
	}
	return joinErrors(errs)
}

func checkAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	_ = host
	var p int
	if _, err := fmt.Sscanf(port, "%d", &p); err != nil || p < 0 || p > 65535 || fmt.Sprint(p) != port {
		return fmt.Errorf("%q: port must be a number from 0 to 65535", addr)
	}
	return nil
}

func validBucketName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}
