package containers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Desired is one container as its deployment wants it.
type Desired struct {
	Deployment, Resource string
	Spec                 Spec // Labels are the user's; Harmony adds its own
	// Canonical is the canonical encoding of the resource spec; its hash
	// decides whether a running container must be replaced.
	Canonical []byte
}

// Observed summarises a reconcile.
type Observed struct {
	Container Container
	Action    string // "none", "created", "started", "replaced"
}

// ErrNotOurs: a container of that name exists without Harmony's labels.
var ErrNotOurs = errors.New("a container of that name exists and is not managed by Harmony")

// SpecHash is the label value that identifies a spec.
func SpecHash(canonical []byte) string {
	sum := sha256.Sum256(canonical)
	return hex.EncodeToString(sum[:8])
}

// Reconcile makes the container match d: create it when missing, start it
// when stopped (by hand, or after a crash podman did not restart), replace
// it gracefully when its spec changed, and leave a healthy one alone.
func (p *Podman) Reconcile(ctx context.Context, d Desired) (Observed, error) {
	spec := d.Spec
	spec.Labels = map[string]string{}
	for k, v := range d.Spec.Labels {
		spec.Labels[k] = v
	}
	hash := SpecHash(d.Canonical)
	spec.Labels[LabelDeployment] = d.Deployment
	spec.Labels[LabelResource] = d.Resource
	spec.Labels[LabelSpecHash] = hash

	c, err := p.Inspect(ctx, spec.Name)
	action := "none"
	switch {
	case errors.Is(err, ErrNotFound):
		if err := p.Create(ctx, spec); err != nil {
			return Observed{}, err
		}
		action = "created"
	case err != nil:
		return Observed{}, err
	case c.Labels[LabelDeployment] == "":
		return Observed{}, fmt.Errorf("container %q: %w", spec.Name, ErrNotOurs)
	case c.Labels[LabelSpecHash] != hash:
		if c.Running {
			if err := p.Stop(ctx, spec.Name, spec.StopTimeout); err != nil {
				return Observed{}, fmt.Errorf("stop before replacing: %w", err)
			}
		}
		if err := p.Remove(ctx, spec.Name); err != nil {
			return Observed{}, err
		}
		if err := p.Create(ctx, spec); err != nil {
			return Observed{}, err
		}
		action = "replaced"
	}
	if c, err = p.Inspect(ctx, spec.Name); err != nil {
		return Observed{}, err
	}
	if !c.Running {
		if err := p.Start(ctx, spec.Name); err != nil {
			return Observed{Container: c, Action: action}, err
		}
		if action == "none" {
			action = "started"
		}
		if c, err = p.Inspect(ctx, spec.Name); err != nil {
			return Observed{}, err
		}
	}
	if !c.Running {
		return Observed{Container: c, Action: action}, fmt.Errorf("container %q is %s (exit code %d) after start", spec.Name, c.State, c.ExitCode)
	}
	return Observed{Container: c, Action: action}, nil
}

// RemoveOwned stops (gracefully) and removes a container Harmony created.
func (p *Podman) RemoveOwned(ctx context.Context, name string, stopTimeout time.Duration) error {
	c, err := p.Inspect(ctx, name)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if c.Labels[LabelDeployment] == "" {
		return fmt.Errorf("container %q: %w; left alone", name, ErrNotOurs)
	}
	if c.Running {
		if err := p.Stop(ctx, name, stopTimeout); err != nil {
			return err
		}
	}
	return p.Remove(ctx, name)
}

// Details are the status fields of a container.
func Details(c Container) map[string]string {
	d := map[string]string{"containerId": shortID(c.ID), "state": c.State, "restartCount": strconv.Itoa(c.RestartCount)}
	if !c.StartedAt.IsZero() {
		d["startedAt"] = c.StartedAt.UTC().Format(time.RFC3339)
	}
	return d
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// Observe compares the container with d without changing anything; diff is
// empty when it matches and runs.
func (p *Podman) Observe(ctx context.Context, d Desired) (Container, string, error) {
	c, err := p.Inspect(ctx, d.Spec.Name)
	switch {
	case errors.Is(err, ErrNotFound):
		return Container{}, "missing", nil
	case err != nil:
		return Container{}, "", err
	case c.Labels[LabelDeployment] == "":
		return c, "", fmt.Errorf("container %q: %w", d.Spec.Name, ErrNotOurs)
	case c.Labels[LabelSpecHash] != SpecHash(d.Canonical):
		return c, "spec changed", nil
	case !c.Running:
		return c, "not running (" + c.State + ")", nil
	}
	return c, "", nil
}
