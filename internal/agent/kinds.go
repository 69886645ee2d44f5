package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/agent/files"
	"github.com/harmony-fleet/harmony/internal/agent/localstate"
	"github.com/harmony-fleet/harmony/internal/agent/shelljob"
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
