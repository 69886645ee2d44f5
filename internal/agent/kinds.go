package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/agent/containers"
	"github.com/harmony-fleet/harmony/internal/agent/files"
	"github.com/harmony-fleet/harmony/internal/agent/localstate"
	"github.com/harmony-fleet/harmony/internal/agent/shelljob"
	"github.com/harmony-fleet/harmony/internal/agent/units"
	"github.com/harmony-fleet/harmony/internal/config"
)

// Desired is one decoded resource the agent should enforce.
type Desired struct {
	Deployment string
	UID        string // the deployment's (DesiredState.UID)
	Generation int64
	ID         string
	Kind       string
	Spec       any // *v1.FileSpec, *v1.ContainerSpec, ...
	Claim      string
	Raw        json.RawMessage // canonical spec, kept in the ledger
	// Secrets are the versions of the secrets the desired state uses
	// (DesiredState.Secrets); SecretEnv, filled just before the kind
	// sees it (secretSource.resolve), the values of a spec's secretEnv.
	// Neither is kept anywhere.
	Secrets   map[string]string
	SecretEnv map[string]string
	// SecretValues are every value the spec takes from secrets, by the
	// field that names it (v1.SecretUses with no prefix, e.g.
	// ".spec.superuserPassword").
	SecretValues map[string]string
}

// madeError is an Apply that failed after making the thing (a container
// created but not started): the agent owns what it made, so the engine
// records it in the ledger, and removing the resource removes it.
type madeError struct{ err error }

func (e madeError) Error() string { return e.err.Error() }
func (e madeError) Unwrap() error { return e.err }

// Result is what a reconciler saw after doing its work.
type Result struct {
	// Phase is v1.PhaseReady or v1.PhaseProgressing, or v1.PhaseFailed
	// for a thing that matches its spec and reports itself broken (an
	// unhealthy container): nothing to apply, nothing to retry.
	Phase   string
	Message string
	Details map[string]string
	// Recheck, when set, is when the kind wants to observe again, before
	// the next resync (a container's next health check).
	Recheck time.Time
	// Instance and Restarts are what runs and how often it was restarted
	// in place (a container's id and podman's RestartCount), for the
	// engine to count the restarts it sees; empty for kinds that run
	// nothing.
	Instance string
	Restarts int
}

// Observation is what Observe saw, without changing anything.
type Observation struct {
	InSync bool
	// Diff says what differs when not in sync.
	Diff   string
	Result Result
}

// Kind reconciles one resource kind: the engine observes, applies when the
// observation differs from the spec, observes again, and deletes what is no
// longer desired. Every method is idempotent.
type Kind interface {
	// Admit checks a decoded spec against this device's rules (allowed
	// roots, privileges) and returns the device-level name it claims; errors
	// are *v1.FieldError naming the field.
	Admit(d Desired) (claim string, err error)
	// Observe reports whether the thing matches the spec; it changes nothing.
	Observe(ctx context.Context, d Desired) (Observation, error)
	// Apply makes the thing match the spec.
	Apply(ctx context.Context, d Desired) error
	// Delete undoes a thing the agent created (and still owns).
	Delete(ctx context.Context, o localstate.Owned) error
}

// refuse is how every kind refuses what needs a capability the agent does
// not allow (docs/adr/0015-agent-capabilities.md): a field error naming the
// field, the capability and the config that allows it, so that all such
// refusals read alike. The engine turns it into an Invalid resource status
// and refuses the generation; nothing is applied and nothing running is
// touched.
func refuse(field, what, capability string) error {
	return &v1.FieldError{Field: field, Reason: refusal(what, capability)}
}

// refusal is the text of a refusal: "ShellJob is disabled on this device:
// it needs capability shell_jobs (agent config: capabilities: [shell_jobs],
// or the older shell_jobs: true)".
func refusal(what, capability string) string {
	return fmt.Sprintf("%s is disabled on this device: it needs capability %s (agent config: %s)",
		what, capability, config.EnableHint(capability))
}

// fileKind adapts files.Manager. Modes with special bits need
// specialModes (capability special_file_modes).
type fileKind struct {
	m            *files.Manager
	specialModes bool
}

var _ Kind = fileKind{}

func fileSpec(s *v1.FileSpec) files.Spec {
	return files.Spec{Path: s.Path, Content: []byte(s.Content), Mode: s.FileMode(), Owner: s.Owner, Group: s.Group}
}

func (k fileKind) Admit(d Desired) (string, error) {
	s := d.Spec.(*v1.FileSpec)
	if special := files.Special(s.FileMode()); len(special) > 0 && !k.specialModes {
		return "", refuse("spec.mode", fmt.Sprintf("mode %s (%s)", s.Mode, strings.Join(special, ", ")), v1.CapabilitySpecialFileModes)
	}
	if err := k.m.Check(s.Path); err != nil {
		return "", &v1.FieldError{Field: "spec.path", Reason: err.Error()}
	}
	return s.Path, nil
}

func (k fileKind) Observe(_ context.Context, d Desired) (Observation, error) {
	s := d.Spec.(*v1.FileSpec)
	o, err := k.m.Observe(fileSpec(s))
	if err != nil {
		return Observation{}, err
	}
	details := map[string]string{"sha256": o.SHA256}
	if s.ContentFrom != nil {
		// A hash of a secret is no one's business (a short password's
		// would give it away): the secret's version says what is there.
		details = map[string]string{"secret": s.ContentFrom.Secret, "secretVersion": d.Secrets[s.ContentFrom.Secret]}
	}
	return Observation{InSync: o.InSync, Diff: strings.Join(o.Diff, ", "),
		Result: Result{Phase: v1.PhaseReady, Message: "in sync", Details: details}}, nil
}

func (k fileKind) Apply(_ context.Context, d Desired) error {
	_, err := k.m.Apply(fileSpec(d.Spec.(*v1.FileSpec)))
	return err
}

func (k fileKind) Delete(_ context.Context, o localstate.Owned) error {
	return k.m.Delete(o.Claim)
}

// shellJobKind adapts shelljob.Runner. Jobs claim nothing exclusive; they
// run only when enabled (capability shell_jobs).
type shellJobKind struct {
	r       *shelljob.Runner
	enabled bool
	dir     string // working directory ("": the agent's); root_dir when set
}

func (k shellJobKind) Admit(d Desired) (string, error) {
	if !k.enabled {
		return "", refuse("kind", "ShellJob", v1.CapabilityShellJob)
	}
	return "", nil
}

func (k shellJobKind) jobSpec(d Desired) shelljob.Spec {
	s := d.Spec.(*v1.ShellJobSpec)
	env := s.Env
	var redact []string
	if len(d.SecretEnv) > 0 {
		env = map[string]string{}
		maps.Copy(env, s.Env)
		for k, v := range d.SecretEnv {
			env[k] = v
			redact = append(redact, v)
		}
	}
	return shelljob.Spec{Deployment: d.Deployment, UID: d.UID, Generation: d.Generation, ID: d.ID, Command: s.Command,
		Shell: s.Shell, Timeout: secondsDuration(s.TimeoutSeconds), Env: env, Dir: k.dir, Redact: redact}
}

// Observe: a job is in sync once it ran for this generation. A run that
// failed is a permanent failure for the generation.
func (k shellJobKind) Observe(_ context.Context, d Desired) (Observation, error) {
	rec, ok, err := k.r.Done(k.jobSpec(d))
	if err != nil || !ok {
		return Observation{Diff: "not run for this generation"}, err
	}
	details := map[string]string{"exitCode": fmt.Sprint(rec.ExitCode), "finishedAt": rec.FinishedAt}
	if rec.Error != "" {
		return Observation{Result: Result{Details: details}}, &permanentError{fmt.Errorf("job failed: %s; output: %s", rec.Error, tail(rec.OutputTail, 512))}
	}
	return Observation{InSync: true, Result: Result{Phase: v1.PhaseReady, Message: "completed", Details: details}}, nil
}

func (k shellJobKind) Apply(ctx context.Context, d Desired) error {
	_, err := k.r.Run(ctx, k.jobSpec(d))
	return err
}

func (k shellJobKind) Delete(context.Context, localstate.Owned) error { return nil }

// permanentError marks a failure that retrying cannot fix (a ShellJob that
// ran and failed): no backoff timer, the status stays Failed.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func isPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// blockedError: the resource needs something this machine does not have
// (podman, systemd). Nothing the agent does changes that, installing it
// does: the resource is Failed with the reason in its details and is looked
// at again on every pass (a cheap check), with no backoff and no retry
// storm.
type blockedError struct {
	reason string // a stable code: ReasonPodmanNotInstalled, ...
	msg    string
	err    error
}

// Reasons of a blocked resource (its status details' "reason").
const (
	ReasonPodmanNotInstalled = "PodmanNotInstalled"
	ReasonSystemdUnavailable = "SystemdUnavailable"
	detailReason             = "reason"
)

// ReasonSecretUnavailable: a secret the resource takes a value from could
// not be read (it does not exist, or the store cannot be reached and no
// copy is kept); retried with backoff.
const ReasonSecretUnavailable = "SecretUnavailable"

// Reasons of a running container with a health check that is not Ready.
const (
	ReasonHealthCheckPending = "HealthCheckPending" // Progressing: no passing check since the start yet
	ReasonUnhealthy          = "Unhealthy"          // Failed: retries checks in a row failed
)

func (e *blockedError) Error() string { return e.msg }
func (e *blockedError) Unwrap() error { return e.err }

func asBlocked(err error) (*blockedError, bool) {
	var b *blockedError
	ok := errors.As(err, &b)
	return b, ok
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// containerKind adapts the podman driver. Privileged containers and the
// host network need capabilities privileged_containers and host_network.
// Observing a container with a health check runs the check when one is due
// (it reads, it changes nothing of the container) and asks for the next
// observation when the next one is due.
type containerKind struct {
	p                *containers.Podman
	files            *files.Manager
	allowPrivileged  bool
	allowHostNetwork bool
	// prefix goes before every container's podman name (Options.ContainerPrefix).
	prefix string
}

func containerName(d Desired) string {
	s := d.Spec.(*v1.ContainerSpec)
	if s.Name != "" {
		return s.Name
	}
	return d.Deployment + "-" + d.ID
}

// podmanName is the name podman knows a container by: its claim (the name
// the spec gives or implies) behind the agent's prefix.
func (k containerKind) podmanName(claim string) string { return k.prefix + claim }

// installed blocks every container while podman is missing.
func (k containerKind) installed() error {
	if err := k.p.Installed(); err != nil {
		return &blockedError{reason: ReasonPodmanNotInstalled, err: err,
			msg: "Container needs podman, which is not installed on this machine"}
	}
	return nil
}

func (k containerKind) Admit(d Desired) (string, error) {
	s := d.Spec.(*v1.ContainerSpec)
	if s.Privileged && !k.allowPrivileged {
		return "", refuse("spec.privileged", "a privileged container", v1.CapabilityPrivilegedContainers)
	}
	if s.HostNetwork && !k.allowHostNetwork {
		return "", refuse("spec.hostNetwork", "the host network", v1.CapabilityHostNetwork)
	}
	for i, v := range s.Volumes {
		if err := k.files.CheckMount(v.HostPath); err != nil {
			return "", &v1.FieldError{Field: fmt.Sprintf("spec.volumes[%d].hostPath", i), Reason: err.Error()}
		}
	}
	return containerName(d), nil
}

func toContainerSpec(name string, s *v1.ContainerSpec, fm *files.Manager) containers.Spec {
	cs := containers.Spec{Name: name, Image: s.Image, Command: s.Command, Args: s.Args, Env: s.Env, Labels: s.Labels,
		RestartPolicy: s.RestartPolicy, StopSignal: s.StopSignal, StopTimeout: secondsDuration(*s.StopTimeoutSeconds),
		Privileged: s.Privileged, HostNetwork: s.HostNetwork}
	for _, p := range s.Ports {
		cs.Ports = append(cs.Ports, containers.Port{ContainerPort: p.ContainerPort, HostPort: p.HostPort, Protocol: p.Protocol})
	}
	for _, v := range s.Volumes {
		cs.Volumes = append(cs.Volumes, containers.Volume{HostPath: fm.Real(v.HostPath), ContainerPath: v.ContainerPath, ReadOnly: v.ReadOnly})
	}
	if h := s.HealthCheck; h != nil {
		cs.HealthCheck = &containers.HealthCheck{Command: h.Command, Shell: h.Shell, Interval: secondsDuration(h.IntervalSeconds),
			Timeout: secondsDuration(h.TimeoutSeconds), Retries: h.Retries, StartPeriod: secondsDuration(h.StartPeriodSeconds)}
	}
	return cs
}

func (k containerKind) desired(d Desired) containers.Desired {
	spec := toContainerSpec(k.podmanName(containerName(d)), d.Spec.(*v1.ContainerSpec), k.files)
	spec.SecretEnv = d.SecretEnv
	return containers.Desired{Deployment: d.Deployment, Resource: d.ID, Spec: spec, Canonical: withSecretVersions(d)}
}

// withSecretVersions is what identifies a container's spec: its canonical
// spec and, when it takes values from secrets, their versions (so that a
// rotated secret replaces the container, and its spec hash tells nothing
// about the values).
func withSecretVersions(d Desired) []byte {
	names := map[string]string{}
	for _, u := range v1.SecretUses("", d.Spec) {
		names[u.Ref.Secret] = d.Secrets[u.Ref.Secret]
	}
	if len(names) == 0 {
		return d.Raw
	}
	v, _ := v1.Marshal(names)
	return append(append(append([]byte{}, d.Raw...), '\n'), v...)
}

func (k containerKind) Observe(ctx context.Context, d Desired) (Observation, error) {
	if err := k.installed(); err != nil {
		return Observation{}, err
	}
	cd := k.desired(d)
	c, diff, err := k.p.Observe(ctx, cd)
	if err != nil {
		return Observation{}, err
	}
	if diff != "" || cd.Spec.HealthCheck == nil {
		return Observation{InSync: diff == "", Diff: diff, Result: containerResult(c)}, nil
	}
	h, c, err := k.p.Health(ctx, cd, c)
	if err != nil {
		return Observation{Result: containerResult(c)}, err
	}
	return Observation{InSync: true, Result: healthResult(h, c)}, nil
}

// containerResult is the status of a running container without a health
// check (of c as found, when it differs).
func containerResult(c containers.Container) Result {
	return Result{Phase: v1.PhaseReady, Message: "running", Details: containers.Details(c), Instance: c.ID, Restarts: c.RestartCount}
}

// healthResult is the status of a running container with a health check:
// Ready while healthy, Progressing until a check passes, Failed when
// unhealthy (not restarted: restartPolicy is about exits).
func healthResult(h containers.HealthState, c containers.Container) Result {
	// No time of the last check in the details: the status is written
	// when it changes, and that would change it at every check.
	r := containerResult(c)
	details := r.Details
	details["health"] = h.Verdict
	r.Message, r.Recheck = h.Message, h.Next
	switch h.Verdict {
	case containers.HealthStarting:
		r.Phase, details[detailReason] = v1.PhaseProgressing, ReasonHealthCheckPending
	case containers.HealthUnhealthy:
		r.Phase, details[detailReason] = v1.PhaseFailed, ReasonUnhealthy
	}
	return r
}

func (k containerKind) Apply(ctx context.Context, d Desired) error {
	obs, err := k.p.Reconcile(ctx, k.desired(d))
	if err != nil && obs.Container.Labels[containers.LabelDeployment] == d.Deployment &&
		obs.Container.Labels[containers.LabelResource] == d.ID {
		// Created (or found from an earlier try) with this resource's
		// labels, but not running: it is ours to remove all the same.
		return madeError{err}
	}
	return err
}

func (k containerKind) Delete(ctx context.Context, o localstate.Owned) error {
	timeout := 30 * time.Second
	var s v1.ContainerSpec
	if json.Unmarshal(o.Spec, &s) == nil && s.StopTimeoutSeconds != nil {
		timeout = secondsDuration(*s.StopTimeoutSeconds)
	}
	return k.p.RemoveOwned(ctx, k.podmanName(o.Claim), timeout)
}

// Logs implements LogReader: the container's last lines.
func (k containerKind) Logs(ctx context.Context, d Desired, lines int) (string, error) {
	if err := k.installed(); err != nil {
		return "", err
	}
	return k.p.Logs(ctx, k.podmanName(containerName(d)), lines)
}

// Logs implements LogReader: the recorded output tail of the job's run for
// the current generation.
func (k shellJobKind) Logs(_ context.Context, d Desired, lines int) (string, error) {
	rec, ok, err := k.r.Done(shelljob.Spec{Deployment: d.Deployment, UID: d.UID, Generation: d.Generation, ID: d.ID})
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("job %s has not run for generation %d yet", d.ID, d.Generation)
	}
	return lastLines(rec.OutputTail, lines), nil
}

func lastLines(s string, n int) string {
	s = strings.TrimSuffix(s, "\n")
	parts := strings.Split(s, "\n")
	if len(parts) > n {
		parts = parts[len(parts)-n:]
	}
	return strings.Join(parts, "\n") + "\n"
}

// unitKind adapts the systemd driver. A unit with content installs a unit
// file, whose Exec*= lines (and mounts, and the rest) systemd runs as root:
// that needs unitFiles (capability systemd_unit_files). A unit without
// content only enables, disables, starts and stops a unit already installed
// on the device, which needs none.
type unitKind struct {
	m         *units.Manager
	unitFiles bool
}

func (k unitKind) Admit(d Desired) (string, error) {
	s := d.Spec.(*v1.SystemdUnitSpec)
	if err := units.ValidateName(s.Name); err != nil {
		return "", &v1.FieldError{Field: "spec.name", Reason: err.Error()}
	}
	if (units.Unit{Content: s.Content}).InstallsFile() && !k.unitFiles {
		return "", refuse("spec.content", "installing a unit file", v1.CapabilitySystemdUnitFiles)
	}
	return s.Name, nil
}

func toUnit(s *v1.SystemdUnitSpec) units.Unit {
	return units.Unit{Name: s.Name, Content: s.Content, Enabled: *s.Enabled, Active: *s.Active}
}

func (k unitKind) Observe(ctx context.Context, d Desired) (Observation, error) {
	s := d.Spec.(*v1.SystemdUnitSpec)
	st, err := k.m.Observe(ctx, toUnit(s))
	if err != nil {
		return Observation{}, blockedUnit(err)
	}
	var diff []string
	if !st.FileMatches {
		diff = append(diff, "unit file")
	}
	if enabled := st.UnitFileState == "enabled"; enabled != *s.Enabled {
		diff = append(diff, "unit file state "+st.UnitFileState)
	}
	if active := st.ActiveState == "active"; active != *s.Active {
		diff = append(diff, "active state "+st.ActiveState)
	}
	details := map[string]string{"activeState": st.ActiveState, "subState": st.SubState, "unitFileState": st.UnitFileState}
	return Observation{InSync: len(diff) == 0, Diff: strings.Join(diff, ", "),
		Result: Result{Phase: v1.PhaseReady, Message: st.ActiveState, Details: details}}, nil
}

func (k unitKind) Apply(ctx context.Context, d Desired) error {
	_, err := k.m.Apply(ctx, toUnit(d.Spec.(*v1.SystemdUnitSpec)))
	return blockedUnit(err)
}

// blockedUnit turns "no systemd here" into a blocked resource.
func blockedUnit(err error) error {
	var u *units.UnavailableError
	if errors.As(err, &u) {
		return &blockedError{reason: ReasonSystemdUnavailable, err: err, msg: "SystemdUnit needs systemd (" + u.Reason + ")"}
	}
	return err
}

// Delete removes a unit whose file the agent installed; a unit that was on
// the device before (no content) is left as it is.
func (k unitKind) Delete(ctx context.Context, o localstate.Owned) error {
	var s v1.SystemdUnitSpec
	if err := json.Unmarshal(o.Spec, &s); err == nil && !(units.Unit{Content: s.Content}).InstallsFile() {
		return nil
	}
	return k.m.Delete(ctx, o.Claim)
}
