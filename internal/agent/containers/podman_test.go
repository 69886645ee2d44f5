package containers_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/agent/containers"
	"github.com/harmony-fleet/harmony/internal/testutil/podmantest"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

const image = podmantest.Image

func TestMain(m *testing.M) {
	if err := podmantest.Setup(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

func name(t *testing.T) string {
	n := podmantest.Name(t)
	t.Cleanup(func() { _ = exec.Command("podman", "rm", "-f", "-t", "0", n).Run() })
	return n
}

func desired(n string, env map[string]string) containers.Desired {
	return containers.Desired{Deployment: "web", Resource: "app", Canonical: []byte(fmt.Sprint(env)),
		Spec: containers.Spec{Name: n, Image: image, Command: []string{"sleep"}, Args: []string{"3600"}, Env: env,
			RestartPolicy: "always", StopSignal: "SIGTERM", StopTimeout: time.Second, Labels: map[string]string{"team": "edge"}}}
}

func TestReconcileLifecycle(t *testing.T) {
	ctx := context.Background()
	p := containers.NewPodman("")
	n := name(t)
	d := desired(n, map[string]string{"MODE": "a"})

	o, err := p.Reconcile(ctx, d)
	if err != nil || o.Action != "created" || !o.Container.Running {
		t.Fatalf("first reconcile: %+v %v", o, err)
	}
	if o.Container.Labels["team"] != "edge" || o.Container.Labels[containers.LabelDeployment] != "web" {
		t.Fatalf("labels %v", o.Container.Labels)
	}
	id := o.Container.ID
	env, _ := exec.Command("podman", "exec", n, "env").Output()
	if !strings.Contains(string(env), "MODE=a") {
		t.Fatalf("env inside: %s", env)
	}

	// Same spec: nothing is recreated.
	o, err = p.Reconcile(ctx, d)
	if err != nil || o.Action != "none" || o.Container.ID != id {
		t.Fatalf("unchanged spec: %+v %v", o, err)
	}

	// Stopped by hand: started again, same container.
	if err := exec.Command("podman", "stop", "-t", "0", n).Run(); err != nil {
		t.Fatal(err)
	}
	o, err = p.Reconcile(ctx, d)
	if err != nil || o.Action != "started" || o.Container.ID != id || !o.Container.Running {
		t.Fatalf("after a manual stop: %+v %v", o, err)
	}

	// Changed env: replaced once, gracefully (sleep ignores SIGTERM as PID
	// 1, so the grace period of 1s runs out and it is killed).
	d2 := desired(n, map[string]string{"MODE": "b"})
	start := time.Now()
	o, err = p.Reconcile(ctx, d2)
	if err != nil || o.Action != "replaced" || o.Container.ID == id {
		t.Fatalf("changed spec: %+v %v", o, err)
	}
	if time.Since(start) > 30*time.Second {
		t.Fatal("replacement took longer than the grace period allows")
	}
	env, _ = exec.Command("podman", "exec", n, "env").Output()
	if !strings.Contains(string(env), "MODE=b") {
		t.Fatalf("env after replace: %s", env)
	}
	if o2, _ := p.Reconcile(ctx, d2); o2.Action != "none" || o2.Container.ID != o.Container.ID {
		t.Fatalf("re-applying the new spec recreated it: %+v", o2)
	}
	dt := containers.Details(o.Container)
	if dt["containerId"] == "" || dt["state"] != "running" || dt["startedAt"] == "" || dt["restartCount"] != "0" {
		t.Fatalf("details %v", dt)
	}

	if err := p.RemoveOwned(ctx, n, time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Inspect(ctx, n); !errors.Is(err, containers.ErrNotFound) {
		t.Fatalf("after remove: %v", err)
	}
	if err := p.RemoveOwned(ctx, n, time.Second); err != nil {
		t.Fatalf("removing a missing container: %v", err)
	}
}

func TestForeignContainerIsLeftAlone(t *testing.T) {
	ctx := context.Background()
	p := containers.NewPodman("")
	n := name(t)
	if out, err := exec.Command("podman", "run", "-d", "--name", n, image, "sleep", "3600").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if _, err := p.Reconcile(ctx, desired(n, nil)); !errors.Is(err, containers.ErrNotOurs) {
		t.Fatalf("reconcile over a foreign container: %v", err)
	}
	if err := p.RemoveOwned(ctx, n, time.Second); !errors.Is(err, containers.ErrNotOurs) {
		t.Fatalf("remove of a foreign container: %v", err)
	}
	c, err := p.Inspect(ctx, n)
	if err != nil || !c.Running {
		t.Fatalf("the foreign container was disturbed: %+v %v", c, err)
	}
}

func TestLogs(t *testing.T) {
	ctx := context.Background()
	p := containers.NewPodman("")
	n := name(t)
	d := containers.Desired{Deployment: "web", Resource: "echo", Canonical: []byte("x"),
		Spec: containers.Spec{Name: n, Image: image, Command: []string{"sh", "-c"},
			Args: []string{"for i in 1 2 3 4 5; do echo line$i; done; sleep 3600"}, StopTimeout: time.Second}}
	if _, err := p.Reconcile(ctx, d); err != nil {
		t.Fatal(err)
	}
	var out string
	retry.Until(t, 20*time.Second, func() error {
		var err error
		if out, err = p.Logs(ctx, n, 2); err != nil {
			return err
		}
		if !strings.Contains(out, "line5") {
			return fmt.Errorf("logs so far: %q", out)
		}
		return nil
	})
	if strings.TrimSpace(out) != "line4\nline5" {
		t.Fatalf("last 2 lines = %q", out)
	}
}

func TestCreateArgsDeterministic(t *testing.T) {
	s := containers.Spec{Name: "n", Image: "i", Env: map[string]string{"B": "2", "A": "1", "C": "3"},
		Labels: map[string]string{"y": "1", "x": "2"}, Ports: []containers.Port{{ContainerPort: 80, HostPort: 8080}},
		Volumes: []containers.Volume{{HostPath: "/srv/a", ContainerPath: "/a", ReadOnly: true}}, Command: []string{"/bin/app", "--x"}}
	a := strings.Join(containers.CreateArgs(s), " ")
	for i := 0; i < 20; i++ {
		if b := strings.Join(containers.CreateArgs(s), " "); b != a {
			t.Fatalf("arguments differ:\n%s\n%s", a, b)
		}
	}
	for _, want := range []string{"--env A=1 --env B=2 --env C=3", "--publish 8080:80/tcp", "--volume /srv/a:/a:ro", `--entrypoint ["/bin/app","--x"]`} {
		if !strings.Contains(a, want) {
			t.Errorf("%q missing from %s", want, a)
		}
	}
}
