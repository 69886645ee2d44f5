package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/pki"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// With tls auto the server makes its own CA and certificate on first
// start and speaks only TLS on its NATS client port and its HTTP address:
// an agent and the CLI given the CA work; without it they are refused, as
// is plain HTTP.
func TestTLSEverywhere(t *testing.T) {
	dir := t.TempDir()
	natsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startHarmony(t, "server", "--data-dir", filepath.Join(dir, "server"), "--nats", natsAddr, "--http", httpAddr,
		"--tls", "auto", "--heartbeat-staleness", "2s")
	ca := filepath.Join(dir, "server", "tls", "ca.pem")
	base := "https://" + httpAddr

	waitTLSReady(t, base, ca)
	if fi, err := os.Stat(filepath.Join(dir, "server", "tls", "ca-key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key: %v %v, want mode 0600", fi, err)
	}
	// Plain HTTP and a client that does not trust the CA get nothing.
	if resp, err := http.Get("http://" + httpAddr + "/readyz"); err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatalf("plain HTTP answered 200: %s", body)
		}
	}
	if _, err := http.Get(base + "/readyz"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a client without the CA: %v, want a certificate error", err)
	}

	// An agent given the CA joins; one without it is refused by its own
	// verification of the server.
	root := t.TempDir()
	startHarmony(t, "agent", "--http", "127.0.0.1:0", "--id", "t1", "--nats-url", "nats://"+natsAddr, "--nats-ca", ca,
		"--state-dir", filepath.Join(root, "t1"), "--label", "site=home", "--allowed-roots", filepath.Join(root, "files"),
		"--shell-jobs", "--heartbeat-interval", "300ms")
	untrusting := startHarmony(t, "agent", "--http", "127.0.0.1:0", "--id", "t2", "--nats-url", "nats://"+natsAddr,
		"--state-dir", filepath.Join(root, "t2"), "--label", "site=home", "--heartbeat-interval", "300ms")

	harmony := func(env []string, args ...string) (string, error) {
		cmd := exec.Command(binary, args...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	withCA := []string{"HARMONY_CA=" + ca}
	retry.Until(t, 30*time.Second, func() error {
		out, err := harmony(withCA, "get", "devices", "--server", base)
		if err != nil || !strings.Contains(out, "t1") {
			return fmt.Errorf("t1 not listed: %v\n%s", err, out)
		}
		return nil
	})
	if out, err := harmony(withCA, "apply", "--server", base, "--wait", "--timeout", "60s", "-f", deploymentFile(t, "tlsweb", "site: home", "over-tls")); err != nil {
		t.Fatalf("apply --wait over TLS: %v\n%s", err, out)
	}
	out, err := harmony(withCA, "describe", "deployment", "tlsweb", "--server", base, "-o", "json")
	if err != nil || !strings.Contains(out, `"matched": 1`) || !strings.Contains(out, `"succeeded": 1`) {
		t.Fatalf("only t1 should be matched and have converged: %v\n%s", err, out)
	}
	if out, _ := harmony(withCA, "get", "devices", "--server", base); strings.Contains(out, "t2") {
		t.Fatalf("the agent without the CA registered:\n%s", out)
	}
	if out, err := harmony(nil, "get", "devices", "--server", base); err == nil || !strings.Contains(out, "certificate") {
		t.Fatalf("the CLI without the CA: %v\n%s", err, out)
	}
	_ = untrusting.cmd.Process.Kill()
	<-untrusting.done
	if s := untrusting.stderr.String(); !strings.Contains(s, "certificate") {
		t.Fatalf("the agent without the CA does not say why it cannot connect:\n%s", tail(s, 3000))
	}
}

// waitTLSReady waits until the server at base answers /readyz over TLS
// with a certificate signed by ca (which the server writes on first start).
func waitTLSReady(t *testing.T, base, ca string) {
	t.Helper()
	retry.Until(t, 30*time.Second, func() error {
		conf, err := pki.ClientConfig(ca)
		if err != nil {
			return err
		}
		c := &http.Client{Timeout: 5 * time.Second, Transport: bearer{&http.Transport{TLSClientConfig: conf}}}
		resp, err := c.Get(base + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})
}
