package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/agent/containers"
	"github.com/harmony-fleet/harmony/internal/agent/files"
	"github.com/harmony-fleet/harmony/internal/agent/localstate"
	"github.com/harmony-fleet/harmony/internal/agent/shelljob"
	"github.com/harmony-fleet/harmony/internal/agent/units"
)

// Desired is one decoded resource the agent should enforce.
type Desired struct {
	Deployment string
	Generation int64
	ID         string
	Kind       string
	Spec       any // *v1.FileSpec, *v1.ContainerSpec, ...
	Claim      string
	Raw        json.RawMessage // canonical spec, kept in the ledger
}

// Result is what a reconciler saw after doing its work.
type Result struct {
	Phase   string // v1.PhaseReady or v1.PhaseProgressing
	Message string
	Details map[string]string
}

// Kind reconciles one resource kind. Every method is idempotent.
type Kind interface {
	// Admit checks a decoded spec against this device's rules (allowed
	// roots, privileges) and returns the device-level name it claims; errors
	// are *v1.FieldError naming the field.
	Admit(d Desired) (claim string, err error)
	// Reconcile observes the thing, corrects it when it differs, and
	// reports what it found.
	Reconcile(ctx context.Context, d Desired) (Result, error)
	// Remove undoes a thing the agent created (and still owns).
	Remove(ctx context.Context, o localstate.Owned) error
}

// fileKind adapts files.Manager.
type fileKind struct{ m *files.Manager }

var _ Kind = fileKind{}

func fileSpec(s *v1.FileSpec) files.Spec {
	return files.Spec{Path: s.Path, Content: []byte(s.Content), Mode: s.FileMode(), Owner: s.Owner, Group: s.Group}
}

func (k fileKind) Admit(d Desired) (string, error) {
	s := d.Spec.(*v1.FileSpec)
	if err := k.m.Check(s.Path); err != nil {
		return "", &v1.FieldError{Field: "spec.path", Reason: err.Error()}
	}
	return s.Path, nil
}

func (k fileKind) Reconcile(_ context.Context, d Desired) (Result, error) {
	s := d.Spec.(*v1.FileSpec)
	before, err := k.m.Observe(fileSpec(s))
	if err != nil {
		return Result{}, err
	}
	if _, err := k.m.Apply(fileSpec(s)); err != nil {
		return Result{}, err
	}
	after, err := k.m.Observe(fileSpec(s))
	if err != nil {
		return Result{}, err
	}
	if !after.InSync {
		return Result{}, fmt.Errorf("file still differs after writing: %v", after.Diff)
	}
	msg := "in sync"
	if !before.InSync {
		msg = fmt.Sprintf("corrected: %v", before.Diff)
	}
	return Result{Phase: v1.PhaseReady, Message: msg, Details: map[string]string{"sha256": after.SHA256}}, nil
}

func (k fileKind) Remove(_ context.Context, o localstate.Owned) error {
	return k.m.Delete(o.Claim)
}

// shellJobKind adapts shelljob.Runner. Jobs claim nothing exclusive.
type shellJobKind struct {
	r       *shelljob.Runner
	enabled bool
}

func (k shellJobKind) Admit(d Desired) (string, error) {
	if !k.enabled {
		return "", &v1.FieldError{Field: "kind", Reason: "ShellJob is disabled on this device (agent setting shell_jobs)"}
	}
	return "", nil
}

func (k shellJobKind) Reconcile(ctx context.Context, d Desired) (Result, error) {
	s := d.Spec.(*v1.ShellJobSpec)
	spec := shelljob.Spec{Deployment: d.Deployment, Generation: d.Generation, ID: d.ID, Command: s.Command,
		Shell: s.Shell, Timeout: secondsDuration(s.TimeoutSeconds), Env: s.Env}
	rec, err := k.r.Run(ctx, spec)
	if err != nil {
		return Result{}, err
	}
	details := map[string]string{"exitCode": fmt.Sprint(rec.ExitCode), "finishedAt": rec.FinishedAt}
	if rec.Error != "" {
		// Failed for this generation; it will not run again until the next.
		return Result{Details: details}, &permanentError{fmt.Errorf("job failed: %s; output: %s", rec.Error, tail(rec.OutputTail, 512))}
	}
	return Result{Phase: v1.PhaseReady, Message: "completed", Details: details}, nil
}

func (k shellJobKind) Remove(context.Context, localstate.Owned) error { return nil }

// permanentError marks a failure that retrying cannot fix (a ShellJob that
// ran and failed): no backoff timer, the status stays Failed.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func isPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// containerKind adapts the podman driver.
type containerKind struct {
	p                *containers.Podman
	files            *files.Manager
	allowPrivileged  bool
	allowHostNetwork bool
}

func containerName(d Desired) string {
	s := d.Spec.(*v1.ContainerSpec)
	if s.Name != "" {
		return s.Name
	}
	return d.Deployment + "-" + d.ID
}

func (k containerKind) Admit(d Desired) (string, error) {
	s := d.Spec.(*v1.ContainerSpec)
	if s.Privileged && !k.allowPrivileged {
		return "", &v1.FieldError{Field: "spec.privileged", Reason: "privileged containers are not allowed on this device (agent setting allow_privileged)"}
	}
	if s.HostNetwork && !k.allowHostNetwork {
		return "", &v1.FieldError{Field: "spec.hostNetwork", Reason: "the host network is not allowed on this device (agent setting allow_host_network)"}
	}
	for i, v := range s.Volumes {
		if err := k.files.Check(v.HostPath); err != nil {
			return "", &v1.FieldError{Field: fmt.Sprintf("spec.volumes[%d].hostPath", i), Reason: err.Error()}
		}
	}
	return containerName(d), nil
}

func toContainerSpec(name string, s *v1.ContainerSpec) containers.Spec {
	cs := containers.Spec{Name: name, Image: s.Image, Command: s.Command, Args: s.Args, Env: s.Env, Labels: s.Labels,
		RestartPolicy: s.RestartPolicy, StopSignal: s.StopSignal, StopTimeout: secondsDuration(*s.StopTimeoutSeconds),
		Privileged: s.Privileged, HostNetwork: s.HostNetwork}
	for _, p := range s.Ports {
		cs.Ports = append(cs.Ports, containers.Port{ContainerPort: p.ContainerPort, HostPort: p.HostPort, Protocol: p.Protocol})
	}
	for _, v := range s.Volumes {
		cs.Volumes = append(cs.Volumes, containers.Volume{HostPath: v.HostPath, ContainerPath: v.ContainerPath, ReadOnly: v.ReadOnly})
	}
	return cs
}

func (k containerKind) Reconcile(ctx context.Context, d Desired) (Result, error) {
	s := d.Spec.(*v1.ContainerSpec)
	o, err := k.p.Reconcile(ctx, containers.Desired{Deployment: d.Deployment, Resource: d.ID,
		Spec: toContainerSpec(containerName(d), s), Canonical: d.Raw})
	if err != nil {
		return Result{Details: containers.Details(o.Container)}, err
	}
	msg := "running"
	if o.Action != "none" {
		msg = "running (" + o.Action + ")"
	}
	return Result{Phase: v1.PhaseReady, Message: msg, Details: containers.Details(o.Container)}, nil
}

func (k containerKind) Remove(ctx context.Context, o localstate.Owned) error {
	timeout := 30 * time.Second
	var s v1.ContainerSpec
	if json.Unmarshal(o.Spec, &s) == nil && s.StopTimeoutSeconds != nil {
		timeout = secondsDuration(*s.StopTimeoutSeconds)
	}
	return k.p.RemoveOwned(ctx, o.Claim, timeout)
}

// Logs implements LogReader: the container's last lines.
func (k containerKind) Logs(ctx context.Context, d Desired, lines int) (string, error) {
	return k.p.Logs(ctx, containerName(d), lines)
}

// Logs implements LogReader: the recorded output tail of the job's run for
// the current generation.
func (k shellJobKind) Logs(_ context.Context, d Desired, lines int) (string, error) {
	rec, ok, err := k.r.Done(shelljob.Spec{Deployment: d.Deployment, Generation: d.Generation, ID: d.ID})
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

// unitKind adapts the systemd driver.
type unitKind struct{ m *units.Manager }

func (k unitKind) Admit(d Desired) (string, error) {
	s := d.Spec.(*v1.SystemdUnitSpec)
	if err := units.ValidateName(s.Name); err != nil {
		return "", &v1.FieldError{Field: "spec.name", Reason: err.Error()}
	}
	return s.Name, nil
}

func toUnit(s *v1.SystemdUnitSpec) units.Unit {
	return units.Unit{Name: s.Name, Content: s.Content, Enabled: *s.Enabled, Active: *s.Active}
}

func (k unitKind) Reconcile(ctx context.Context, d Desired) (Result, error) {
	s := d.Spec.(*v1.SystemdUnitSpec)
	changes, err := k.m.Apply(ctx, toUnit(s))
	if err != nil {
		return Result{}, err
	}
	st, err := k.m.Observe(ctx, toUnit(s))
	if err != nil {
		return Result{}, err
	}
	details := map[string]string{"activeState": st.ActiveState, "subState": st.SubState, "unitFileState": st.UnitFileState}
	if *s.Active && st.ActiveState != "active" {
		return Result{Details: details}, fmt.Errorf("unit %s is %s/%s", s.Name, st.ActiveState, st.SubState)
	}
	msg := st.ActiveState
	if len(changes) > 0 {
		msg += " (" + strings.Join(changes, ", ") + ")"
	}
	return Result{Phase: v1.PhaseReady, Message: msg, Details: details}, nil
}

func (k unitKind) Remove(ctx context.Context, o localstate.Owned) error {
	return k.m.Delete(ctx, o.Claim)
}
