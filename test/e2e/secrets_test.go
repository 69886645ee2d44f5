package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/pki"
	"github.com/harmony-fleet/harmony/internal/relay"
	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/testutil/podmantest"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// TestSecrets runs the server with its defaults (TLS, enrolled
// identities) and two enrolled agents, dev-a (site=a) and dev-b (site=b),
// as the docs set them up. A secret made with the CLI reaches dev-a as a
// File (mode 0600) and as a Container's environment (real podman), a
// replaced secret rolls to dev-a, dev-b's identity cannot read it, and no
// value shows in any API answer, CLI output, dashboard page or log.
func TestSecrets(t *testing.T) {
	if err := podmantest.Setup(); err != nil {
		t.Fatal(err)
	}
	container := podmantest.Name(t)
	t.Cleanup(func() { _ = exec.Command("podman", "rm", "-f", "-t", "0", container).Run() })

	dir := t.TempDir()
	natsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	server := startHarmony(t, "server", "--data-dir", filepath.Join(dir, "server"), "--nats", natsAddr, "--http", httpAddr,
		"--tls", "auto", "--nats-auth", "identities", "--heartbeat-staleness", "3s")
	ca := filepath.Join(dir, "server", "tls", "ca.pem")
	base := "https://" + httpAddr
	waitTLSReady(t, base, ca)
	cli := cliAt(base, ca)
	must := func(out string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	seeds := map[string]string{}
	agents := map[string]*proc{}
	roots := map[string]string{}
	for _, id := range []string{"dev-a", "dev-b"} {
		token := strings.TrimSpace(must(cli("token", "create", "--device", id)))
		seeds[id] = filepath.Join(dir, id, "identity.nk")
		must(cli("enroll", "--id", id, "--nkey", seeds[id], "--token", token))
		roots[id] = filepath.Join(dir, id, "root")
		agents[id] = startHarmony(t, "agent", "--http", "127.0.0.1:0", "--id", id, "--nats-url", "nats://"+natsAddr, "--nats-ca", ca,
			"--nats-nkey", seeds[id], "--state-dir", filepath.Join(dir, id, "state"), "--root-dir", roots[id],
			"--label", "site="+strings.TrimPrefix(id, "dev-"), "--heartbeat-interval", "300ms", "--resync-interval", "2s",
			"--retry-initial", "200ms", "--retry-max", "2s")
	}

	// Values no output may show: random, so that a match is no accident.
	password, rotated := "pw-"+rand.Text(), "pw-"+rand.Text()
	keyFile := filepath.Join(dir, "tls.key")
	tlsKey := "-----BEGIN KEY-----\n" + rand.Text() + "\n-----END KEY-----\n"
	if err := os.WriteFile(keyFile, []byte(tlsKey), 0o600); err != nil {
		t.Fatal(err)
	}
	out := must(cli("secret", "create", "db", "--from-literal", "password="+password, "--from-file", "tls.key="+keyFile))
	if !strings.Contains(out, "secret/db created (keys: password, tls.key;") {
		t.Fatalf("secret create said %q", out)
	}

	// Bad input, each refused with the field named and nothing changed.
	if _, err := cli("secret", "create", "db", "--from-literal", "password=x"); err == nil || !strings.Contains(err.Error(), `secret "db" exists`) {
		t.Fatalf("creating db twice: %v", err)
	}
	missing := writeManifest(t, "missing", "site: a", `
  - id: f
    kind: File
    spec: {path: /etc/harmony/x, contentFrom: {secret: nosuch, key: password}}`)
	if _, err := cli("apply", "-f", missing); err == nil || !strings.Contains(err.Error(), "spec.resources[0].spec.contentFrom.secret") ||
		!strings.Contains(err.Error(), `secret "nosuch" does not exist`) {
		t.Fatalf("apply with a missing secret: %v", err)
	}
	noKey := writeManifest(t, "nokey", "site: a", `
  - id: f
    kind: File
    spec: {path: /etc/harmony/x, contentFrom: {secret: db, key: user}}`)
	if _, err := cli("apply", "-f", noKey); err == nil || !strings.Contains(err.Error(), "spec.resources[0].spec.contentFrom.key") ||
		!strings.Contains(err.Error(), `secret "db" has no key "user" (its keys: password, tls.key)`) {
		t.Fatalf("apply with a missing key: %v", err)
	}

	app := writeManifest(t, "app", "site: a", fmt.Sprintf(`
  - id: password
    kind: File
    spec: {path: /etc/harmony/app/password, contentFrom: {secret: db, key: password}}
  - id: key
    kind: File
    spec: {path: /etc/harmony/app/tls.key, contentFrom: {secret: db, key: tls.key}, mode: "0640"}
  - id: web
    kind: Container
    spec:
      name: %s
      image: %s
      command: [sh, -c, 'trap "exit 0" TERM; while true; do sleep 1; done']
      env: {MODE: test}
      secretEnv:
        DB_PASSWORD: {secret: db, key: password}`, container, podmantest.Image))
	must(cli("apply", "-f", app))
	// dev-b has a deployment too, without secrets: its desired state
	// exists but names none.
	must(cli("apply", "-f", writeManifest(t, "plain", "site: b", `
  - id: f
    kind: File
    spec: {path: /etc/harmony/plain, content: hello}`)))
	succeeded := func(name string) {
		t.Helper()
		retry.Until(t, 90*time.Second, func() error {
			out, err := cli("describe", "deployment", name, "-o", "json")
			if err != nil {
				return err
			}
			var d struct {
				Status struct{ Matched, Succeeded int }
			}
			if err := json.Unmarshal([]byte(out), &d); err != nil {
				return err
			}
			if d.Status.Matched != 1 || d.Status.Succeeded != 1 {
				return fmt.Errorf("deployment %s: %d matched, %d succeeded; want 1 and 1\n%s", name, d.Status.Matched, d.Status.Succeeded, out)
			}
			return nil
		})
	}
	fileIs := func(id, path, want string, mode os.FileMode) error {
		p := filepath.Join(roots[id], path)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if string(b) != want || fi.Mode().Perm() != mode {
			return fmt.Errorf("%s: %d bytes, mode %v; want %d bytes, mode %v", p, len(b), fi.Mode().Perm(), len(want), mode)
		}
		return nil
	}
	containerEnv := func() (string, error) {
		out, err := exec.Command("podman", "exec", container, "sh", "-c", `printf %s "$DB_PASSWORD"`).Output()
		return strings.TrimSpace(string(out)), err
	}
	succeeded("app")
	succeeded("plain")
	for _, c := range []struct {
		path, want string
		mode       os.FileMode
	}{{"/etc/harmony/app/password", password, 0o600}, {"/etc/harmony/app/tls.key", tlsKey, 0o640}} {
		if err := fileIs("dev-a", c.path, c.want, c.mode); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := containerEnv(); err != nil || got != password {
		t.Fatalf("the container's DB_PASSWORD: %v (%d bytes, want %d)", err, len(got), len(password))
	}
	// The value did not go on podman's command line: the container's
	// create command podman records holds the variable's name only.
	if out, err := exec.Command("podman", "inspect", "--format", "{{.Config.CreateCommand}}", container).Output(); err != nil ||
		strings.Contains(string(out), password) || !strings.Contains(string(out), "--env-file") {
		t.Fatalf("podman's create command: %v\n%s", err, out)
	}

	// dev-b's identity, through the relay as its agent talks: no secret
	// its desired state does not name, and no telling whether one exists.
	// dev-a's reads db (its desired state names it) but not another.
	readSecret := func(id, name string) error {
		dc, err := connectAs(t, natsAddr, ca, seeds[id], id)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		kv, err := relay.NewClient(dc.nc, relay.ClientOptions{Device: id}).Open(ctx, "secrets")
		if err != nil {
			return err
		}
		_, err = kv.Get(ctx, name)
		return err
	}
	if err := readSecret("dev-a", "db"); err != nil {
		t.Fatalf("dev-a reads the secret its desired state names: %v", err)
	}
	for _, c := range [][2]string{{"dev-b", "db"}, {"dev-b", "nosuch"}, {"dev-a", "nosuch"}} {
		err := readSecret(c[0], c[1])
		if err == nil || errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "no desired state of this device uses it") {
			t.Fatalf("%s reading secret %s: %v, want a refusal that says nothing of whether it exists", c[0], c[1], err)
		}
	}

	// A key in use cannot be dropped, a secret in use cannot be deleted.
	if _, err := cli("secret", "create", "db", "--replace", "--from-literal", "password="+rotated); err == nil ||
		!strings.Contains(err.Error(), `key "tls.key" is used by deployment "app"`) {
		t.Fatalf("replacing db without a key in use: %v", err)
	}
	if _, err := cli("secret", "delete", "db"); err == nil || !strings.Contains(err.Error(), `secret "db" is used by deployment(s) app`) {
		t.Fatalf("deleting a secret in use: %v", err)
	}

	// Rotation: the file and the container follow.
	before := must(cli("secret", "list", "-o", "json"))
	out = must(cli("secret", "create", "db", "--replace", "--from-literal", "password="+rotated, "--from-file", "tls.key="+keyFile))
	if !strings.Contains(out, "secret/db replaced") {
		t.Fatalf("secret replace said %q", out)
	}
	retry.Until(t, 60*time.Second, func() error {
		if err := fileIs("dev-a", "/etc/harmony/app/password", rotated, 0o600); err != nil {
			return err
		}
		if got, err := containerEnv(); err != nil || got != rotated {
			return fmt.Errorf("container DB_PASSWORD not rotated yet: %v", err)
		}
		return nil
	})
	succeeded("app")
	after := must(cli("secret", "list", "-o", "json"))
	if before == after || !strings.Contains(after, `"usedBy": [`) || !strings.Contains(after, `"app"`) {
		t.Fatalf("secret list before and after the rotation:\n%s\n%s", before, after)
	}

	// Everything a user or a viewer can read, and every log line.
	var seen bytes.Buffer
	for _, args := range [][]string{
		{"get", "deployments", "-o", "yaml"}, {"describe", "deployment", "app", "-o", "json"},
		{"describe", "deployment", "app"}, {"get", "devices", "-o", "yaml"}, {"describe", "device", "dev-a", "-o", "json"},
		{"describe", "device", "dev-a"}, {"secret", "list"}, {"secret", "list", "-o", "yaml"},
	} {
		seen.WriteString(must(cli(args...)))
	}
	client := httpsClient(t, ca)
	for _, path := range []string{"/api/v1/deployments", "/api/v1/deployments/app", "/api/v1/devices", "/api/v1/devices/dev-a",
		"/api/v1/secrets", "/", "/deployments", "/deployments/app", "/devices", "/devices/dev-a"} {
		body := getWithToken(t, client, base+path)
		if !strings.Contains(body, "app") && !strings.Contains(body, "dev-a") {
			t.Fatalf("%s shows neither the deployment nor the device: the check would see nothing\n%.500s", path, body)
		}
		seen.WriteString(body)
	}
	for id, p := range agents {
		if code := p.signalAndWait(t, syscall.SIGTERM); code != 0 {
			t.Fatalf("agent %s exited %d", id, code)
		}
		seen.WriteString(p.stderr.String())
	}
	server.signalAndWait(t, syscall.SIGTERM)
	seen.WriteString(server.stderr.String())
	for name, v := range map[string]string{"password": password, "rotated password": rotated, "tls key": strings.Split(tlsKey, "\n")[1]} {
		if i := strings.Index(seen.String(), v); i >= 0 {
			t.Errorf("the %s shows in outputs, answers or logs: ...%s...", name, seen.String()[max(0, i-300):i])
		}
	}
	if !strings.Contains(seen.String(), "secretVersion") || !strings.Contains(seen.String(), "contentFrom") {
		t.Error("status and specs should show the secret's name and version: the outputs read are not the ones meant")
	}
}

// writeManifest writes a deployment with the given resources (YAML list
// items, indented by two) selecting selector.
func writeManifest(t *testing.T, name, selector, resources string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".yaml")
	doc := fmt.Sprintf("apiVersion: harmony/v1alpha1\nkind: Deployment\nmetadata:\n  name: %s\nspec:\n  selector:\n    matchLabels: {%s}\n  resources:%s\n",
		name, selector, resources)
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func httpsClient(t *testing.T, ca string) *http.Client {
	t.Helper()
	conf, err := pki.ClientConfig(ca)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: conf}}
}

// getWithToken reads a page or an API answer as the e2e admin.
func getWithToken(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+e2eToken)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%.300s", url, resp.Status, b)
	}
	return string(b)
}
