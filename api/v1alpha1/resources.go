package v1alpha1

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
)

// Resource kinds.
const (
	KindFile        = "File"
	KindContainer   = "Container"
	KindSystemdUnit = "SystemdUnit"
	KindShellJob    = "ShellJob"
)

// Resource is one typed resource of a deployment: {id, kind, spec}.
type Resource struct {
	ID   string          `json:"id"`
	Kind string          `json:"kind"`
	Spec json.RawMessage `json:"spec,omitempty"`
}

// FileSpec is a whole file.
type FileSpec struct {
	Path    string `json:"path"`
	Content string `json:"content"`
	// ContentFrom takes the content from a secret instead; the file is
	// then written with mode 0600 unless mode says otherwise.
	ContentFrom *SecretKeyRef `json:"contentFrom,omitempty"`
	Mode        string        `json:"mode,omitempty"` // octal, e.g. "0644" (default)
	Owner       string        `json:"owner,omitempty"`
	Group       string        `json:"group,omitempty"`
}

// FileMode parses Mode (validated).
func (s FileSpec) FileMode() fs.FileMode {
	m, _ := parseMode(s.Mode)
	return m
}

// Port publishes a container port.
type Port struct {
	ContainerPort int    `json:"containerPort"`
	HostPort      int    `json:"hostPort,omitempty"`
	Protocol      string `json:"protocol,omitempty"` // tcp (default) or udp
}

// Volume mounts a host path into a container.
type Volume struct {
	HostPath      string `json:"hostPath"`
	ContainerPath string `json:"containerPath"`
	ReadOnly      bool   `json:"readOnly,omitempty"`
}

// ContainerSpec is one container run by podman.
type ContainerSpec struct {
	Name               string            `json:"name,omitempty"` // default: <deployment>-<id>
	Image              string            `json:"image"`
	Command            []string          `json:"command,omitempty"`
	Args               []string          `json:"args,omitempty"`
	Env                map[string]string `json:"env,omitempty"`
	Ports              []Port            `json:"ports,omitempty"`
	Volumes            []Volume          `json:"volumes,omitempty"`
	RestartPolicy      string            `json:"restartPolicy,omitempty"` // default always
	Labels             map[string]string `json:"labels,omitempty"`
	StopSignal         string            `json:"stopSignal,omitempty"`         // default SIGTERM
	StopTimeoutSeconds *int              `json:"stopTimeoutSeconds,omitempty"` // default 30
	Privileged         bool              `json:"privileged,omitempty"`
	HostNetwork        bool              `json:"hostNetwork,omitempty"`
	HealthCheck        *HealthCheck      `json:"healthCheck,omitempty"`
	// SecretEnv sets variables from secrets; they are handed to podman
	// in a file, never on its command line.
	SecretEnv map[string]SecretKeyRef `json:"secretEnv,omitempty"`
}

// HealthCheck is a command run inside a running container, every
// IntervalSeconds, by the agent (through podman). A container with one is
// Ready only while its check passes, and Failed after Retries failures in a
// row; failures during the first StartPeriodSeconds after a start do not
// count. An unhealthy container is reported, not restarted: RestartPolicy is
// about exits, as in podman.
type HealthCheck struct {
	// Command runs in the container as written (exec form), or, with
	// Shell, as one script given to /bin/sh -c.
	Command            []string `json:"command"`
	Shell              bool     `json:"shell,omitempty"`
	IntervalSeconds    int      `json:"intervalSeconds,omitempty"`    // default 10
	TimeoutSeconds     int      `json:"timeoutSeconds,omitempty"`     // default 5
	Retries            int      `json:"retries,omitempty"`            // default 3
	StartPeriodSeconds int      `json:"startPeriodSeconds,omitempty"` // default 0
}

// SystemdUnitSpec is one unit file and its wanted state.
type SystemdUnitSpec struct {
	Name    string `json:"name"`
	Content string `json:"content"`
	Enabled *bool  `json:"enabled,omitempty"` // default true
	Active  *bool  `json:"active,omitempty"`  // default true
}

// ShellJobSpec is a command run once per deployment generation.
type ShellJobSpec struct {
	Command        []string          `json:"command"`
	Shell          bool              `json:"shell,omitempty"`
	TimeoutSeconds int               `json:"timeoutSeconds,omitempty"` // default 300
	Env            map[string]string `json:"env,omitempty"`
	// SecretEnv sets variables from secrets (never written to the audit
	// log).
	SecretEnv map[string]SecretKeyRef `json:"secretEnv,omitempty"`
}

var (
	envNameRe  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	unitNameRe = regexp.MustCompile(`^[A-Za-z0-9:_.@\\-]+\.(service|timer|socket|path|target|mount)$`)
	imageRe    = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._/:@-]*$`)
	signalRe   = regexp.MustCompile(`^(SIG)?[A-Z0-9+-]+$`)
)

// DecodeSpec returns the typed spec of r with defaults applied: *FileSpec,
// *ContainerSpec, *SystemdUnitSpec or *ShellJobSpec. Errors are FieldErrors
// whose fields start with prefix (e.g. "spec.resources[0]"), or an
// *UnknownKindError for a kind this version does not know.
func DecodeSpec(prefix string, r Resource) (any, error) {
	e := newErrs().at(prefix)
	var spec any
	switch r.Kind {
	case KindFile:
		spec = &FileSpec{}
	case KindContainer:
		spec = &ContainerSpec{}
	case KindSystemdUnit:
		spec = &SystemdUnitSpec{}
	case KindShellJob:
		spec = &ShellJobSpec{}
	case KindPostgresCluster:
		spec = &PostgresClusterSpec{}
	default:
		return nil, &UnknownKindError{Field: e.at("kind").path, Kind: r.Kind}
	}
	if len(bytes.TrimSpace(r.Spec)) == 0 {
		e.at("spec").add("is required")
		return nil, e.err()
	}
	dec := json.NewDecoder(bytes.NewReader(r.Spec))
	dec.DisallowUnknownFields()
	if err := dec.Decode(spec); err != nil {
		*e.list = append(*e.list, explainJSON(e.at("spec").path, r.Spec, reflect.TypeOf(spec).Elem(), err))
		return nil, e.err()
	}
	es := e.at("spec")
	switch s := spec.(type) {
	case *FileSpec:
		s.setDefaults()
		s.validate(es)
	case *ContainerSpec:
		s.setDefaults()
		s.validate(es)
	case *SystemdUnitSpec:
		s.setDefaults()
		s.validate(es)
	case *ShellJobSpec:
		s.setDefaults()
		s.validate(es)
	case *PostgresClusterSpec:
		s.setDefaults()
		s.validate(es)
	}
	if err := e.err(); err != nil {
		return nil, err
	}
	return spec, nil
}

// CanonicalResource re-encodes r's spec with defaults applied, so two
// resources that mean the same give the same bytes. Unknown kinds keep their
// spec, re-encoded canonically.
func CanonicalResource(prefix string, r Resource) (Resource, error) {
	spec, err := DecodeSpec(prefix, r)
	if err != nil {
		if _, unknown := err.(*UnknownKindError); unknown {
			raw, rerr := CanonicalRaw(r.Spec)
			if rerr != nil {
				return r, err
			}
			r.Spec = raw
		}
		return r, err
	}
	raw, err := Marshal(spec)
	if err != nil {
		return r, err
	}
	r.Spec = raw
	return r, nil
}

func (s *FileSpec) setDefaults() {
	if s.Mode == "" {
		s.Mode = "0644"
		if s.ContentFrom != nil {
			s.Mode = "0600"
		}
	}
}

func (s *FileSpec) validate(e errs) {
	switch {
	case s.Path == "":
		e.at("path").add("is required")
	case !filepath.IsAbs(s.Path):
		e.at("path").add("must be an absolute path")
	case filepath.Clean(s.Path) != s.Path || strings.Contains(s.Path, "/../"):
		e.at("path").add("must be clean (no '.', '..', '//' or trailing '/')")
	case s.Path == "/":
		e.at("path").add("must name a file, not /")
	case strings.ContainsRune(s.Path, 0):
		e.at("path").add("must not contain a NUL byte")
	}
	if len(s.Content) > MaxFileContentBytes {
		e.at("content").add("%d bytes is more than the limit of %d", len(s.Content), MaxFileContentBytes)
	}
	if s.ContentFrom != nil {
		if s.Content != "" {
			e.at("contentFrom").add("give content or contentFrom, not both")
		}
		s.ContentFrom.validate(e.at("contentFrom"))
	}
	if _, err := parseMode(s.Mode); err != nil {
		e.at("mode").add("%v", err)
	}
	for name, v := range map[string]string{"owner": s.Owner, "group": s.Group} {
		if v != "" && !validOwner(v) {
			e.at(name).add("%q is not a user/group name or numeric id", v)
		}
	}
}

func validOwner(s string) bool {
	if len(s) > 32 {
		return false
	}
	for i, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || (i > 0 && (r == '-' || r == '.'))) {
			return false
		}
	}
	return true
}

// parseMode reads an octal mode of at most four digits.
func parseMode(s string) (fs.FileMode, error) {
	if len(s) < 3 || len(s) > 4 {
		return 0, fmt.Errorf("%q: want an octal mode such as \"0644\"", s)
	}
	n, err := strconv.ParseUint(s, 8, 32)
	if err != nil || n > 0o7777 {
		return 0, fmt.Errorf("%q: want an octal mode such as \"0644\"", s)
	}
	m := fs.FileMode(n & 0o777)
	if n&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if n&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if n&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m, nil
}

func (s *ContainerSpec) setDefaults() {
	if s.RestartPolicy == "" {
		s.RestartPolicy = "always"
	}
	if s.StopSignal == "" {
		s.StopSignal = "SIGTERM"
	}
	if s.StopTimeoutSeconds == nil {
		v := 30
		s.StopTimeoutSeconds = &v
	}
	for i := range s.Ports {
		if s.Ports[i].Protocol == "" {
			s.Ports[i].Protocol = "tcp"
		}
	}
	if h := s.HealthCheck; h != nil {
		if h.IntervalSeconds == 0 {
			h.IntervalSeconds = 10
		}
		if h.TimeoutSeconds == 0 {
			h.TimeoutSeconds = 5
		}
		if h.Retries == 0 {
			h.Retries = 3
		}
	}
}

func (s *ContainerSpec) validate(e errs) {
	if s.Name != "" {
		if err := validateLabel(s.Name); err != nil {
			e.at("name").add("%v", err)
		}
	}
	if s.Image == "" {
		e.at("image").add("is required")
	} else if !imageRe.MatchString(s.Image) || len(s.Image) > 255 {
		e.at("image").add("%q is not an image reference", s.Image)
	}
	validateEnv(e, s.Env, s.SecretEnv)
	for i, p := range s.Ports {
		pe := e.at("ports").index(i)
		if p.ContainerPort < 1 || p.ContainerPort > 65535 {
			pe.at("containerPort").add("%d: must be 1 to 65535", p.ContainerPort)
		}
		if p.HostPort < 0 || p.HostPort > 65535 {
			pe.at("hostPort").add("%d: must be 0 to 65535", p.HostPort)
		}
		if p.Protocol != "tcp" && p.Protocol != "udp" {
			pe.at("protocol").add("%q: must be tcp or udp", p.Protocol)
		}
	}
	for i, v := range s.Volumes {
		ve := e.at("volumes").index(i)
		if !filepath.IsAbs(v.HostPath) || filepath.Clean(v.HostPath) != v.HostPath {
			ve.at("hostPath").add("must be a clean absolute path")
		}
		if !filepath.IsAbs(v.ContainerPath) || filepath.Clean(v.ContainerPath) != v.ContainerPath {
			ve.at("containerPath").add("must be a clean absolute path")
		}
	}
	switch s.RestartPolicy {
	case "no", "always", "on-failure", "unless-stopped":
	default:
		e.at("restartPolicy").add("%q: must be no, always, on-failure or unless-stopped", s.RestartPolicy)
	}
	validateLabels(e.at("labels"), s.Labels)
	if !signalRe.MatchString(s.StopSignal) {
		e.at("stopSignal").add("%q is not a signal name", s.StopSignal)
	}
	if t := *s.StopTimeoutSeconds; t < 0 || t > 3600 {
		e.at("stopTimeoutSeconds").add("%d: must be 0 to 3600", t)
	}
	if s.HealthCheck != nil {
		s.HealthCheck.validate(e.at("healthCheck"))
	}
}

func (h *HealthCheck) validate(e errs) {
	switch {
	case len(h.Command) == 0 || h.Command[0] == "":
		e.at("command").add("is required")
	case h.Shell && len(h.Command) != 1:
		e.at("command").add("with shell: true, give the whole script as one string")
	case !h.Shell && isHealthKeyword(h.Command[0]):
		e.at("command").add("%q is podman's keyword, not a command: give the command itself (or shell: true and the script)", h.Command[0])
	}
	for i, a := range h.Command {
		if strings.ContainsRune(a, 0) {
			e.at("command").index(i).add("must not contain a NUL byte")
		}
	}
	if h.IntervalSeconds < 1 || h.IntervalSeconds > 86400 {
		e.at("intervalSeconds").add("%d: must be 1 to 86400", h.IntervalSeconds)
	}
	if h.TimeoutSeconds < 1 || h.TimeoutSeconds > 3600 {
		e.at("timeoutSeconds").add("%d: must be 1 to 3600", h.TimeoutSeconds)
	}
	if h.Retries < 1 || h.Retries > 100 {
		e.at("retries").add("%d: must be 1 to 100", h.Retries)
	}
	if h.StartPeriodSeconds < 0 || h.StartPeriodSeconds > 86400 {
		e.at("startPeriodSeconds").add("%d: must be 0 to 86400", h.StartPeriodSeconds)
	}
}

// isHealthKeyword: the first words podman and Docker read as the form of a
// health check rather than as a command.
func isHealthKeyword(s string) bool {
	switch strings.ToUpper(s) {
	case "CMD", "CMD-SHELL", "NONE":
		return true
	}
	return false
}

func (s *SystemdUnitSpec) setDefaults() {
	t := true
	if s.Enabled == nil {
		s.Enabled = &t
	}
	if s.Active == nil {
		s.Active = &t
	}
}

func (s *SystemdUnitSpec) validate(e errs) {
	if !unitNameRe.MatchString(s.Name) || len(s.Name) > 255 {
		e.at("name").add("%q: want a unit name ending in .service, .timer, .socket, .path, .target or .mount", s.Name)
	}
	if s.Content == "" {
		e.at("content").add("is required")
	}
	if len(s.Content) > MaxUnitContentBytes {
		e.at("content").add("%d bytes is more than the limit of %d", len(s.Content), MaxUnitContentBytes)
	}
}

func (s *ShellJobSpec) setDefaults() {
	if s.TimeoutSeconds == 0 {
		s.TimeoutSeconds = 300
	}
}

func (s *ShellJobSpec) validate(e errs) {
	switch {
	case len(s.Command) == 0 || s.Command[0] == "":
		e.at("command").add("is required")
	case s.Shell && len(s.Command) != 1:
		e.at("command").add("with shell: true, give the whole script as one string")
	}
	if s.TimeoutSeconds < 1 || s.TimeoutSeconds > 86400 {
		e.at("timeoutSeconds").add("%d: must be 1 to 86400", s.TimeoutSeconds)
	}
	validateEnv(e, s.Env, s.SecretEnv)
}

// validateEnv checks variable names of env and secretEnv, and that no
// variable is set by both.
func validateEnv(e errs, env map[string]string, secretEnv map[string]SecretKeyRef) {
	for _, k := range sortedKeys(env) {
		if !envNameRe.MatchString(k) {
			e.at("env").at(k).add("is not an environment variable name")
		}
	}
	for _, k := range sortedKeys(secretEnv) {
		if !envNameRe.MatchString(k) {
			e.at("secretEnv").at(k).add("is not an environment variable name")
		} else if _, both := env[k]; both {
			e.at("secretEnv").at(k).add("is also set in env: set it in one of them")
		}
		secretEnv[k].validate(e.at("secretEnv").at(k))
	}
}
