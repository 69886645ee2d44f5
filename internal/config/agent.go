package config

import (
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
)

// Agent is the configuration of `harmony agent`.
type Agent struct {
	// ID is the device id (RFC 1123 subdomain); defaults to the hostname.
	ID string `json:"id"`
	// NATSURLs of the mesh; the agent moves between them when one dies.
	NATSURLs  []string `json:"nats_url"`
	NATSCreds string   `json:"nats_creds"`
	// NATSNkey is the nkey seed file of the device's own NATS identity,
	// which may touch only its own keys (mesh.DevicePermissions).
	NATSNkey string `json:"nats_nkey"`
	NATSCA   string `json:"nats_ca"`
	NATSCert string `json:"nats_cert"`
	NATSKey  string `json:"nats_key"`
	// Labels the device reports about itself.
	Labels map[string]string `json:"labels"`
	// StateDir keeps the desired-state cache, the ownership ledger and job
	// records across restarts.
	StateDir string `json:"state_dir"`
	// HeartbeatInterval between liveness records.
	HeartbeatInterval Duration `json:"heartbeat_interval"`
	// ResyncInterval between full re-observations of every resource (drift).
	ResyncInterval Duration `json:"resync_interval"`
	// RetryInitial and RetryMax bound the per-resource backoff after failures.
	RetryInitial Duration `json:"retry_initial"`
	RetryMax     Duration `json:"retry_max"`
	// AllowedRoots are the directories File resources may write under.
	AllowedRoots []string `json:"allowed_roots"`
	// RootDir, a test and development aid ("": none), is where every File
	// path (and container volume) is resolved: /etc/harmony/motd is written
	// at <root_dir>/etc/harmony/motd. AllowedRoots are checked against the
	// path as written; nothing may resolve outside <root_dir>.
	RootDir string `json:"root_dir"`
	// ContainerPrefix, a test and development aid ("": none), goes before
	// the podman name of every container the agent runs, so that several
	// agents on one machine do not take each other's containers.
	ContainerPrefix string `json:"container_prefix"`
	// Capabilities the agent allows (v1.Capability* names): each lets desired
	// state run commands as root or widen privileges on the device, so each
	// is off unless listed here (docs/adr/0015-agent-capabilities.md). Use
	// Allowed, which adds the older keys below.
	Capabilities []string `json:"capabilities"`
	// ShellJobs, Exec, AllowPrivileged and AllowHostNetwork are the older
	// keys of four capabilities (shell_jobs, exec, privileged_containers,
	// host_network): true allows the capability as if it were listed.
	ShellJobs        bool `json:"shell_jobs"`
	Exec             bool `json:"exec"`
	AllowPrivileged  bool `json:"allow_privileged"`
	AllowHostNetwork bool `json:"allow_host_network"`
	// Podman is the podman binary.
	Podman string `json:"podman"`
	// SystemdUnitDir and SystemdBus locate systemd ("" bus: the system bus).
	SystemdUnitDir string `json:"systemd_unit_dir"`
	SystemdBus     string `json:"systemd_bus"`
	// StoreTimeout bounds each store call.
	StoreTimeout Duration `json:"store_timeout"`
	LogLevel     string   `json:"log_level"`
	Buckets      Buckets  `json:"buckets"`
	// Reconnection and retries toward the mesh: capped exponential backoff
	// with jitter that never gives up.
	ReconnectInitial    Duration `json:"reconnect_initial"`
	ReconnectMax        Duration `json:"reconnect_max"`
	ReconnectMultiplier float64  `json:"reconnect_multiplier"`
	ReconnectJitter     float64  `json:"reconnect_jitter"`
	// MeshPingInterval: a link that answers no ping for two intervals is
	// declared dead. It is the last resort: heartbeats that go unanswered
	// make the agent check its link at once (about 10 to 20 s after a
	// link dies), and the kernel's keepalives end a connection to a dead
	// network in about 20 s. A device running a failover member pings at
	// least every MemberPingInterval.
	MeshPingInterval Duration `json:"mesh_ping_interval"`
	// BreakerFailures consecutive failed store calls open the circuit
	// breaker; it lets one call through again after BreakerOpen.
	BreakerFailures int      `json:"breaker_failures"`
	BreakerOpen     Duration `json:"breaker_open"`
	// HTTP serves /health and /metrics ("" turns them off).
	HTTP string `json:"http"`
	// Failover turns on the PostgreSQL high-availability role.
	Failover *Failover `json:"failover"`
}

// MemberPingInterval is how often a device running a failover member
// pings at least: a member cut off from its server must move to another
// within seconds (docs/adr/0008-cluster-mode.md), while a device that only
// converges can take the time of two heartbeats; ten thousand devices
// pinging every 2 s cost a server more than all their heartbeats
// (docs/adr/0020-presence.md).
const MemberPingInterval = 2 * time.Second

// PingInterval is the agent's effective ping interval.
func (c Agent) PingInterval() time.Duration {
	if c.Failover != nil {
		return min(c.MeshPingInterval.Std(), MemberPingInterval)
	}
	return c.MeshPingInterval.Std()
}

// DefaultAgent returns the agent's defaults.
func DefaultAgent() Agent {
	return Agent{
		NATSURLs:            []string{"nats://127.0.0.1:4222"},
		Labels:              map[string]string{},
		StateDir:            "/var/lib/harmony-agent",
		HeartbeatInterval:   Duration(10 * time.Second),
		ResyncInterval:      Duration(30 * time.Second),
		RetryInitial:        Duration(time.Second),
		RetryMax:            Duration(5 * time.Minute),
		AllowedRoots:        []string{"/etc/harmony", "/srv/harmony"},
		Podman:              "podman",
		SystemdUnitDir:      "/etc/systemd/system",
		StoreTimeout:        Duration(5 * time.Second),
		LogLevel:            "info",
		Buckets:             DefaultServer().Buckets,
		ReconnectInitial:    Duration(100 * time.Millisecond),
		ReconnectMax:        Duration(1500 * time.Millisecond),
		ReconnectMultiplier: 2,
		ReconnectJitter:     0.2,
		MeshPingInterval:    Duration(2 * time.Minute),
		BreakerFailures:     5,
		BreakerOpen:         Duration(time.Second),
		HTTP:                "127.0.0.1:9464",
	}
}

// Settings lists the agent's settings for the environment and flags.
func (c *Agent) Settings() []Setting {
	return []Setting{
		stringSetting("id", "id", "device id (RFC 1123 name); default: the hostname", &c.ID),
		listSetting("nats_url", "nats-url", "NATS URLs, comma-separated", &c.NATSURLs),
		stringSetting("nats_creds", "nats-creds", "NATS credentials file", &c.NATSCreds),
		stringSetting("nats_nkey", "nats-nkey", "nkey seed file of this device's own NATS identity", &c.NATSNkey),
		stringSetting("nats_ca", "nats-ca", "CA bundle that signs the NATS servers' certificates", &c.NATSCA),
		stringSetting("nats_cert", "nats-cert", "client certificate", &c.NATSCert),
		stringSetting("nats_key", "nats-key", "client key", &c.NATSKey),
		mapSetting("labels", "label", "device labels k=v, comma-separated", &c.Labels),
		stringSetting("state_dir", "state-dir", "directory of the agent's local state", &c.StateDir),
		durationSetting("heartbeat_interval", "heartbeat-interval", "time between heartbeats", &c.HeartbeatInterval),
		durationSetting("resync_interval", "resync-interval", "time between full re-observations (drift correction)", &c.ResyncInterval),
		durationSetting("retry_initial", "retry-initial", "first retry delay of a failing resource", &c.RetryInitial),
		durationSetting("retry_max", "retry-max", "longest retry delay of a failing resource", &c.RetryMax),
		listSetting("allowed_roots", "allowed-roots", "directories File resources may write under, comma-separated", &c.AllowedRoots),
		stringSetting("root_dir", "root-dir", "test/dev aid: resolve every File path under this directory (empty: none)", &c.RootDir),
		stringSetting("container_prefix", "container-prefix", "test/dev aid: put this before every container's podman name (several agents on one machine)", &c.ContainerPrefix),
		listSetting("capabilities", "capabilities", "capabilities to allow, comma-separated: "+strings.Join(CapabilityNames(), ", ")+" (all off by default)", &c.Capabilities),
		olderCapabilitySetting(c, v1.CapabilityShellJob, &c.ShellJobs),
		olderCapabilitySetting(c, v1.CapabilityExec, &c.Exec),
		olderCapabilitySetting(c, v1.CapabilityPrivilegedContainers, &c.AllowPrivileged),
		olderCapabilitySetting(c, v1.CapabilityHostNetwork, &c.AllowHostNetwork),
		stringSetting("podman", "podman", "podman binary", &c.Podman),
		stringSetting("systemd_unit_dir", "systemd-unit-dir", "directory of unit files", &c.SystemdUnitDir),
		stringSetting("systemd_bus", "systemd-bus", "D-Bus address of systemd (default: the system bus)", &c.SystemdBus),
		durationSetting("store_timeout", "store-timeout", "deadline of each store call", &c.StoreTimeout),
		stringSetting("log_level", "log-level", "debug, info, warn or error", &c.LogLevel),
		durationSetting("reconnect_initial", "reconnect-initial", "first pause before reconnecting or retrying", &c.ReconnectInitial),
		durationSetting("reconnect_max", "reconnect-max", "longest pause between reconnect or retry attempts", &c.ReconnectMax),
		floatSetting("reconnect_multiplier", "reconnect-multiplier", "growth of the pause per attempt", &c.ReconnectMultiplier),
		floatSetting("reconnect_jitter", "reconnect-jitter", "randomization of each pause, a fraction (0.2: +/-20%)", &c.ReconnectJitter),
		durationSetting("mesh_ping_interval", "mesh-ping-interval", "ping interval; two unanswered pings drop the link", &c.MeshPingInterval),
		intSetting("breaker_failures", "breaker-failures", "consecutive failed store calls that open the circuit breaker", &c.BreakerFailures),
		durationSetting("breaker_open", "breaker-open", "how long the open breaker refuses calls before one probe", &c.BreakerOpen),
		stringSetting("http", "http", "address of /health and /metrics (empty: off)", &c.HTTP),
	}
}

// Validate checks the merged configuration; errors name the setting.
func (c *Agent) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &Error{Setting: key, Reason: fmt.Sprintf(format, args...)})
	}
	if c.ContainerPrefix != "" && !validContainerPrefix(c.ContainerPrefix) {
		bad("container_prefix", "%q: only letters, digits, '_', '.' and '-', starting with a letter or digit", c.ContainerPrefix)
	}
	if c.ID == "" {
		bad("id", "must be set (the hostname is used when it is a valid name)")
	} else if err := ValidateDNSSubdomain(c.ID); err != nil {
		bad("id", "%q: %v", c.ID, err)
	}
	if len(c.NATSURLs) == 0 {
		bad("nats_url", "at least one URL is needed")
	}
	if c.NATSNkey != "" && c.NATSCreds != "" {
		bad("nats_nkey", "nats_nkey and nats_creds are two identities: give one")
	}
	if strings.TrimSpace(c.StateDir) == "" {
		bad("state_dir", "must not be empty")
	}
	if c.HeartbeatInterval.Std() < 100*time.Millisecond || c.HeartbeatInterval.Std() > 10*time.Minute {
		bad("heartbeat_interval", "%s: must be between 100ms and 10m", c.HeartbeatInterval.Std())
	}
	if c.ResyncInterval.Std() < 100*time.Millisecond {
		bad("resync_interval", "%s: must be at least 100ms", c.ResyncInterval.Std())
	}
	if c.RetryInitial.Std() <= 0 || c.RetryMax.Std() < c.RetryInitial.Std() {
		bad("retry_max", "%s must be at least retry_initial (%s), which must be positive", c.RetryMax.Std(), c.RetryInitial.Std())
	}
	for _, r := range c.AllowedRoots {
		if !filepath.IsAbs(r) || filepath.Clean(r) != r || r == "/" {
			bad("allowed_roots", "%q: must be a clean absolute path other than /", r)
		}
	}
	if c.RootDir != "" && (!filepath.IsAbs(c.RootDir) || filepath.Clean(c.RootDir) != c.RootDir) {
		bad("root_dir", "%q: must be a clean absolute path", c.RootDir)
	}
	if !filepath.IsAbs(c.SystemdUnitDir) {
		bad("systemd_unit_dir", "%q: must be an absolute path", c.SystemdUnitDir)
	}
	for _, name := range c.Capabilities {
		if _, ok := capabilityByName(name); !ok {
			bad("capabilities", "%q: unknown capability (known: %s)", name, strings.Join(CapabilityNames(), ", "))
		}
	}
	// A File under the unit directory is a unit file: allowed roots that
	// overlap it would install units without systemd_unit_files.
	if !c.Allowed().Has(v1.CapabilitySystemdUnitFiles) {
		unitDir := filepath.Clean(c.SystemdUnitDir)
		for _, r := range c.AllowedRoots {
			if within(unitDir, r) || within(r, unitDir) {
				bad("allowed_roots", "%q overlaps systemd_unit_dir %q: File resources there would install systemd units, which needs capability %s",
					r, c.SystemdUnitDir, v1.CapabilitySystemdUnitFiles)
			}
		}
	}
	keys := make([]string, 0, len(c.Labels))
	for k := range c.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k == "" || len(k) > 63 || strings.ContainsAny(k, " =,") {
			bad("labels", "key %q is not a valid label key", k)
		}
	}
	if c.StoreTimeout.Std() < 100*time.Millisecond || c.StoreTimeout.Std() > time.Minute {
		bad("store_timeout", "%s: must be between 100ms and 1m", c.StoreTimeout.Std())
	}
	if c.ReconnectInitial.Std() < 10*time.Millisecond || c.ReconnectInitial.Std() > time.Minute {
		bad("reconnect_initial", "%s: must be between 10ms and 1m", c.ReconnectInitial.Std())
	}
	if c.ReconnectMax.Std() < c.ReconnectInitial.Std() || c.ReconnectMax.Std() > 10*time.Minute {
		bad("reconnect_max", "%s: must be at least reconnect_initial (%s) and at most 10m", c.ReconnectMax.Std(), c.ReconnectInitial.Std())
	}
	if c.ReconnectMultiplier < 1 || c.ReconnectMultiplier > 10 {
		bad("reconnect_multiplier", "%g: must be between 1 and 10", c.ReconnectMultiplier)
	}
	if c.ReconnectJitter < 0 || c.ReconnectJitter > 1 {
		bad("reconnect_jitter", "%g: must be between 0 and 1", c.ReconnectJitter)
	}
	if c.MeshPingInterval.Std() < 100*time.Millisecond || c.MeshPingInterval.Std() > 5*time.Minute {
		bad("mesh_ping_interval", "%s: must be between 100ms and 5m", c.MeshPingInterval.Std())
	}
	if c.BreakerFailures < 1 {
		bad("breaker_failures", "%d: must be at least 1", c.BreakerFailures)
	}
	if c.BreakerOpen.Std() < 10*time.Millisecond || c.BreakerOpen.Std() > 10*time.Minute {
		bad("breaker_open", "%s: must be between 10ms and 10m", c.BreakerOpen.Std())
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level", "%q: must be debug, info, warn or error", c.LogLevel)
	}
	if c.Failover != nil {
		if c.Failover.Node == "" {
			c.Failover.Node = c.ID
		}
		if c.Failover.Postgres.Host == "" {
			c.Failover.Postgres.Host = c.Failover.Postgres.SocketDir
		}
		c.Failover.validate(bad)
	}
	return joinErrors(errs)
}

// ValidateDNSSubdomain checks an RFC 1123 subdomain: lowercase letters,
// digits, '-' and '.', labels of 1 to 63 characters that start and end with
// a letter or digit, 253 characters in all.
func ValidateDNSSubdomain(s string) error {
	if len(s) == 0 || len(s) > 253 {
		return fmt.Errorf("must be 1 to 253 characters")
	}
	for _, label := range strings.Split(s, ".") {
		if len(label) == 0 || len(label) > 63 {
			return fmt.Errorf("each dot-separated part must be 1 to 63 characters")
		}
		for i, r := range label {
			alnum := r >= 'a' && r <= 'z' || r >= '0' && r <= '9'
			if !alnum && (r != '-' || i == 0 || i == len(label)-1) {
				return fmt.Errorf("only lowercase letters, digits and '-' (not at either end of a part)")
			}
		}
	}
	return nil
}

// within reports whether path is dir or lies under it (both clean).
func within(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, strings.TrimSuffix(dir, "/")+"/")
}

// Capability describes one capability an agent may allow.
type Capability struct {
	// Name is the v1.Capability* name, used in the capabilities setting,
	// announced in device-info and named in refusals.
	Name string
	// Allows says what it lets desired state or commands do.
	Allows string
	// OlderKey is the boolean setting that allowed it before the
	// capabilities list ("" when there is none); it still works.
	OlderKey, OlderFlag string
}

// Capabilities returns every capability in the order docs and
// announcements list them. All are off by default: each amounts to running
// commands as root or widening privileges on the device.
func Capabilities() []Capability {
	return []Capability{
		{Name: v1.CapabilityShellJob, Allows: "run ShellJob resources", OlderKey: "shell_jobs", OlderFlag: "shell-jobs"},
		{Name: v1.CapabilityExec, Allows: "answer exec commands", OlderKey: "exec", OlderFlag: "exec"},
		{Name: v1.CapabilitySystemdUnitFiles, Allows: "install SystemdUnit resources that carry a unit file (content)"},
		{Name: v1.CapabilitySpecialFileModes, Allows: "write File resources whose mode has setuid, setgid or sticky bits"},
		{Name: v1.CapabilityPrivilegedContainers, Allows: "run privileged containers", OlderKey: "allow_privileged", OlderFlag: "allow-privileged"},
		{Name: v1.CapabilityHostNetwork, Allows: "run containers on the host network", OlderKey: "allow_host_network", OlderFlag: "allow-host-network"},
	}
}

// CapabilityNames returns the names of every capability, in order.
func CapabilityNames() []string {
	var out []string
	for _, c := range Capabilities() {
		out = append(out, c.Name)
	}
	return out
}

func capabilityByName(name string) (Capability, bool) {
	for _, c := range Capabilities() {
		if c.Name == name {
			return c, true
		}
	}
	return Capability{}, false
}

// EnableHint says how an agent's config allows a capability, for refusal
// messages: "capabilities: [shell_jobs], or the older shell_jobs: true".
func EnableHint(name string) string {
	hint := "capabilities: [" + name + "]"
	if c, ok := capabilityByName(name); ok && c.OlderKey != "" {
		hint += ", or the older " + c.OlderKey + ": true"
	}
	return hint
}

// AllowedCapabilities is the set of capabilities an agent allows.
type AllowedCapabilities struct{ names []string }

// Has reports whether the capability is allowed.
func (a AllowedCapabilities) Has(name string) bool { return slices.Contains(a.names, name) }

// Names returns the allowed capabilities in the order of Capabilities(),
// what the agent announces in device-info.
func (a AllowedCapabilities) Names() []string { return slices.Clone(a.names) }

// Allowed returns the capabilities this configuration allows: those listed
// in capabilities and those an older key turns on. Unknown names are
// ignored here (Validate refuses them).
func (c *Agent) Allowed() AllowedCapabilities {
	older := map[string]bool{
		v1.CapabilityShellJob:             c.ShellJobs,
		v1.CapabilityExec:                 c.Exec,
		v1.CapabilityPrivilegedContainers: c.AllowPrivileged,
		v1.CapabilityHostNetwork:          c.AllowHostNetwork,
	}
	var a AllowedCapabilities
	for _, def := range Capabilities() {
		if older[def.Name] || slices.Contains(c.Capabilities, def.Name) {
			a.names = append(a.names, def.Name)
		}
	}
	return a
}

// olderCapabilitySetting is the boolean setting of a capability's older key
// (--shell-jobs, HARMONY_SHELL_JOBS): true adds the capability, false also
// takes it out of the capabilities list, so a flag or variable can turn
// off what the file turned on either way.
func olderCapabilitySetting(c *Agent, name string, p *bool) Setting {
	def, _ := capabilityByName(name)
	s := boolSetting(def.OlderKey, def.OlderFlag, def.Allows+" (older key of capability "+name+")", p)
	set := s.Set
	s.Set = func(v string) error {
		if err := set(v); err != nil {
			return err
		}
		if !*p {
			var kept []string
			for _, n := range c.Capabilities {
				if n != name {
					kept = append(kept, n)
				}
			}
			c.Capabilities = kept
		}
		return nil
	}
	return s
}

// validContainerPrefix: what podman takes at the start of a name.
func validContainerPrefix(s string) bool {
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case i > 0 && (r == '_' || r == '.' || r == '-'):
		default:
			return false
		}
	}
	return true
}
