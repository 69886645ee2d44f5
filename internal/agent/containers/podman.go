// Package containers manages Container resources through the podman CLI,
// reading only its JSON output. Containers the agent creates carry labels
// with their deployment, resource id and a hash of their spec: a container
// whose spec did not change is never recreated, a changed one is replaced
// gracefully (stop signal, grace period, kill), and a container without
// Harmony's labels is never touched.
package containers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Labels Harmony puts on the containers it creates.
const (
	LabelDeployment = "io.harmony.deployment"
	LabelResource   = "io.harmony.resource"
	LabelSpecHash   = "io.harmony.spec-hash"
)

// ErrNotFound: no container of that name.
var ErrNotFound = errors.New("container not found")

// ErrNotInstalled: the podman binary is not on this machine.
var ErrNotInstalled = errors.New("podman is not installed on this machine")

// Port publishes a container port.
type Port struct {
	ContainerPort, HostPort int
	Protocol                string
}

// Volume mounts a host path.
type Volume struct {
	HostPath, ContainerPath string
	ReadOnly                bool
}

// Spec is what podman create needs.
type Spec struct {
	Name, Image   string
	Command, Args []string
	Env           map[string]string
	Ports         []Port
	Volumes       []Volume
	RestartPolicy string
	Labels        map[string]string
	StopSignal    string
	StopTimeout   time.Duration
	Privileged    bool
	HostNetwork   bool
	HealthCheck   *HealthCheck // nil: none
	// SecretEnv are variables whose values come from secrets: podman
	// reads them from a file only it and root can read, removed once the
	// container is created, so that they never show on a command line
	// (nor in the errors that quote one).
	SecretEnv map[string]string
}

// Container is what podman reports.
type Container struct {
	ID, Name, Image string
	State           string
	Running         bool
	RestartCount    int
	StartedAt       time.Time
	ExitCode        int
	Labels          map[string]string
	Health          Health // the record of its health checks, if it has one
}

// Podman runs the podman CLI.
type Podman struct{ bin string }

// NewPodman uses the given binary ("" means podman from PATH).
func NewPodman(bin string) *Podman {
	if bin == "" {
		bin = "podman"
	}
	return &Podman{bin: bin}
}

// Installed returns ErrNotInstalled (wrapped) when the podman binary cannot
// be found (on PATH, or at the path given).
func (p *Podman) Installed() error {
	if _, err := exec.LookPath(p.bin); err != nil {
		return fmt.Errorf("%s: %w", p.bin, ErrNotInstalled)
	}
	return nil
}

func (p *Podman) run(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, p.bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 500 {
			msg = msg[:500] + "…"
		}
		return stdout.Bytes(), fmt.Errorf("podman %s: %w: %s", args[0], err, msg)
	}
	return stdout.Bytes(), nil
}

// Exists reports whether a container of that name exists (by exit status).
func (p *Podman) Exists(ctx context.Context, name string) (bool, error) {
	err := exec.CommandContext(ctx, p.bin, "container", "exists", name).Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &ee) && ee.ExitCode() == 1:
		return false, nil
	default:
		return false, fmt.Errorf("podman container exists: %w", err)
	}
}

type inspectJSON struct {
	ID        string `json:"Id"`
	Name      string `json:"Name"`
	ImageName string `json:"ImageName"`
	State     struct {
		Status    string      `json:"Status"`
		Running   bool        `json:"Running"`
		StartedAt time.Time   `json:"StartedAt"`
		ExitCode  int         `json:"ExitCode"`
		Health    *healthJSON `json:"Health"`
		// Healthcheck is where podman before 4 kept it.
		Healthcheck *healthJSON `json:"Healthcheck"`
	} `json:"State"`
	RestartCount int `json:"RestartCount"`
	Config       struct {
		Labels map[string]string `json:"Labels"`
	} `json:"Config"`
}

// Inspect returns a container's state; ErrNotFound when there is none.
func (p *Podman) Inspect(ctx context.Context, name string) (Container, error) {
	ok, err := p.Exists(ctx, name)
	if err != nil {
		return Container{}, err
	}
	if !ok {
		return Container{}, fmt.Errorf("%s: %w", name, ErrNotFound)
	}
	out, err := p.run(ctx, "container", "inspect", name)
	if err != nil {
		return Container{}, err
	}
	var list []inspectJSON
	if err := json.Unmarshal(out, &list); err != nil || len(list) != 1 {
		return Container{}, fmt.Errorf("podman container inspect %s: unexpected output: %v", name, err)
	}
	c := list[0]
	health := c.State.Health
	if health == nil {
		health = c.State.Healthcheck
	}
	return Container{ID: c.ID, Name: c.Name, Image: c.ImageName, State: c.State.Status, Running: c.State.Running,
		RestartCount: c.RestartCount, StartedAt: c.State.StartedAt, ExitCode: c.State.ExitCode, Labels: c.Config.Labels,
		Health: health.health()}, nil
}

// CreateArgs is the podman create command line of s; the same spec always
// gives the same arguments.
func CreateArgs(s Spec) []string {
	args := []string{"create", "--name", s.Name}
	for _, k := range sortedKeys(s.Env) {
		args = append(args, "--env", k+"="+s.Env[k])
	}
	for _, k := range sortedKeys(s.Labels) {
		args = append(args, "--label", k+"="+s.Labels[k])
	}
	for _, pt := range s.Ports {
		proto := pt.Protocol
		if proto == "" {
			proto = "tcp"
		}
		if pt.HostPort > 0 {
			args = append(args, "--publish", fmt.Sprintf("%d:%d/%s", pt.HostPort, pt.ContainerPort, proto))
		} else {
			args = append(args, "--publish", fmt.Sprintf("%d/%s", pt.ContainerPort, proto))
		}
	}
	for _, v := range s.Volumes {
		m := v.HostPath + ":" + v.ContainerPath
		if v.ReadOnly {
			m += ":ro"
		}
		args = append(args, "--volume", m)
	}
	if s.RestartPolicy != "" {
		args = append(args, "--restart", s.RestartPolicy)
	}
	if s.StopSignal != "" {
		args = append(args, "--stop-signal", s.StopSignal)
	}
	args = append(args, "--stop-timeout", strconv.Itoa(int(s.StopTimeout/time.Second)))
	if s.Privileged {
		args = append(args, "--privileged")
	}
	if s.HostNetwork {
		args = append(args, "--network", "host")
	}
	if s.HealthCheck != nil {
		args = append(args, s.HealthCheck.createArgs()...)
	}
	if len(s.Command) > 0 {
		ep, _ := json.Marshal(s.Command)
		args = append(args, "--entrypoint", string(ep))
	}
	args = append(args, s.Image)
	return append(args, s.Args...)
}

// Create creates (does not start) a container.
func (p *Podman) Create(ctx context.Context, s Spec) error {
	if s.Name == "" || s.Image == "" {
		return errors.New("container name and image are required")
	}
	args := CreateArgs(s)
	if len(s.SecretEnv) > 0 {
		f, err := writeEnvFile(s.SecretEnv)
		if err != nil {
			return err
		}
		defer os.Remove(f)
		// Before the image: "create [flags] IMAGE [COMMAND...]".
		args = append([]string{args[0], "--env-file", f}, args[1:]...)
	}
	_, err := p.run(ctx, args...)
	return err
}

// writeEnvFile writes KEY=VALUE lines to a new file of mode 0600. podman's
// env files hold one line per variable, so a value may not span lines.
func writeEnvFile(env map[string]string) (string, error) {
	var b strings.Builder
	for _, k := range sortedKeys(env) {
		if strings.ContainsAny(env[k], "\n\r\x00") {
			return "", fmt.Errorf("secretEnv %s: a value given to a container's environment must be one line (use a File with contentFrom for more)", k)
		}
		b.WriteString(k + "=" + env[k] + "\n")
	}
	f, err := os.CreateTemp("", "harmony-env-*")
	if err != nil {
		return "", err
	}
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		os.Remove(f.Name())
		return "", err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// Start starts a container.
func (p *Podman) Start(ctx context.Context, name string) error {
	_, err := p.run(ctx, "start", name)
	return err
}

// Stop sends the container's stop signal and kills it after timeout.
func (p *Podman) Stop(ctx context.Context, name string, timeout time.Duration) error {
	_, err := p.run(ctx, "stop", "--time", strconv.Itoa(int(timeout/time.Second)), name)
	return err
}

// Remove force-removes a container; a missing one is not an error.
func (p *Podman) Remove(ctx context.Context, name string) error {
	ok, err := p.Exists(ctx, name)
	if err != nil || !ok {
		return err
	}
	_, err = p.run(ctx, "rm", "--force", "--time", "0", name)
	return err
}

// Logs returns the last lines of a container's output.
func (p *Podman) Logs(ctx context.Context, name string, lines int) (string, error) {
	out, err := p.run(ctx, "logs", "--tail", strconv.Itoa(lines), name)
	return string(out), err
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
