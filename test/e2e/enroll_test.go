package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/mesh"
	"github.com/harmony-fleet/harmony/internal/relay"
	"github.com/harmony-fleet/harmony/internal/testutil/natsperm"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// cliAt runs the CLI against the server at base, trusting ca.
func cliAt(base, ca string) func(args ...string) (string, error) {
	return func(args ...string) (string, error) {
		cmd := exec.Command(binary, args...)
		cmd.Env = append(os.Environ(), "HARMONY_CA="+ca, "HARMONY_SERVER="+base)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return string(out), fmt.Errorf("harmony %s: %w: %s", strings.Join(args, " "), err, stderr.String())
		}
		return string(out), nil
	}
}

// deviceConn is a NATS connection made with a device's enrolled identity,
// as a stolen device's owner could make it.
type deviceConn struct {
	nc           *nats.Conn
	js           jetstream.JetStream
	errs         *natsperm.Errors
	disconnected chan struct{} // closed at the first disconnection
}

func connectAs(t testing.TB, natsAddr, ca, seed, device string) (*deviceConn, error) {
	t.Helper()
	nkey, err := nats.NkeyOptionFromSeed(seed)
	if err != nil {
		return nil, err
	}
	c := &deviceConn{errs: &natsperm.Errors{}, disconnected: make(chan struct{})}
	var once sync.Once
	opts := []nats.Option{nkey, nats.Name("test as " + device),
		nats.CustomInboxPrefix(mesh.DeviceInboxPrefix(device)), nats.ErrorHandler(c.errs.Record),
		nats.DisconnectErrHandler(func(*nats.Conn, error) { once.Do(func() { close(c.disconnected) }) })}
	if ca != "" {
		opts = append(opts, nats.RootCAs(ca))
	}
	nc, err := nats.Connect("nats://"+natsAddr, opts...)
	if err != nil {
		return nil, err
	}
	t.Cleanup(nc.Close)
	c.nc = nc
	if c.js, err = jetstream.New(nc); err != nil {
		return nil, err
	}
	return c, nil
}

// TestEnrolledDevices runs the server with its defaults (TLS, and NATS
// open only to enrolled identities), enrolls device A with a one-time
// token and device B through an admin's approval, both with the CLI, and
// checks that A's identity cannot reach anything of B's, that a rotated
// identity keeps working and a revoked one is cut off.
func TestEnrolledDevices(t *testing.T) {
	dir := t.TempDir()
	natsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startHarmony(t, "server", "--data-dir", filepath.Join(dir, "server"), "--nats", natsAddr, "--http", httpAddr,
		"--tls", "auto", "--nats-auth", "identities", "--heartbeat-staleness", "2s")
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

	// A: a one-time token, limited to A's id.
	token := strings.TrimSpace(must(cli("token", "create", "--expires", "10m", "--device", "dev-a")))
	seedA := filepath.Join(dir, "dev-a", "identity.nk")
	must(cli("enroll", "--id", "dev-a", "--nkey", seedA, "--token", token))
	if fi, err := os.Stat(seedA); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("A's identity file: %v %v, want mode 0600", fi, err)
	}
	if _, err := cli("enroll", "--id", "dev-a", "--nkey", filepath.Join(dir, "again.nk"), "--token", token); err == nil ||
		!strings.Contains(err.Error(), "already used") {
		t.Fatalf("the token worked twice: %v", err)
	}

	// B: a request that waits for an admin.
	seedB := filepath.Join(dir, "dev-b", "identity.nk")
	enrollB := startHarmony(t, "enroll", "--server", base, "--ca", ca, "--id", "dev-b", "--nkey", seedB, "--wait", "60s")
	retry.Until(t, 30*time.Second, func() error {
		out, err := cli("device", "identities")
		if err != nil || !strings.Contains(out, "dev-b") || !strings.Contains(out, "pending") {
			return fmt.Errorf("no pending request of dev-b: %v\n%s", err, out)
		}
		return nil
	})
	if _, err := os.Stat(seedB); err == nil {
		t.Fatal("B's identity file was written before the approval")
	}
	must(cli("device", "approve", "dev-b"))
	select {
	case err := <-enrollB.done:
		if err != nil {
			t.Fatalf("harmony enroll of dev-b: %v\n%s", err, enrollB.stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("harmony enroll of dev-b still waiting 30 s after the approval")
	}

	startAgent := func(id string, identity ...string) *proc {
		args := append([]string{"agent", "--http", "127.0.0.1:0", "--id", id, "--nats-url", "nats://" + natsAddr, "--nats-ca", ca,
			"--state-dir", filepath.Join(dir, id, "state"), "--label", "site=home", "--shell-jobs", "--heartbeat-interval", "300ms"},
			identity...)
		return startHarmony(t, args...)
	}
	agentA := startAgent("dev-a", "--nats-nkey", seedA)
	startAgent("dev-b", "--nats-nkey", seedB)
	stranger := startAgent("dev-x") // never enrolled

	converged := func(name string, gen int) {
		t.Helper()
		retry.Until(t, 60*time.Second, func() error {
			out, err := cli("describe", "deployment", name, "-o", "json")
			if err != nil {
				return err
			}
			var d struct {
				Status struct{ Generation, Matched, Succeeded int }
			}
			if err := json.Unmarshal([]byte(out), &d); err != nil {
				return err
			}
			// dev-x never registers, so it is never matched.
			if d.Status.Generation != gen || d.Status.Matched != 2 || d.Status.Succeeded != 2 {
				return fmt.Errorf("generation %d, %d matched, %d succeeded; want %d, 2, 2", d.Status.Generation, d.Status.Matched, d.Status.Succeeded, gen)
			}
			return nil
		})
	}
	must(cli("apply", "-f", deploymentFile(t, "enrolled", "site: home", "one")))
	converged("enrolled", 1)

	// A's identity reaches its own desired state (through the relay, as
	// its agent does), and nothing of B's.
	ctx := context.Background()
	own, err := connectAs(t, natsAddr, ca, seedA, "dev-a")
	if err != nil {
		t.Fatal(err)
	}
	ownKV, err := relay.NewClient(own.nc, relay.ClientOptions{Device: "dev-a"}).Open(ctx, "desired-state")
	if err != nil {
		t.Fatalf("A opens its desired state: %v", err)
	}
	if e, err := ownKV.Get(ctx, v1.DeviceKey("dev-a", "enrolled")); err != nil || len(e.Value) == 0 {
		t.Fatalf("A reads its own desired state: %v, %v", e, err)
	}
	if errs := own.errs.All(); len(errs) > 0 {
		t.Fatalf("A's own reads were refused: %v", errs)
	}

	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 500*time.Millisecond) }
	request := func(c *deviceConn, subject string, body any) error {
		data, _ := json.Marshal(body)
		_, err := c.nc.Request(subject, data, 500*time.Millisecond)
		return err
	}
	publish := func(c *deviceConn, subject string) error {
		c2, cancel := short()
		defer cancel()
		_, err := c.js.Publish(c2, subject, []byte(`{"forged":true}`))
		return err
	}
	attempts := []struct {
		name           string
		try            func(c *deviceConn) error
		refusedPublish string // the subject (or filter) the server names
	}{
		{"get B's desired state", func(c *deviceConn) error {
			return request(c, "$JS.API.DIRECT.GET.KV_desired-state.$KV.desired-state.dev-b.enrolled", nil)
		}, "$JS.API.DIRECT.GET.KV_desired-state.$KV.desired-state.dev-b.enrolled"},
		{"get B's desired state from the stream leader", func(c *deviceConn) error {
			return request(c, "$JS.API.STREAM.MSG.GET.KV_desired-state", map[string]any{"last_by_subj": "$KV.desired-state.dev-b.enrolled"})
		}, "$JS.API.STREAM.MSG.GET.KV_desired-state"},
		{"watch B's desired state", func(c *deviceConn) error {
			return request(c, "$JS.API.CONSUMER.CREATE.KV_desired-state.w.$KV.desired-state.dev-b.*", map[string]any{
				"stream_name": "KV_desired-state", "config": map[string]any{"name": "w", "filter_subject": "$KV.desired-state.dev-b.*",
					"deliver_subject": mesh.DeviceInboxPrefix("dev-a") + ".w"}})
		}, "$JS.API.CONSUMER.CREATE.KV_desired-state.w.$KV.desired-state.dev-b.*"},
		{"list the desired-state keys", func(c *deviceConn) error {
			return request(c, "$JS.API.STREAM.INFO.KV_desired-state", map[string]any{"subjects_filter": ">"})
		}, "$JS.API.STREAM.INFO.KV_desired-state"},
		{"write B's status", func(c *deviceConn) error { return publish(c, "$KV.device-state.dev-b.enrolled") },
			"$KV.device-state.dev-b.enrolled"},
		{"write B's heartbeat", func(c *deviceConn) error { return publish(c, "$KV.device-heartbeat.dev-b") },
			"$KV.device-heartbeat.dev-b"},
		{"read the desired-state stream by sequence", func(c *deviceConn) error {
			return request(c, "$JS.API.STREAM.MSG.GET.KV_desired-state", map[string]any{"seq": 1})
		}, "$JS.API.STREAM.MSG.GET.KV_desired-state"},
		{"read the desired-state stream with a consumer of its own", func(c *deviceConn) error {
			return request(c, "$JS.API.CONSUMER.CREATE.KV_desired-state", map[string]any{"stream_name": "KV_desired-state",
				"config": map[string]any{"deliver_subject": mesh.DeviceInboxPrefix("dev-a") + ".x"}})
		}, "$JS.API.CONSUMER.CREATE.KV_desired-state"},
		{"publish on B's command subject", func(c *deviceConn) error {
			return request(c, v1.CommandSubject("dev-b"), v1.CommandRequest{Op: v1.OpExec, Command: []string{"touch", "/tmp/pwned"}})
		}, v1.CommandSubject("dev-b")},
		{"change the desired-state bucket", func(c *deviceConn) error {
			c2, cancel := short()
			defer cancel()
			return c.js.DeleteStream(c2, "KV_desired-state")
		}, "$JS.API.STREAM.DELETE.KV_desired-state"},
		{"read the identities bucket", func(c *deviceConn) error {
			c2, cancel := short()
			defer cancel()
			_, err := c.js.KeyValue(c2, "identities")
			return err
		}, "$JS.API.STREAM.INFO.KV_identities"},
	}
	for _, a := range attempts {
		t.Run("A cannot "+a.name, func(t *testing.T) {
			c, err := connectAs(t, natsAddr, ca, seedA, "dev-a")
			if err != nil {
				t.Fatal(err)
			}
			if err := a.try(c); err == nil {
				t.Error("the attempt succeeded")
			}
			c.errs.Violated(t, "Publish to", a.refusedPublish)
		})
	}
	// B still works, and its status is its own.
	must(cli("apply", "-f", deploymentFile(t, "enrolled", "site: home", "two")))
	converged("enrolled", 2)

	// Rotation: B enrolls again with a new token; its old key stops
	// working, and the running agent reconnects with the new one.
	oldB := filepath.Join(dir, "dev-b-old.nk")
	if data, err := os.ReadFile(seedB); err != nil || os.WriteFile(oldB, data, 0o600) != nil {
		t.Fatalf("copy B's seed: %v", err)
	}
	token = strings.TrimSpace(must(cli("token", "create", "--device", "dev-b")))
	must(cli("enroll", "--id", "dev-b", "--nkey", seedB, "--token", token))
	retry.Until(t, 10*time.Second, func() error {
		if _, err := connectAs(t, natsAddr, ca, oldB, "dev-b"); err == nil || !strings.Contains(err.Error(), "Authorization Violation") {
			return fmt.Errorf("B's old key: %v, want an authorization violation", err)
		}
		return nil
	})
	if _, err := connectAs(t, natsAddr, ca, seedB, "dev-b"); err != nil {
		t.Fatalf("B's new key: %v", err)
	}
	must(cli("apply", "-f", deploymentFile(t, "enrolled", "site: home", "three")))
	converged("enrolled", 3)

	// Revocation: A's open connection is closed, A cannot connect again,
	// and its agent drops offline.
	open, err := connectAs(t, natsAddr, ca, seedA, "dev-a")
	if err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	must(cli("device", "revoke", "dev-a"))
	select {
	case <-open.disconnected:
		t.Logf("A's connection was closed within %s of the revoke command starting", time.Since(revoked).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatal("A's connection is still open 10 s after the revocation")
	}
	if _, err := connectAs(t, natsAddr, ca, seedA, "dev-a"); err == nil || !strings.Contains(err.Error(), "Authorization Violation") {
		t.Fatalf("A connects after its revocation: %v", err)
	}
	retry.Until(t, 30*time.Second, func() error {
		out, err := cli("get", "devices")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) > 1 && f[0] == "dev-a" && f[1] == "Offline" {
				return nil
			}
		}
		return fmt.Errorf("dev-a not offline:\n%s", out)
	})
	if out := must(cli("get", "devices")); strings.Contains(out, "dev-x") {
		t.Fatalf("the agent without an identity registered:\n%s", out)
	}
	for _, p := range []*proc{agentA, stranger} {
		_ = p.cmd.Process.Kill()
		<-p.done
		if s := p.stderr.String(); !strings.Contains(strings.ToLower(s), "authorization violation") {
			t.Errorf("%s does not say it was refused:\n%s", p.cmd.Args, tail(s, 3000))
		}
	}
}

// In a cluster of three servers every member follows the identities
// bucket: a device enrolled through member 1 connects to member 3, and a
// revocation made through member 2 cuts its connection to member 3.
func TestClusterSharesIdentities(t *testing.T) {
	mc := newMeshCluster(t, "--nats-auth", "identities")
	cli := func(member int, args ...string) string {
		t.Helper()
		cmd := exec.Command(binary, args...)
		cmd.Env = append(os.Environ(), "HARMONY_SERVER=http://"+mc.members[member].http)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("harmony %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	dir := t.TempDir()
	seed := filepath.Join(dir, "d1.nk")
	token := cli(0, "token", "create", "--device", "d1")
	cli(0, "enroll", "--id", "d1", "--nkey", seed, "--token", token)
	startHarmony(t, "agent", "--http", "127.0.0.1:0", "--id", "d1", "--nats-url", mc.url(2), "--nats-nkey", seed,
		"--state-dir", filepath.Join(dir, "state"), "--heartbeat-interval", "300ms")
	retry.Until(t, 30*time.Second, func() error {
		if out := cli(1, "get", "devices"); !strings.Contains(out, "d1") || !strings.Contains(out, "Online") {
			return fmt.Errorf("d1 not online through member 2:\n%s", out)
		}
		return nil
	})
	c, err := connectAs(t, mc.clients[2].Addr(), "", seed, "d1")
	if err != nil {
		t.Fatalf("d1 connects to member 3: %v", err)
	}
	cli(1, "device", "revoke", "d1")
	select {
	case <-c.disconnected:
	case <-time.After(10 * time.Second):
		t.Fatal("d1's connection to member 3 is still open 10 s after its revocation through member 2")
	}
	// Every member follows the identities bucket on its own: each refuses
	// d1 once it has seen the revocation (the one d1 was connected to has;
	// the others within moments, not necessarily by now).
	for i := range mc.members {
		retry.Until(t, 10*time.Second, func() error {
			if _, err := connectAs(t, mc.clients[i].Addr(), "", seed, "d1"); err == nil || !strings.Contains(err.Error(), "Authorization Violation") {
				return fmt.Errorf("d1 connects to member %d after its revocation: %v", i+1, err)
			}
			return nil
		})
	}
}
