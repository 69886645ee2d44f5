package containers_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/agent/containers"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// withCheck is a container that writes /tmp/ok and sleeps, with the given
// health check (interval 1s so that the tests are quick).
func withCheck(n string, h containers.HealthCheck) containers.Desired {
	if h.Interval == 0 {
		h.Interval = time.Second
	}
	if h.Timeout == 0 {
		h.Timeout = 5 * time.Second
	}
	if h.Retries == 0 {
		h.Retries = 2
	}
	return containers.Desired{Deployment: "web", Resource: "app", Canonical: []byte(fmt.Sprintf("%+v", h)),
		Spec: containers.Spec{Name: n, Image: image, Command: []string{"sh", "-c"}, Args: []string{"echo ok > /tmp/ok; exec sleep 3600"},
			RestartPolicy: "always", StopTimeout: time.Second, HealthCheck: &h}}
}

// judge observes d as the agent does: running and matching, then its
// health, a check run when one is due.
func judge(ctx context.Context, p *containers.Podman, d containers.Desired) (containers.HealthState, containers.Container, error) {
	c, diff, err := p.Observe(ctx, d)
	if err != nil {
		return containers.HealthState{}, c, err
	}
	if diff != "" {
		return containers.HealthState{}, c, fmt.Errorf("container differs: %s", diff)
	}
	return p.Health(ctx, d, c)
}

// waitVerdict polls until the container's health is want.
func waitVerdict(t *testing.T, p *containers.Podman, d containers.Desired, want string) (containers.HealthState, containers.Container) {
	t.Helper()
	var s containers.HealthState
	var c containers.Container
	retry.Until(t, 30*time.Second, func() error {
		var err error
		if s, c, err = judge(context.Background(), p, d); err != nil {
			return err
		}
		if s.Verdict != want {
			return fmt.Errorf("health %s (%s), want %s", s.Verdict, s.Message, want)
		}
		return nil
	})
	return s, c
}

func TestHealthyThenUnhealthyThenHealthy(t *testing.T) {
	ctx := context.Background()
	p := containers.NewPodman("")
	n := name(t)
	d := withCheck(n, containers.HealthCheck{Command: []string{"sh", "-c", "test -f /tmp/ok"}})
	o, err := p.Reconcile(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	s, c := waitVerdict(t, p, d, containers.HealthHealthy)
	if s.Message != "running, healthy" || s.Last == nil || s.Last.ExitCode != 0 || !s.Next.After(s.Last.Start) {
		t.Fatalf("healthy state %+v", s)
	}
	// The check is not run again before its interval (however slow this
	// machine is: a new check, if any, started when it was due).
	if s2, _, err := judge(ctx, p, d); err != nil || (!s2.Last.Start.Equal(s.Last.Start) && s2.Last.Start.Before(s.Next)) {
		t.Fatalf("a check ran before it was due at %s: %+v %v", s.Next, s2, err)
	}

	// The file goes away: unhealthy after two failures in a row, with
	// the check named; the container is not restarted.
	if out, err := exec.Command("podman", "exec", n, "busybox", "rm", "/tmp/ok").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	s, c2 := waitVerdict(t, p, d, containers.HealthUnhealthy)
	if !strings.Contains(s.Message, `unhealthy: health check "sh -c test -f /tmp/ok" failed 2 times in a row`) {
		t.Fatalf("unhealthy message %q", s.Message)
	}
	if c2.ID != o.Container.ID || c2.RestartCount != c.RestartCount || !c2.Running || !c2.StartedAt.Equal(c.StartedAt) {
		t.Fatalf("the unhealthy container was restarted or replaced: %+v then %+v", c, c2)
	}
	if o, err := p.Reconcile(ctx, d); err != nil || o.Action != "none" {
		t.Fatalf("reconciling an unhealthy container: %+v %v", o, err)
	}

	// Back: healthy again at the next passing check.
	if out, err := exec.Command("podman", "exec", n, "sh", "-c", "echo ok > /tmp/ok").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	waitVerdict(t, p, d, containers.HealthHealthy)
}

func TestFailingCheckIsUnhealthyWithItsOutput(t *testing.T) {
	ctx := context.Background()
	p := containers.NewPodman("")
	for _, tc := range []struct {
		check containers.HealthCheck
		want  string
	}{
		// One word: podman runs it through the image's shell.
		{containers.HealthCheck{Command: []string{"false"}}, `unhealthy: health check "false" failed 2 times in a row`},
		{containers.HealthCheck{Shell: true, Command: []string{"test -f /www/index.html || { echo /www/index.html is missing; exit 3; }"}},
			`failed 2 times in a row; output: /www/index.html is missing`},
	} {
		n := name(t)
		d := withCheck(n, tc.check)
		if _, err := p.Reconcile(ctx, d); err != nil {
			t.Fatal(err)
		}
		s, _ := waitVerdict(t, p, d, containers.HealthUnhealthy)
		if !strings.Contains(s.Message, tc.want) {
			t.Errorf("%v: message %q, want %q", tc.check.Command, s.Message, tc.want)
		}
	}
}

func TestStartPeriodFailuresDoNotCount(t *testing.T) {
	ctx := context.Background()
	p := containers.NewPodman("")
	n := name(t)
	d := withCheck(n, containers.HealthCheck{Command: []string{"false"}, Retries: 1, StartPeriod: time.Hour})
	if _, err := p.Reconcile(ctx, d); err != nil {
		t.Fatal(err)
	}
	// Three failed checks, each one interval apart: still starting.
	var s containers.HealthState
	retry.Until(t, 30*time.Second, func() error {
		var c containers.Container
		var err error
		if s, c, err = judge(ctx, p, d); err != nil {
			return err
		}
		if s.Verdict != containers.HealthStarting {
			t.Fatalf("in the start period: %+v", s)
		}
		if len(c.Health.Log) < 3 {
			return fmt.Errorf("%d checks so far", len(c.Health.Log))
		}
		return nil
	})
	if !strings.Contains(s.Message, "start period") {
		t.Fatalf("message %q", s.Message)
	}
}

func TestChangedCheckRecreates(t *testing.T) {
	ctx := context.Background()
	p := containers.NewPodman("")
	n := name(t)
	d := withCheck(n, containers.HealthCheck{Command: []string{"false"}})
	o, err := p.Reconcile(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	d2 := withCheck(n, containers.HealthCheck{Command: []string{"sh", "-c", "test -f /tmp/ok"}})
	if _, diff, err := p.Observe(ctx, d2); err != nil || diff != "spec changed" {
		t.Fatalf("observe with a changed check: %q %v", diff, err)
	}
	o2, err := p.Reconcile(ctx, d2)
	if err != nil || o2.Action != "replaced" || o2.Container.ID == o.Container.ID {
		t.Fatalf("changed check: %+v %v", o2, err)
	}
	out, err := exec.Command("podman", "inspect", "--format", "{{json .Config.Healthcheck.Test}}", n).Output()
	if err != nil || strings.TrimSpace(string(out)) != `["CMD","sh","-c","test -f /tmp/ok"]` {
		t.Fatalf("the new container's check: %s %v", out, err)
	}
	waitVerdict(t, p, d2, containers.HealthHealthy)
}

func TestJudgeHealth(t *testing.T) {
	start := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	h := containers.HealthCheck{Command: []string{"check"}, Interval: 10 * time.Second, Timeout: 2 * time.Second, Retries: 3, StartPeriod: 30 * time.Second}
	res := func(sec, code int, out string) containers.HealthResult {
		return containers.HealthResult{Start: start.Add(time.Duration(sec) * time.Second), End: start.Add(time.Duration(sec)*time.Second + time.Second), ExitCode: code, Output: out}
	}
	ctr := func(status string, streak int, log ...containers.HealthResult) containers.Container {
		return containers.Container{Running: true, StartedAt: start, Health: containers.Health{Status: status, FailingStreak: streak, Log: log}}
	}
	for _, tc := range []struct {
		name    string
		c       containers.Container
		now     int
		verdict string
		due     bool
		next    int
		msg     string
	}{
		{"no check yet", ctr("starting", 0), 1, containers.HealthStarting, true, 1, "waiting for the first health check"},
		{"a check from before the start", ctr("healthy", 0, res(-20, 0, "")), 1, containers.HealthStarting, true, 1, "waiting for the first"},
		{"healthy, not due", ctr("healthy", 0, res(40, 0, "")), 45, containers.HealthHealthy, false, 50, "running, healthy"},
		{"healthy, due", ctr("healthy", 0, res(40, 0, "")), 50, containers.HealthHealthy, true, 50, "running, healthy"},
		{"healthy with one failure", ctr("healthy", 1, res(40, 0, ""), res(50, 1, "")), 55, containers.HealthHealthy, false, 60, "running, healthy"},
		{"failing in the start period", ctr("starting", 0, res(5, 1, "connection refused")), 6, containers.HealthStarting, false, 15, "start period of 30s; the last check failed; output: connection refused"},
		{"failing after the start period", ctr("starting", 2, res(35, 1, ""), res(45, 1, "")), 46, containers.HealthStarting, false, 55, `"check" failed 2 of 3 times`},
		{"unhealthy", ctr("unhealthy", 5, res(35, 1, ""), res(45, 1, ""), res(55, -1, "")), 56, containers.HealthUnhealthy, false, 65, `"check" failed 3 times in a row (did not finish within 2s)`},
		{"long output", ctr("unhealthy", 3, res(55, 1, strings.Repeat("x", 300)+" end\n")), 56, containers.HealthUnhealthy, false, 65, "in a row; output: …" + strings.Repeat("x", 196) + " end"},
	} {
		s := containers.JudgeHealth(h, tc.c, start.Add(time.Duration(tc.now)*time.Second))
		if s.Verdict != tc.verdict || s.Due != tc.due || !s.Next.Equal(start.Add(time.Duration(tc.next)*time.Second)) || !strings.Contains(s.Message, tc.msg) {
			t.Errorf("%s: %+v, want %s due=%v next=+%ds %q", tc.name, s, tc.verdict, tc.due, tc.next, tc.msg)
		}
	}
}

func TestCreateArgsHealthCheck(t *testing.T) {
	for _, tc := range []struct {
		h    containers.HealthCheck
		want string
	}{
		{containers.HealthCheck{Command: []string{"test", "-f", "/ok"}}, `--health-cmd ["test","-f","/ok"]`},
		{containers.HealthCheck{Command: []string{"false"}}, `--health-cmd ["CMD-SHELL","'false'"]`},
		{containers.HealthCheck{Command: []string{"it's"}}, `--health-cmd ["CMD-SHELL","'it'\\''s'"]`},
		{containers.HealthCheck{Command: []string{"test -f /ok && echo yes"}, Shell: true}, `--health-cmd ["CMD-SHELL","test -f /ok && echo yes"]`},
	} {
		tc.h.Interval, tc.h.Timeout, tc.h.Retries, tc.h.StartPeriod = 10*time.Second, 5*time.Second, 3, 0
		a := strings.Join(containers.CreateArgs(containers.Spec{Name: "n", Image: "i", HealthCheck: &tc.h}), " ")
		want := tc.want + " --health-interval 10s --health-timeout 5s --health-retries 3 --health-start-period 0s i"
		if !strings.HasSuffix(a, want) {
			t.Errorf("%v: %s\nwant it to end with %s", tc.h.Command, a, want)
		}
	}
	if a := strings.Join(containers.CreateArgs(containers.Spec{Name: "n", Image: "i"}), " "); strings.Contains(a, "--health") {
		t.Errorf("no check, yet %s", a)
	}
}
