package v1alpha1

import (
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// KindPostgresCluster is a member of a PostgreSQL high-availability
// cluster on each device the deployment selects (docs/postgres.md).
const KindPostgresCluster = "PostgresCluster"

// PostgresClusterSpec declares a cluster; each selected device runs one
// member of it. The first member to win a compare-and-set initialises
// the cluster and becomes its first primary; every other one clones
// itself from the current primary and streams from it.
type PostgresClusterSpec struct {
	// Cluster names the cluster (its failover bucket is
	// failover-<cluster>).
	Cluster string `json:"cluster"`
	// Version is PostgreSQL's major version (default 15); BinDir defaults
	// to Debian's /usr/lib/postgresql/<version>/bin.
	Version int    `json:"version,omitempty"`
	BinDir  string `json:"binDir,omitempty"`
	// DataDir defaults to /var/lib/postgresql/<version>/<cluster>; LogDir,
	// where PostgreSQL's own log goes (outside the data directory, so that
	// a re-clone keeps the member's history), to
	// /var/log/postgresql/<cluster>.
	DataDir   string `json:"dataDir,omitempty"`
	LogDir    string `json:"logDir,omitempty"`
	Port      int    `json:"port,omitempty"`      // default 5432
	SocketDir string `json:"socketDir,omitempty"` // default /var/run/postgresql
	// Host is how the other members reach this member's PostgreSQL
	// (default: the device's host name; a socket directory for members
	// on one machine).
	Host      string `json:"host,omitempty"`
	OSUser    string `json:"osUser,omitempty"`    // default postgres
	Superuser string `json:"superuser,omitempty"` // default postgres
	// SuperuserPassword is the superuser's password, from a secret: the
	// members connect to each other with it (replication, pg_rewind).
	SuperuserPassword *SecretKeyRef `json:"superuserPassword"`
	Strategy          string        `json:"strategy,omitempty"` // default AbsoluteConsistency
	Profile           string        `json:"profile,omitempty"`  // default or fast
	// HTTP serves /primary, /replica, /health (default :8008); Peer is
	// the failsafe listener (default :8009; "off" turns it off).
	HTTP string `json:"http,omitempty"`
	Peer string `json:"peer,omitempty"`
	// Parameters are the cluster's postgresql.conf settings.
	Parameters map[string]string  `json:"parameters,omitempty"`
	Roles      []PostgresRole     `json:"roles,omitempty"`
	Databases  []PostgresDatabase `json:"databases,omitempty"`
	// Members override, per device id, what differs between members
	// (several members on one machine, a data directory on another disk).
	Members map[string]PostgresMemberOverride `json:"members,omitempty"`
}

// PostgresRole is a login role the primary creates (and keeps the password
// of, from its secret).
type PostgresRole struct {
	Name     string        `json:"name"`
	Password *SecretKeyRef `json:"password,omitempty"`
	// Options: SQL role options such as CREATEDB (LOGIN is implied).
	Options []string `json:"options,omitempty"`
}

// PostgresDatabase is a database the primary creates.
type PostgresDatabase struct {
	Name  string `json:"name"`
	Owner string `json:"owner,omitempty"`
}

// PostgresMemberOverride is what one member does differently.
type PostgresMemberOverride struct {
	DataDir   string `json:"dataDir,omitempty"`
	LogDir    string `json:"logDir,omitempty"`
	Port      int    `json:"port,omitempty"`
	SocketDir string `json:"socketDir,omitempty"`
	Host      string `json:"host,omitempty"`
	HTTP      string `json:"http,omitempty"`
	Peer      string `json:"peer,omitempty"`
}

var (
	pgNameRe  = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)
	pgParamRe = regexp.MustCompile(`^[a-z_][a-z0-9_.]{0,126}$`)
	pgOptRe   = regexp.MustCompile(`^(NO)?(SUPERUSER|CREATEDB|CREATEROLE|INHERIT|REPLICATION|BYPASSRLS)$`)
)

// Parameters the agent sets itself: a spec may not.
var pgManagedParams = map[string]string{
	"port": "spec.port", "unix_socket_directories": "spec.socketDir", "data_directory": "spec.dataDir",
	"log_directory": "spec.logDir", "logging_collector": "", "primary_conninfo": "", "primary_slot_name": "",
	"synchronous_standby_names": "", "hba_file": "", "ident_file": "", "config_file": "", "listen_addresses": "",
	"hot_standby": "", "wal_level": "",
}

// DefaultPostgresBinDir is where Debian installs PostgreSQL version's
// programs.
func DefaultPostgresBinDir(version int) string {
	return fmt.Sprintf("/usr/lib/postgresql/%d/bin", version)
}

func (s *PostgresClusterSpec) setDefaults() {
	if s.Version == 0 {
		s.Version = 15
	}
	if s.BinDir == "" {
		s.BinDir = DefaultPostgresBinDir(s.Version)
	}
	if s.DataDir == "" && s.Cluster != "" {
		s.DataDir = fmt.Sprintf("/var/lib/postgresql/%d/%s", s.Version, s.Cluster)
	}
	if s.LogDir == "" && s.Cluster != "" {
		s.LogDir = "/var/log/postgresql/" + s.Cluster
	}
	if s.Port == 0 {
		s.Port = 5432
	}
	if s.SocketDir == "" {
		s.SocketDir = "/var/run/postgresql"
	}
	if s.OSUser == "" {
		s.OSUser = "postgres"
	}
	if s.Superuser == "" {
		s.Superuser = "postgres"
	}
	if s.Strategy == "" {
		s.Strategy = "AbsoluteConsistency"
	}
	if s.Profile == "" {
		s.Profile = "default"
	}
	if s.HTTP == "" {
		s.HTTP = ":8008"
	}
	if s.Peer == "" {
		s.Peer = ":8009"
	}
}

func (s *PostgresClusterSpec) validate(e errs) {
	if s.Cluster == "" {
		e.at("cluster").add("is required")
	} else if err := validateLabel(s.Cluster); err != nil || len(s.Cluster) > 48 {
		e.at("cluster").add("%q: a lowercase name of up to 48 letters, digits and '-'", s.Cluster)
	}
	if s.Version < 10 || s.Version > 99 {
		e.at("version").add("%d: a PostgreSQL major version such as 15", s.Version)
	}
	pgPaths(e, s.BinDir, s.DataDir, s.LogDir, s.SocketDir, "")
	pgPort(e, s.Port)
	for field, v := range map[string]string{"osUser": s.OSUser, "superuser": s.Superuser} {
		if !pgNameRe.MatchString(v) {
			e.at(field).add("%q: a lowercase name (letters, digits, '_')", v)
		}
	}
	if s.SuperuserPassword == nil {
		e.at("superuserPassword").add("is required: {secret: NAME, key: KEY} (the members connect to each other with it)")
	} else {
		s.SuperuserPassword.validate(e.at("superuserPassword"))
	}
	switch s.Strategy {
	case "AbsoluteConsistency", "SplitBrainAllowed":
	default:
		e.at("strategy").add("%q: must be AbsoluteConsistency or SplitBrainAllowed", s.Strategy)
	}
	switch s.Profile {
	case "default", "fast":
	default:
		e.at("profile").add("%q: must be default or fast", s.Profile)
	}
	pgListen(e.at("http"), s.HTTP, false)
	pgListen(e.at("peer"), s.Peer, true)
	catalogue := PGSettings(s.Version)
	for _, k := range sortedKeys(s.Parameters) {
		pe := e.at("parameters").at(k)
		lower := strings.ToLower(k)
		setting, known := catalogue[lower]
		if !pgParamRe.MatchString(lower) {
			pe.add("is not a parameter name")
		} else if catalogue != nil && !known && !strings.Contains(lower, ".") {
			pe.add("is not a PostgreSQL %d parameter%s", s.Version, didYouMean(lower, catalogue))
		} else if owner, managed := pgManagedParams[lower]; managed {
			if owner != "" {
				pe.add("is set by the agent: use %s", owner)
			} else {
				pe.add("is set by the agent")
			}
		}
		if len(s.Parameters[k]) > 1024 {
			pe.add("value of %d bytes is longer than 1024", len(s.Parameters[k]))
		} else if known {
			if why := checkPGValue(setting, s.Parameters[k]); why != "" {
				pe.add("%s", why)
			}
		}
	}
	roles := map[string]bool{s.Superuser: true}
	for i, r := range s.Roles {
		re := e.at("roles").index(i)
		if !pgNameRe.MatchString(r.Name) {
			re.at("name").add("%q: a lowercase name (letters, digits, '_')", r.Name)
		} else if roles[r.Name] {
			re.at("name").add("%q is declared twice (or is the superuser)", r.Name)
		}
		roles[r.Name] = true
		if r.Password != nil {
			r.Password.validate(re.at("password"))
		}
		for j, o := range r.Options {
			if !pgOptRe.MatchString(o) {
				re.at("options").index(j).add("%q: one of [NO]SUPERUSER, CREATEDB, CREATEROLE, INHERIT, REPLICATION, BYPASSRLS", o)
			}
		}
	}
	dbs := map[string]bool{"postgres": true, "template0": true, "template1": true}
	for i, d := range s.Databases {
		de := e.at("databases").index(i)
		if !pgNameRe.MatchString(d.Name) {
			de.at("name").add("%q: a lowercase name (letters, digits, '_')", d.Name)
		} else if dbs[d.Name] {
			de.at("name").add("%q exists already or is declared twice", d.Name)
		}
		dbs[d.Name] = true
		if d.Owner != "" && !roles[d.Owner] {
			de.at("owner").add("%q is not the superuser or a role of spec.roles", d.Owner)
		}
	}
	for _, id := range sortedKeys(s.Members) {
		m := s.Members[id]
		me := e.at("members").at(id)
		if err := ValidateDeviceID(id); err != nil {
			me.add("not a device id: %v", err)
		}
		pgPaths(me, "", m.DataDir, m.LogDir, m.SocketDir, "omit")
		if m.Port != 0 {
			pgPort(me, m.Port)
		}
		if m.HTTP != "" {
			pgListen(me.at("http"), m.HTTP, false)
		}
		if m.Peer != "" {
			pgListen(me.at("peer"), m.Peer, true)
		}
	}
}

func pgPaths(e errs, bin, data, logDir, socket, omit string) {
	for field, v := range map[string]string{"binDir": bin, "dataDir": data, "logDir": logDir, "socketDir": socket} {
		if v == "" && (omit != "" || field == "binDir" && bin == "") {
			continue
		}
		if !filepath.IsAbs(v) || filepath.Clean(v) != v || v == "/" {
			e.at(field).add("%q: must be a clean absolute path", v)
		}
	}
	if data != "" && logDir != "" && (logDir == data || isUnder(logDir, data)) {
		e.at("logDir").add("%q: must be outside the data directory (a re-clone replaces it)", logDir)
	}
}

func isUnder(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != "." && rel != ".." && !filepath.IsAbs(rel) && (len(rel) < 3 || rel[:3] != "../")
}

func pgPort(e errs, p int) {
	if p < 1 || p > 65535 {
		e.at("port").add("%d: must be 1 to 65535", p)
	}
}

func pgListen(e errs, v string, canBeOff bool) {
	if canBeOff && v == "off" {
		return
	}
	_, port, err := net.SplitHostPort(v)
	if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 {
		if canBeOff {
			e.add("%q: must be host:port (e.g. :8009), or off", v)
		} else {
			e.add("%q: must be host:port (e.g. :8008)", v)
		}
	}
}

// Member is the member a device runs: the spec with the device's
// overrides applied.
func (s PostgresClusterSpec) Member(device string) PostgresClusterSpec {
	m, ok := s.Members[device]
	if !ok {
		return s
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&s.DataDir, m.DataDir)
	set(&s.LogDir, m.LogDir)
	set(&s.SocketDir, m.SocketDir)
	set(&s.Host, m.Host)
	set(&s.HTTP, m.HTTP)
	set(&s.Peer, m.Peer)
	if m.Port != 0 {
		s.Port = m.Port
	}
	return s
}

// didYouMean names the catalogue's setting closest to name, when one is
// close enough to be a typo.
func didYouMean(name string, catalogue map[string]PGSetting) string {
	best, bestD := "", 3
	for k := range catalogue {
		if d := editDistance(name, k); d < bestD || d == bestD && k < best {
			best, bestD = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %s?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
