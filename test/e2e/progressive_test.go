package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/api/httpapi"
	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/testutil/podmantest"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// rolloutFleet is a server on its defaults (TLS, NATS open only to
// enrolled identities) and ten enrolled agents on this machine, each with
// its own files (--root-dir) and containers (--container-prefix), as
// docs/operator.md's rollout section sets them up.
type rolloutFleet struct {
	t                  *testing.T
	cli                func(args ...string) (string, error)
	https              *http.Client
	base, dir, ca      string
	natsAddr, httpAddr string
	server             *proc
	ids                []string
}

func newRolloutFleet(t *testing.T, n int) *rolloutFleet {
	if err := podmantest.Setup(); err != nil {
		t.Fatal(err)
	}
	f := &rolloutFleet{t: t, dir: t.TempDir(), natsAddr: fmt.Sprintf("127.0.0.1:%d", freePort(t)), httpAddr: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	f.ca = filepath.Join(f.dir, "server", "tls", "ca.pem")
	f.base = "https://" + f.httpAddr
	f.startServer()
	f.cli = cliAt(f.base, f.ca)
	f.https = httpsClient(t, f.ca)
	for i := range n {
		id := fmt.Sprintf("dev-%02d", i)
		f.ids = append(f.ids, id)
		t.Cleanup(func() { _ = exec.Command("podman", "rm", "-f", "-t", "0", f.containerName(id)).Run() })
		token := strings.TrimSpace(f.must(f.cli("token", "create", "--device", id)))
		seed := filepath.Join(f.dir, id, "identity.nk")
		f.must(f.cli("enroll", "--id", id, "--nkey", seed, "--token", token))
		startHarmony(t, "agent", "--http", "127.0.0.1:0", "--id", id, "--nats-url", "nats://"+f.natsAddr, "--nats-ca", f.ca,
			"--nats-nkey", seed, "--state-dir", filepath.Join(f.dir, id, "state"), "--root-dir", filepath.Join(f.dir, id, "root"),
			"--container-prefix", id+"-", "--label", "site=home", "--heartbeat-interval", "1s", "--resync-interval", "2s",
			"--retry-initial", "200ms", "--retry-max", "2s")
	}
	return f
}

// startServer starts the server with its own defaults: the suite's
// environment turns TLS and NATS authentication off, this one does not.
func (f *rolloutFleet) startServer() {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HARMONY_TLS=") && !strings.HasPrefix(kv, "HARMONY_NATS_AUTH=") {
			env = append(env, kv)
		}
	}
	f.server = startHarmonyEnv(f.t, env, "server", "--data-dir", filepath.Join(f.dir, "server"), "--nats", f.natsAddr, "--http", f.httpAddr)
	waitTLSReady(f.t, f.base, f.ca)
}

func (f *rolloutFleet) must(out string, err error) string {
	f.t.Helper()
	if err != nil {
		f.t.Fatal(err)
	}
	return out
}

// containerName is the podman name of device id's container "app".
func (f *rolloutFleet) containerName(id string) string { return id + "-web-app" }

// apply stores deployment web: a File and a Container carrying version,
// the container's image and command, and the rollout.
func (f *rolloutFleet) apply(version, command, rollout string, flags ...string) (string, error) {
	image := podmantest.Image
	if command == exits {
		image = badImage
	}
	path := writeManifest(f.t, "web", "site: home", fmt.Sprintf(`
  - id: conf
    kind: File
    spec: {path: /etc/harmony/app.conf, content: "version=%s\n"}
  - id: app
    kind: Container
    spec: {image: %s, command: %s, env: {VERSION: "%s"}, stopTimeoutSeconds: 1}
  rollout:%s`, version, image, command, version, rollout))
	return f.cli(append([]string{"apply", "-f", path}, flags...)...)
}

// devices reads every matched device's line of web.
func (f *rolloutFleet) devices() map[string]httpapi.DeploymentDevice {
	f.t.Helper()
	var v httpapi.DeploymentView
	if err := json.Unmarshal([]byte(getWithToken(f.t, f.https, f.base+"/api/v1/deployments/web")), &v); err != nil {
		f.t.Fatal(err)
	}
	out := map[string]httpapi.DeploymentDevice{}
	for _, d := range v.Status.Devices {
		out[d.Device] = d
	}
	return out
}

// readyAt waits until exactly the devices of want are Ready at gen and
// every other device reports an earlier generation.
func (f *rolloutFleet) readyAt(gen int64, want ...string) {
	f.t.Helper()
	in := map[string]bool{}
	for _, id := range want {
		in[id] = true
	}
	retry.Until(f.t, 120*time.Second, func() error {
		devs := f.devices()
		for _, id := range f.ids {
			d := devs[id]
			switch {
			case in[id] && (d.ObservedGeneration != gen || d.Phase != v1.PhaseReady):
				return fmt.Errorf("%s: generation %d %s, want Ready at %d", id, d.ObservedGeneration, d.Phase, gen)
			case !in[id] && d.ObservedGeneration >= gen:
				return fmt.Errorf("%s observed generation %d, which only %v may have", id, d.ObservedGeneration, want)
			}
		}
		return nil
	})
}

// neverAt checks that none of ids observes gen (or later) for a while.
func (f *rolloutFleet) neverAt(gen int64, d time.Duration, ids ...string) {
	f.t.Helper()
	retry.Holds(f.t, d, func() error {
		devs := f.devices()
		for _, id := range ids {
			if g := devs[id].ObservedGeneration; g >= gen {
				return fmt.Errorf("%s observed generation %d", id, g)
			}
		}
		return nil
	})
}

func (f *rolloutFleet) status() v1.RolloutStatus {
	f.t.Helper()
	var st v1.RolloutStatus
	if err := json.Unmarshal([]byte(f.must(f.cli("rollout", "status", "deployment/web", "-o", "json"))), &st); err != nil {
		f.t.Fatal(err)
	}
	return st
}

func (f *rolloutFleet) waitPhase(phase string) v1.RolloutStatus {
	f.t.Helper()
	var st v1.RolloutStatus
	retry.Until(f.t, 120*time.Second, func() error {
		if st = f.status(); st.Phase != phase {
			return fmt.Errorf("rollout %s (%s), want %s", st.Phase, st.Reason, phase)
		}
		return nil
	})
	return st
}

// page is a dashboard page as a signed-in admin sees it.
func (f *rolloutFleet) page(path string) string {
	f.t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second, Transport: f.https.Transport}
	resp, err := c.PostForm(f.base+"/login", url.Values{"token": {e2eToken}, "next": {path}})
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		f.t.Fatalf("sign in and GET %s: %s\n%.300s", path, resp.Status, b)
	}
	return string(b)
}

// fileOf and envOf are what device id runs.
func (f *rolloutFleet) fileOf(id string) string {
	b, _ := os.ReadFile(filepath.Join(f.dir, id, "root", "etc", "harmony", "app.conf"))
	return string(b)
}

func (f *rolloutFleet) imageOf(id string) string {
	out, _ := exec.Command("podman", "container", "inspect", "--format", "{{.ImageName}}", f.containerName(id)).Output()
	return strings.TrimSpace(string(out))
}

func (f *rolloutFleet) envOf(id string) string {
	out, _ := exec.Command("podman", "container", "inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}", f.containerName(id)).Output()
	return string(out)
}

// badImage is the test image under another name: the bad change's.
const badImage = "localhost/harmony-busybox:rollout-bad"

const (
	sleeps = `["sleep", "3600"]`
	exits  = `["sh", "-c", "exit 3"]`
	// staged is the acceptance's rollout: one device, then 30 %, then
	// the rest, each device Ready for 6 s before the next batch.
	staged = `
    batches: [{count: 1}, {percent: 30}, {percent: 100}]
    gate: {readyForSeconds: 6, progressDeadlineSeconds: 60}`
)

// The progressive rollout acceptance with 10 real agents, podman, and the
// server on its defaults.
func TestProgressiveRollout(t *testing.T) {
	f := newRolloutFleet(t, 10)
	batch1, batch2, batch3 := f.ids[:1], f.ids[1:4], f.ids[4:]
	if out, err := exec.Command("podman", "tag", podmantest.Image, badImage).CombinedOutput(); err != nil {
		t.Fatalf("podman tag: %s %v", out, err)
	}
	t.Cleanup(func() { _ = exec.Command("podman", "untag", podmantest.Image, badImage).Run() })
	start := time.Now()
	step := func(what string) { t.Logf("%6.1fs %s", time.Since(start).Seconds(), what) }

	// The first generation goes everywhere at once: there is nothing to
	// protect yet.
	f.must(f.apply("1", sleeps, staged))
	f.readyAt(1, f.ids...)
	step("generation 1 Ready on every device")

	// Bad input: each refused naming its field; nothing stored.
	for _, c := range []struct{ rollout, field string }{
		{"\n    batches: [{count: 1}, {count: 2}]", "spec.rollout.batches"},
		{"\n    batches: [{percent: 100}]\n    successThreshold: 101", "spec.rollout.successThreshold"},
		{"\n    batches: [{percent: 100}]\n    gate: {readyForSeconds: -5}", "spec.rollout.gate.readyForSeconds"},
	} {
		if _, err := f.apply("9", sleeps, c.rollout); err == nil || !strings.Contains(err.Error(), c.field) {
			t.Fatalf("rollout %q: %v, want a refusal naming %s", c.rollout, err, c.field)
		}
	}
	if _, err := f.cli("rollout", "undo", "deployment/web", "--to-generation", "0"); err == nil || !strings.Contains(err.Error(), "toGeneration") {
		t.Fatalf("undo with nothing kept before: %v", err)
	}

	// Generation 2: batch 1 alone, then batch 2 only after the gate.
	f.must(f.apply("2", sleeps, staged))
	f.readyAt(2, batch1...)
	step("generation 2 Ready on batch 1")
	st := f.status()
	if st.Phase != v1.RolloutProgressing || st.Batch != 1 || len(st.Batches) != 3 || st.Batches[0].Devices != 1 || st.Batches[1].Devices != 3 || st.Batches[2].Devices != 6 {
		t.Fatalf("rollout status after batch 1: %+v", st)
	}
	out := f.must(f.cli("rollout", "status", "deployment/web"))
	if !strings.Contains(out, "batch 1 of 3") {
		t.Fatalf("rollout status says:\n%s", out)
	}
	page := f.page("/deployments/web")
	if !strings.Contains(page, "batch 1 of 3") || !strings.Contains(page, "rollout-batches") {
		t.Fatalf("the deployment page shows no batch progress:\n%.2000s", page)
	}
	f.neverAt(2, 2*time.Second, append(batch2, batch3...)...) // the gate is 6 s
	f.readyAt(2, f.ids[:4]...)
	step("generation 2 Ready on batches 1 and 2")

	// The server is killed in the middle and comes back: the rollout
	// goes on at the batch it was at.
	if code := f.server.signalAndWait(t, syscall.SIGKILL); code == 0 {
		t.Fatal("server exited 0 on SIGKILL")
	}
	f.startServer()
	step("server killed and restarted")
	if st := f.status(); st.Batch != 2 || st.Phase != v1.RolloutProgressing {
		t.Fatalf("after the server restart: batch %d %s, want batch 2 Progressing", st.Batch, st.Phase)
	}
	f.neverAt(2, 2*time.Second, batch3...)
	f.readyAt(2, f.ids...)
	f.waitPhase(v1.RolloutSucceeded)
	step("generation 2 succeeded")
	for _, id := range f.ids {
		if got := f.fileOf(id); got != "version=2\n" || !strings.Contains(f.envOf(id), "VERSION=2") {
			t.Fatalf("%s after generation 2: file %q, env %q", id, got, f.envOf(id))
		}
	}

	// Undo after a completed rollout: generation 3 is generation 1's
	// spec, everywhere at once.
	if out := f.must(f.cli("rollout", "undo", "deployment/web")); !strings.Contains(out, "rolled back (generation 3)") {
		t.Fatalf("undo said %q", out)
	}
	f.readyAt(3, f.ids...)
	step("the undo (generation 3) Ready everywhere")
	for _, id := range f.ids {
		if got := f.fileOf(id); got != "version=1\n" || !strings.Contains(f.envOf(id), "VERSION=1") {
			t.Fatalf("%s after the undo: file %q, env %q", id, got, f.envOf(id))
		}
	}

	// A container that exits at once: the first batch fails its gate and
	// the rollout pauses; no other device sees the generation.
	// apply --wait says the change did not make it.
	if _, err := f.apply("4", exits, staged, "--wait", "--timeout", "3m"); err == nil ||
		!strings.Contains(err.Error(), "failed at generation 4") && !strings.Contains(err.Error(), "rollout of generation 4 is paused") {
		t.Fatalf("apply --wait of a change whose container exits: %v", err)
	}
	st = f.waitPhase(v1.RolloutPaused)
	step("generation 4 paused")
	if st.Batch != 1 || st.Failed[batch1[0]] == "" || !strings.Contains(st.Reason, "batch 1 of 3 failed its gate") {
		t.Fatalf("paused rollout: %+v", st)
	}
	f.neverAt(4, time.Second, append(batch2, batch3...)...)
	out = f.must(f.cli("rollout", "status", "deployment/web"))
	if !strings.Contains(out, "Paused") || !strings.Contains(out, "failed: "+batch1[0]) {
		t.Fatalf("rollout status of the paused rollout:\n%s", out)
	}

	// The same with onFailure: rollback: the failed batch's device gets
	// the previous spec again (generation 6, generation 3's spec), its
	// container the old one; the others never saw a bad generation.
	f.must(f.apply("5", exits, staged+"\n    onFailure: rollback"))
	st = f.waitPhase(v1.RolloutRolledBack)
	step("generation 5 rolled back")
	if st.RollbackGeneration != 6 {
		t.Fatalf("rolled back rollout: %+v", st)
	}
	f.readyAt(6, f.ids...)
	step("generation 6 Ready everywhere")
	for _, id := range f.ids {
		if got := f.fileOf(id); got != "version=1\n" || !strings.Contains(f.envOf(id), "VERSION=1") || f.imageOf(id) != podmantest.Image {
			t.Fatalf("%s after the rollback: file %q, env %q, image %q", id, got, f.envOf(id), f.imageOf(id))
		}
	}
}
