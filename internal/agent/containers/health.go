package containers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// Health checks. Podman records a container's checks (status, failing
// streak, the last results with their output) but runs them on a timer only
// where systemd is PID 1, through transient systemd timers. The agent does
// not depend on that: it runs `podman healthcheck run` itself whenever the
// newest recorded check is older than the interval (on a systemd machine,
// podman's own timer keeps the record fresh and the agent runs none), and
// judges the container from `podman inspect`'s State.Health, never from
// the command's text output.
//
//	          start
//	            │
//	            v            a check passes
//	        starting ─────────────────────────> healthy <──┐
//	            │                                  │       │ a check
//	            │ retries failures in a row        │       │ passes
//	            │ (none counted in the start       │       │
//	            v  period)                         v       │
//	        unhealthy <──────────────────── retries failures in a row
//
// Podman keeps the status and the failing streak; the agent only decides
// when a check is due and what the record means (JudgeHealth).
//
// A container is Ready only while healthy. Harmony does not restart an
// unhealthy container: restartPolicy is about exits, as in podman; the
// status says what failed.

// HealthCheck is a container's health check as podman create takes it.
type HealthCheck struct {
	Command     []string // exec form, or one script with Shell
	Shell       bool
	Interval    time.Duration
	Timeout     time.Duration
	Retries     int
	StartPeriod time.Duration
}

// String names the check in messages.
func (h HealthCheck) String() string {
	return strings.Join(h.Command, " ")
}

// healthCmd is the --health-cmd value: a JSON array, which podman reads as
// the exec form when it has two or more words and as a /bin/sh -c script
// when it starts with CMD-SHELL. A one-word exec form cannot be written
// (podman turns a one-element array into a script), so one word runs as a
// script of that word, quoted: the same command, through the image's shell.
func (h HealthCheck) healthCmd() string {
	var test []string
	switch {
	case h.Shell:
		test = []string{"CMD-SHELL", strings.Join(h.Command, " ")}
	case len(h.Command) == 1:
		test = []string{"CMD-SHELL", shellQuote(h.Command[0])}
	default:
		test = h.Command
	}
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(test) // a []string always encodes
	return strings.TrimSuffix(b.String(), "\n")
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func (h HealthCheck) createArgs() []string {
	return []string{"--health-cmd", h.healthCmd(),
		"--health-interval", h.Interval.String(),
		"--health-timeout", h.Timeout.String(),
		"--health-retries", fmt.Sprint(h.Retries),
		"--health-start-period", h.StartPeriod.String()}
}

// Health is what podman records of a container's checks.
type Health struct {
	Status        string // starting, healthy, unhealthy; "" without a check
	FailingStreak int
	Log           []HealthResult // oldest first, the last few
}

// HealthResult is one recorded check.
type HealthResult struct {
	Start, End time.Time
	ExitCode   int // -1: podman stopped waiting (timeout) or could not run it
	Output     string
}

type healthJSON struct {
	Status        string `json:"Status"`
	FailingStreak int    `json:"FailingStreak"`
	Log           []struct {
		Start    string `json:"Start"`
		End      string `json:"End"`
		ExitCode int    `json:"ExitCode"`
		Output   string `json:"Output"`
	} `json:"Log"`
}

func (h *healthJSON) health() Health {
	if h == nil {
		return Health{}
	}
	out := Health{Status: h.Status, FailingStreak: h.FailingStreak}
	for _, l := range h.Log {
		start, _ := time.Parse(time.RFC3339Nano, l.Start)
		end, _ := time.Parse(time.RFC3339Nano, l.End)
		out.Log = append(out.Log, HealthResult{Start: start, End: end, ExitCode: l.ExitCode, Output: l.Output})
	}
	return out
}

// Health verdicts.
const (
	HealthStarting  = "starting"  // no passing check since the start yet
	HealthHealthy   = "healthy"   // the last checks passed (fewer than retries failed since)
	HealthUnhealthy = "unhealthy" // retries checks in a row failed
)

// HealthState is the judgement of a running container's health.
type HealthState struct {
	Verdict string // HealthStarting, HealthHealthy or HealthUnhealthy
	// Due: a check should run now; Next: when the next one is due.
	Due     bool
	Next    time.Time
	Message string
	Last    *HealthResult // the newest check since the container started
}

// JudgeHealth decides, without I/O, what a running container's record says
// at now. Checks recorded before the container's current start do not
// count, so a restarted container is starting again until a check passes.
func JudgeHealth(h HealthCheck, c Container, now time.Time) HealthState {
	var last *HealthResult
	for i := range c.Health.Log {
		r := &c.Health.Log[i]
		if r.Start.Before(c.StartedAt) || (last != nil && !r.Start.After(last.Start)) {
			continue
		}
		last = r
	}
	if last == nil {
		return HealthState{Verdict: HealthStarting, Due: true, Next: now,
			Message: fmt.Sprintf("running; waiting for the first health check (%s)", h)}
	}
	s := HealthState{Last: last, Next: last.Start.Add(h.Interval)}
	s.Due = !now.Before(s.Next)
	switch c.Health.Status {
	case HealthHealthy:
		s.Verdict, s.Message = HealthHealthy, "running, healthy"
	case HealthUnhealthy:
		s.Verdict = HealthUnhealthy
		// The check's retries, not podman's growing streak: the message
		// (and so the status written) stays the same while it fails on.
		s.Message = fmt.Sprintf("unhealthy: health check %q failed %d times in a row%s", h.String(), h.Retries, describe(h, *last))
	default:
		s.Verdict = HealthStarting
		if last.ExitCode == 0 {
			s.Message = fmt.Sprintf("running; waiting for the health check (%s)", h)
		} else if c.StartedAt.Add(h.StartPeriod).After(last.Start) {
			s.Message = fmt.Sprintf("running; in the health check's start period of %s; the last check failed%s", h.StartPeriod, describe(h, *last))
		} else {
			s.Message = fmt.Sprintf("running; health check %q failed %d of %d times%s", h.String(), c.Health.FailingStreak, h.Retries, describe(h, *last))
		}
	}
	return s
}

// describe is a failed result for a status message: a timeout, and the end
// of its output on one line. (Podman records any other failure as exit
// code 1, so the code says nothing more.)
func describe(h HealthCheck, r HealthResult) string {
	var what string
	if r.ExitCode < 0 {
		what = fmt.Sprintf(" (did not finish within %s)", h.Timeout)
	}
	out := strings.Join(strings.Fields(r.Output), " ")
	if out == "" {
		return what
	}
	if len(out) > 200 {
		out = "…" + out[len(out)-200:]
	}
	return what + "; output: " + out
}

// ErrHealthCheckHung: podman healthcheck run did not return within the
// check's timeout and a grace period (podman before 4.4 waits for a check
// that outlives its timeout); it was stopped and nothing was recorded.
var ErrHealthCheckHung = errors.New("health check did not return")

// healthGrace is how long past its timeout the agent waits for a check.
const healthGrace = 10 * time.Second

// RunHealthCheck runs the container's check once and lets podman record the
// result. A check that ran, passing or failing, is not an error (exit
// codes 0 and 1); the result is read with Inspect.
func (p *Podman) RunHealthCheck(ctx context.Context, name string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout+healthGrace)
	defer cancel()
	_, err := p.run(ctx, "healthcheck", "run", name)
	var ee *exec.ExitError
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("%s: %w within %s", name, ErrHealthCheckHung, timeout+healthGrace)
	case errors.As(err, &ee) && ee.ExitCode() == 1:
		return nil
	default:
		return err
	}
}

// Health judges a running container that matches d and has a health check:
// when a check is due it runs one and reads the record again. c is what
// Observe returned; the container returned is the newest record.
func (p *Podman) Health(ctx context.Context, d Desired, c Container) (HealthState, Container, error) {
	h := *d.Spec.HealthCheck
	s := JudgeHealth(h, c, time.Now())
	if !s.Due {
		return s, c, nil
	}
	runErr := p.RunHealthCheck(ctx, d.Spec.Name, h.Timeout)
	c2, err := p.Inspect(ctx, d.Spec.Name)
	if err != nil {
		return s, c, err
	}
	s2 := JudgeHealth(h, c2, time.Now())
	if s2.Last == nil || (s.Last != nil && !s2.Last.Start.After(s.Last.Start)) {
		// Nothing new was recorded: the check could not run.
		if runErr == nil {
			runErr = errors.New("podman recorded no result")
		}
		return s, c2, fmt.Errorf("health check %q: %w", h.String(), runErr)
	}
	return s2, c2, nil
}
