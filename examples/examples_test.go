// Package examples_test runs every example of examples/ and every
// Deployment of README.md and docs/*.md against the real `harmony dev`, as
// a user copying them would: the built binary, `harmony apply --wait`,
// then the deployment's status read with `harmony get deployments -o json`.
package examples_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/harmony-fleet/harmony/internal/doccheck"
	"github.com/harmony-fleet/harmony/internal/testutil/podmantest"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
	"github.com/harmony-fleet/harmony/internal/testutil/systemdtest"
)

// binary is the harmony binary TestMain builds.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "harmony-examples-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "harmony")
	build := exec.Command("go", "build", "-o", binary, "../cmd/harmony")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build harmony:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// example is one file to apply and the deployments it holds.
type example struct {
	name  string // examples/files.yaml, docs/operator.md:11
	path  string
	names []string
}

func TestExamplesRunOnHarmonyDev(t *testing.T) {
	var cases []example
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples/*.yaml: %v", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		cases = append(cases, example{name: "examples/" + f, path: f, names: deploymentNames(t, "examples/"+f, string(data))})
	}
	cases = append(cases, docDeployments(t)...)
	if b, _ := os.ReadFile("container.yaml"); !strings.Contains(string(b), "image: "+podmantest.Image) {
		t.Errorf("container.yaml does not use the image scripts/podman-setup.sh builds (%s)", podmantest.Image)
	}

	sd := systemdtest.Start(t)
	dev := startDev(t, "--systemd-bus", sd.BusAddress, "--systemd-unit-dir", sd.UnitDir)
	// The secret secrets.yaml and docs/agent.md use, made as they say.
	if out, err := dev.harmony("secret", "create", "db", "--from-literal", "password=s3cret"); err != nil {
		t.Fatalf("secret create: %v\n%s", err, out)
	}
	for _, c := range cases {
		out, err := dev.harmony("apply", "-f", c.path, "--wait", "--timeout", "60s")
		for _, name := range c.names {
			st, ok := dev.deployment(t, name)
			switch {
			case !ok:
				t.Errorf("%s: deployment %s not stored (apply: %v)\n%s", c.name, name, err, out)
			case st.Matched == 0:
				t.Errorf("%s: deployment %s selects no device of harmony dev (dev-1, dev-2: site=home; dev-3: site=office; all env=dev, arch=<this machine's>)", c.name, name)
			case st.Succeeded != st.Matched:
				t.Errorf("%s: deployment %s: %d of %d devices succeeded (%s); apply: %v\n%s", c.name, name, st.Succeeded, st.Matched, st.LastError, err, out)
			default:
				t.Logf("%s: %s succeeded on %d device(s)", c.name, name, st.Matched)
			}
		}
	}

	// The paths the user wrote are under each device's root, and only there.
	for _, id := range []string{"dev-1", "dev-2", "dev-3"} {
		p := filepath.Join(dev.dir, "devices", id, "root", "etc", "harmony", "welcome")
		if _, err := os.Stat(p); err != nil {
			t.Errorf("examples/files.yaml on %s: %v", id, err)
		}
	}
	// The unit runs in the systemd dev was given.
	if state, _ := sd.Exec("systemctl", "is-active", "harmony-example-ticker.service"); strings.TrimSpace(state) != "active" {
		t.Errorf("harmony-example-ticker.service is %q in the test's systemd", strings.TrimSpace(state))
	}

	// Deleting removes what the examples created (containers included).
	for _, c := range cases {
		for _, name := range c.names {
			if out, err := dev.harmony("delete", "deployment", name); err != nil {
				t.Errorf("delete %s: %v\n%s", name, err, out)
			}
		}
	}
	retry.Until(t, 60*time.Second, func() error {
		if names := devContainers(); len(names) > 0 {
			return fmt.Errorf("containers left: %v", names)
		}
		return nil
	})
}

// deploymentNames are the metadata.name of the Deployment documents of a
// YAML text.
func deploymentNames(t *testing.T, where, text string) []string {
	t.Helper()
	var names []string
	for _, d := range doccheck.Documents(text) {
		var doc struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(d.Text), &doc); err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		if doc.Kind == "Deployment" {
			names = append(names, doc.Metadata.Name)
		}
	}
	if len(names) == 0 {
		t.Fatalf("%s: no Deployment", where)
	}
	return names
}

// docDeployments are the Deployment blocks of README.md and docs/*.md,
// each written to a file of its own.
func docDeployments(t *testing.T) []example {
	t.Helper()
	docs, _ := filepath.Glob("../docs/*.md")
	docs = append([]string{"../README.md"}, docs...)
	dir := t.TempDir()
	var out []example
	for _, md := range docs {
		blocks, err := doccheck.Blocks(md)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range blocks {
			if !b.IsYAML() || doccheck.Classify(b) != doccheck.Deployment {
				continue
			}
			// A PostgreSQL cluster needs PostgreSQL on its devices and
			// several members: test/e2e/postgres_declared_test.go runs it
			// (doccheck still checks the block).
			if strings.Contains(b.Text, "kind: PostgresCluster") {
				continue
			}
			where := strings.TrimPrefix(b.Location(0), "../")
			path := filepath.Join(dir, fmt.Sprintf("%d.yaml", len(out)))
			if err := os.WriteFile(path, []byte(b.Text), 0o600); err != nil {
				t.Fatal(err)
			}
			out = append(out, example{name: where, path: path, names: deploymentNames(t, where, b.Text)})
		}
	}
	if len(out) == 0 {
		t.Fatal("no Deployment block in README.md or docs/*.md (docs/operator.md has one)")
	}
	return out
}

// devContainers are the containers dev's devices run.
func devContainers() []string {
	out, _ := exec.Command("podman", "ps", "-a", "--format", "{{.Names}}").Output()
	var names []string
	for _, n := range strings.Fields(string(out)) {
		if strings.HasPrefix(n, "dev-") && strings.Contains(n, "-example-") {
			names = append(names, n)
		}
	}
	return names
}

// devProc is a running `harmony dev`.
type devProc struct {
	dir   string
	env   []string
	stdio *bytes.Buffer
}

// startDev starts `harmony dev` with the docs' defaults plus --http on a
// free port and args, waits until its three devices are online, and stops
// it with Ctrl-C (SIGINT) at cleanup.
func startDev(t *testing.T, args ...string) *devProc {
	t.Helper()
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	d := &devProc{dir: dir, stdio: &bytes.Buffer{}}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HARMONY_") {
			d.env = append(d.env, kv)
		}
	}
	cmd := exec.Command(binary, append([]string{"dev", "--http", addr, "--data-dir", dir}, args...)...)
	cmd.Env = d.env
	cmd.Stdout, cmd.Stderr = d.stdio, d.stdio
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		// Containers a failed test left behind.
		if names := devContainers(); len(names) > 0 {
			_ = exec.Command("podman", append([]string{"rm", "-f", "-t", "0"}, names...)...).Run()
		}
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("harmony dev: %v", err)
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("harmony dev did not stop within 30s of Ctrl-C")
		}
		if t.Failed() {
			t.Logf("harmony dev output:\n%s", d.stdio)
		}
	})
	base := "http://" + addr
	retry.Until(t, 60*time.Second, func() error {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		tok, err := os.ReadFile(filepath.Join(dir, "admin-token"))
		if err != nil {
			return err
		}
		d.env = append(d.env, "HARMONY_SERVER="+base, "HARMONY_TOKEN="+strings.TrimSpace(string(tok)))
		return nil
	})
	retry.Until(t, 60*time.Second, func() error {
		out, err := d.harmony("get", "devices", "-o", "json")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		var devs []struct {
			ID     string `json:"id"`
			Online bool   `json:"online"`
		}
		if err := json.Unmarshal([]byte(out), &devs); err != nil {
			return err
		}
		var online []string
		for _, dv := range devs {
			if dv.Online {
				online = append(online, dv.ID)
			}
		}
		if !slices.Equal(online, []string{"dev-1", "dev-2", "dev-3"}) {
			return fmt.Errorf("online: %v", online)
		}
		return nil
	})
	return d
}

// harmony runs the CLI against dev and returns its combined output.
func (d *devProc) harmony(args ...string) (string, error) {
	cmd := exec.Command(binary, args...)
	cmd.Env = d.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// rollout is what the test reads of a deployment's status.
type rollout struct {
	Matched   int    `json:"matched"`
	Succeeded int    `json:"succeeded"`
	LastError string `json:"lastError"`
}

// deployment reads one deployment's status from `harmony get deployments
// -o json`.
func (d *devProc) deployment(t *testing.T, name string) (rollout, bool) {
	t.Helper()
	out, err := d.harmony("get", "deployments", "-o", "json")
	if err != nil {
		t.Fatalf("get deployments: %v\n%s", err, out)
	}
	var list []struct {
		Deployment struct {
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		} `json:"deployment"`
		Status rollout `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("get deployments -o json: %v\n%s", err, out)
	}
	for _, e := range list {
		if e.Deployment.Metadata.Name == name {
			return e.Status, true
		}
	}
	return rollout{}, false
}
