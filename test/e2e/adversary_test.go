package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/mesh"
	"github.com/harmony-fleet/harmony/internal/relay"
	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// defaultsEnv is the environment less the suite's HARMONY_TLS=off and
// HARMONY_NATS_AUTH=off (TestMain): harmony then runs with the product's
// defaults.
func defaultsEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HARMONY_TLS=") && !strings.HasPrefix(kv, "HARMONY_NATS_AUTH=") {
			env = append(env, kv)
		}
	}
	return env
}

// startWithDefaults runs harmony with the product's defaults.
func startWithDefaults(t *testing.T, args ...string) *proc {
	t.Helper()
	return startHarmonyEnv(t, defaultsEnv(), args...)
}

// victimSnapshot is what must survive every attack: B's registration,
// desired state, status, and the file its agent keeps.
type victimSnapshot struct {
	info    v1.DeviceInfo
	desired []byte
	phase   string
	gen     int64
	file    string
}

// TestOneDeviceCannotHarmAnother is the adversarial suite of
// docs/SECURITY.md: a server with its defaults (TLS, enrolled identities),
// two enrolled devices, and an attacker holding device A's identity who
// pulls every lever NATS and JetStream offer (the JetStream API subjects,
// the headers a publish can carry, wildcards, inboxes, the relay, floods
// of requests and of connections). Each attempt must fail; B's
// registration, desired state, status and running file must be unchanged,
// and again after a server restart; the control plane must keep answering.
func TestOneDeviceCannotHarmAnother(t *testing.T) {
	dir := t.TempDir()
	natsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	data := filepath.Join(dir, "server")
	serverArgs := []string{"server", "--data-dir", data, "--nats", natsAddr, "--http", httpAddr, "--heartbeat-staleness", "3s"}
	srv := startWithDefaults(t, serverArgs...)
	ca := filepath.Join(data, "tls", "ca.pem")
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
	enroll := func(id string) string {
		token := strings.TrimSpace(must(cli("token", "create", "--device", id)))
		seed := filepath.Join(dir, id, "identity.nk")
		must(cli("enroll", "--id", id, "--nkey", seed, "--token", token))
		return seed
	}
	seedA, seedB := enroll("dev-a"), enroll("dev-b")
	rootB := filepath.Join(dir, "dev-b", "root")
	if err := os.MkdirAll(rootB, 0o755); err != nil {
		t.Fatal(err)
	}
	startWithDefaults(t, "agent", "--http", "127.0.0.1:0", "--id", "dev-b", "--nats-url", "nats://"+natsAddr, "--nats-ca", ca,
		"--nats-nkey", seedB, "--state-dir", filepath.Join(dir, "dev-b", "state"), "--label", "site=b",
		"--allowed-roots", rootB, "--heartbeat-interval", "500ms")
	victimFile := filepath.Join(rootB, "victim.txt")
	deploy := func(content string) {
		doc := fmt.Sprintf(`apiVersion: harmony/v1alpha1
kind: Deployment
metadata:
  name: victim
spec:
  selector:
    matchLabels: {site: b}
  resources:
  - id: precious
    kind: File
    spec: {path: %s, content: %q}
`, victimFile, content)
		path := filepath.Join(dir, "victim.yaml")
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		must(cli("apply", "-f", path))
	}
	converged := func(gen int64) {
		t.Helper()
		retry.Until(t, 60*time.Second, func() error {
			out, err := cli("describe", "deployment", "victim", "-o", "json")
			if err != nil {
				return err
			}
			var d struct {
				Status struct {
					Generation                 int64
					Matched, Succeeded, Online int
				}
			}
			if err := json.Unmarshal([]byte(out), &d); err != nil {
				return err
			}
			if d.Status.Generation != gen || d.Status.Matched != 1 || d.Status.Succeeded != 1 {
				return fmt.Errorf("victim: %+v, want generation %d succeeded on dev-b", d.Status, gen)
			}
			return nil
		})
	}
	deploy("precious 1")
	converged(1)

	// The admin's view of the store (the server's admin identity).
	adminStore := func() store.Store {
		return storeWith(t, mesh.ClientConfig{URLs: []string{"nats://" + natsAddr}, NkeySeedFile: filepath.Join(data, "nats-admin.nk"), CAFile: ca})
	}
	snapshot := func(st store.Store) victimSnapshot {
		t.Helper()
		ctx := context.Background()
		get := func(bucket, key string) []byte {
			kv, err := st.Open(ctx, bucket)
			if err != nil {
				t.Fatal(err)
			}
			e, err := kv.Get(ctx, key)
			if err != nil {
				t.Fatalf("%s/%s: %v", bucket, key, err)
			}
			return e.Value
		}
		var s victimSnapshot
		var err error
		if s.info, err = v1.DecodeDeviceInfo(get("device-info", "dev-b")); err != nil {
			t.Fatal(err)
		}
		s.desired = get("desired-state", "dev-b.victim")
		ds, err := v1.DecodeDeviceState(get("device-state", "dev-b.victim"))
		if err != nil {
			t.Fatal(err)
		}
		s.phase, s.gen = ds.Phase, ds.ObservedGeneration
		b, err := os.ReadFile(victimFile)
		if err != nil {
			t.Fatal(err)
		}
		s.file = string(b)
		return s
	}
	same := func(what string, before, after victimSnapshot) {
		t.Helper()
		if before.info.ID != after.info.ID || fmt.Sprint(before.info.Labels) != fmt.Sprint(after.info.Labels) {
			t.Errorf("%s: B's registration changed: %+v -> %+v", what, before.info, after.info)
		}
		if !bytes.Equal(before.desired, after.desired) {
			t.Errorf("%s: B's desired state changed:\n%s\n->\n%s", what, before.desired, after.desired)
		}
		if before.phase != after.phase || before.gen != after.gen {
			t.Errorf("%s: B's status changed: %s@%d -> %s@%d", what, before.phase, before.gen, after.phase, after.gen)
		}
		if before.file != after.file {
			t.Errorf("%s: B's file changed: %q -> %q", what, before.file, after.file)
		}
	}
	before := snapshot(adminStore())

	// Every lever of the attacker's connection.
	attacker, err := connectAs(t, natsAddr, ca, seedA, "dev-a")
	if err != nil {
		t.Fatal(err)
	}
	cfgBody := func(deliver string) []byte {
		b, _ := json.Marshal(map[string]any{"stream_name": "KV_desired-state", "config": map[string]any{"name": "x",
			"deliver_subject": deliver, "filter_subject": "$KV.desired-state.dev-a.*", "inactive_threshold": int64(time.Hour)}})
		return b
	}
	// The JetStream API, from its reference: every request subject a
	// client can send, with the bodies that reach beyond one subject.
	api := []struct {
		subject string
		body    []byte
	}{
		{"$JS.API.INFO", nil},
		{"$JS.API.STREAM.NAMES", nil},
		{"$JS.API.STREAM.LIST", nil},
		{"$JS.API.STREAM.INFO.KV_desired-state", []byte(`{"subjects_filter":">"}`)},
		{"$JS.API.STREAM.INFO.KV_device-info", nil},
		{"$JS.API.STREAM.CREATE.EVIL", []byte(`{"name":"EVIL","subjects":["harmony.cmd.>"]}`)},
		{"$JS.API.STREAM.UPDATE.KV_device-info", []byte(`{"name":"KV_device-info","subjects":["$KV.device-info.>"],"allow_rollup_hdrs":true}`)},
		{"$JS.API.STREAM.DELETE.KV_device-info", nil},
		{"$JS.API.STREAM.PURGE.KV_device-info", nil},
		{"$JS.API.STREAM.PURGE.KV_device-state", []byte(`{"filter":"$KV.device-state.dev-b.victim"}`)},
		{"$JS.API.STREAM.MSG.GET.KV_desired-state", []byte(`{"last_by_subj":"$KV.desired-state.dev-b.victim"}`)},
		{"$JS.API.STREAM.MSG.DELETE.KV_device-info", []byte(`{"seq":1}`)},
		{"$JS.API.STREAM.SNAPSHOT.KV_desired-state", []byte(`{"deliver_subject":"_INBOX_dev.dev-a.snap"}`)},
		{"$JS.API.STREAM.RESTORE.KV_device-info", []byte(`{"config":{"name":"KV_device-info"}}`)},
		{"$JS.API.STREAM.LEADER.STEPDOWN.KV_desired-state", nil},
		{"$JS.API.STREAM.PEER.REMOVE.KV_desired-state", []byte(`{"peer":"x"}`)},
		{"$JS.API.CONSUMER.CREATE.KV_desired-state", cfgBody(v1.CommandSubject("dev-b"))},
		{"$JS.API.CONSUMER.CREATE.KV_desired-state.x", cfgBody(relay.Subject("dev-b"))},
		{"$JS.API.CONSUMER.CREATE.KV_desired-state.x.$KV.desired-state.dev-a.*", cfgBody(mesh.DeviceInboxPrefix("dev-b") + ".x")},
		{"$JS.API.CONSUMER.DURABLE.CREATE.KV_desired-state.x", cfgBody("_INBOX_dev.dev-a.x")},
		{"$JS.API.CONSUMER.NAMES.KV_desired-state", nil},
		{"$JS.API.CONSUMER.LIST.KV_desired-state", nil},
		{"$JS.API.CONSUMER.INFO.KV_desired-state.x", nil},
		{"$JS.API.CONSUMER.DELETE.KV_desired-state.x", nil},
		{"$JS.API.CONSUMER.PAUSE.KV_desired-state.x", nil},
		{"$JS.API.CONSUMER.MSG.NEXT.KV_desired-state.x", nil},
		{"$JS.API.CONSUMER.LEADER.STEPDOWN.KV_desired-state.x", nil},
		{"$JS.API.DIRECT.GET.KV_desired-state", []byte(`{"multi_last":["$KV.desired-state.dev-b.*"],"batch":100}`)},
		{"$JS.API.DIRECT.GET.KV_desired-state.$KV.desired-state.dev-b.victim", nil},
		{"$JS.API.DIRECT.GET.KV_desired-state.$KV.desired-state.dev-a.*", nil},
		{"$JS.API.META.LEADER.STEPDOWN", nil},
		{"$JS.API.SERVER.REMOVE", []byte(`{"peer":"x"}`)},
		{"$JS.API.ACCOUNT.PURGE.$G", nil},
		{"$JS.ACK.KV_desired-state.x.1.1.1.1.1", nil},
		{"$JS.FC.KV_desired-state.x.1", nil},
		{"$SYS.REQ.SERVER.PING.CONNZ", nil},
	}
	// Writes straight into a bucket, with each header a publish can carry
	// (rollups, purges and deletes, per-message TTLs, schedules, counters,
	// atomic batches, expectations on other subjects), on its own keys and
	// on B's.
	headers := []nats.Header{
		nil,
		{"Nats-Rollup": {"all"}},
		{"Nats-Rollup": {"sub"}},
		{"KV-Operation": {"PURGE"}, "Nats-Rollup": {"sub"}},
		{"KV-Operation": {"DEL"}},
		{"Nats-TTL": {"1s"}},
		{"Nats-Schedule": {"@every 1s"}, "Nats-Schedule-Target": {v1.CommandSubject("dev-b")}},
		{"Nats-Incr": {"1"}},
		{"Nats-Batch-Id": {"x"}, "Nats-Batch-Sequence": {"1"}, "Nats-Batch-Commit": {"1"}},
		{"Nats-Expected-Last-Subject-Sequence-Subject": {"$KV.device-info.dev-b"}, "Nats-Expected-Last-Subject-Sequence": {"1"}},
		{"Nats-Msg-Id": {"x"}},
		{"Nats-Stream": {"KV_desired-state"}, "Nats-Subject": {"$KV.desired-state.dev-b.victim"}, "Nats-Sequence": {"999"}},
	}
	writes := []string{"$KV.device-info.dev-a", "$KV.device-state.dev-a.victim", "$KV.device-heartbeat.dev-a",
		"$KV.device-info.dev-b", "$KV.device-state.dev-b.victim", "$KV.desired-state.dev-b.victim", "$KV.desired-state.dev-a.evil",
		"$KV.device-state.dev-a.>", "$KV.identities.device.dev-a", "$KV.deployments.victim"}
	// Impersonation: B's subjects, and the server's inboxes.
	impersonate := []string{relay.Subject("dev-b"), v1.CommandSubject("dev-b"), mesh.DeviceInboxPrefix("dev-b") + ".x",
		"harmony.kv.desired-state.dev-b.victim", "_INBOX.x"}
	publish := func(subject string, hdr nats.Header, body []byte) {
		t.Helper()
		m := nats.NewMsg(subject)
		for k, v := range hdr {
			m.Header[k] = v
		}
		m.Data = body
		m.Reply = mesh.DeviceInboxPrefix("dev-a") + ".r"
		if err := attacker.nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range api {
		publish(a.subject, nil, a.body)
	}
	for _, h := range headers {
		for _, s := range writes {
			publish(s, h, []byte(`{"v":1,"id":"dev-b"}`))
		}
	}
	for _, s := range impersonate {
		publish(s, nil, []byte(`{"op":"exec","command":["touch","/tmp/pwned"]}`))
	}
	subs := []string{">", "$KV.>", "harmony.>", "harmony.relay.>", "harmony.cmd.*", "_INBOX.>", "_INBOX_dev.dev-b.>",
		"harmony.kv.desired-state.dev-b.*", "harmony.kv.desired-state.*.*", "$SYS.>", "$JS.>"}
	for _, s := range subs {
		if _, err := attacker.nc.SubscribeSync(s); err != nil {
			t.Fatal(err)
		}
	}
	if err := attacker.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, a := range api {
		t.Run("JetStream API "+a.subject, func(t *testing.T) { attacker.errs.Violated(t, "Publish to", a.subject) })
	}
	for _, s := range writes {
		t.Run("write into "+s, func(t *testing.T) { attacker.errs.Violated(t, "Publish to", s) })
	}
	for _, s := range impersonate {
		t.Run("publish as B on "+s, func(t *testing.T) { attacker.errs.Violated(t, "Publish to", s) })
	}
	for _, s := range subs {
		t.Run("subscribe to "+s, func(t *testing.T) { attacker.errs.Violated(t, "Subscription to", s) })
	}

	// The relay: what A may send, checked by the control plane.
	ctx := context.Background()
	rc := relay.NewClient(attacker.nc, relay.ClientOptions{Device: "dev-a", Timeout: 5 * time.Second})
	openRelay := func(bucket string) store.KV {
		kv, err := rc.Open(ctx, bucket)
		if err != nil {
			t.Fatalf("A opens %s through the relay: %v", bucket, err)
		}
		return kv
	}
	ds, di, dst, hb := openRelay("desired-state"), openRelay("device-info"), openRelay("device-state"), openRelay("device-heartbeat")
	infoAs := func(id string) []byte { b, _ := json.Marshal(v1.DeviceInfo{V: 1, ID: id}); return b }
	// A registered as its agent would, with its own site's label.
	infoLabels := func(site string) []byte {
		b, _ := json.Marshal(v1.DeviceInfo{V: 1, ID: "dev-a", Labels: map[string]string{"site": site}})
		return b
	}
	revA, err := di.Create(ctx, "dev-a", infoLabels("a"))
	if err != nil {
		t.Fatalf("A registers: %v", err)
	}
	stateAs := func(id, dep string) []byte {
		b, _ := json.Marshal(v1.DeviceState{V: 1, Device: id, Deployment: dep, Phase: "Ready", ObservedGeneration: 99})
		return b
	}
	relayed := []struct {
		name string
		call func() error
	}{
		{"read B's desired state", func() error { _, err := ds.Get(ctx, "dev-b.victim"); return err }},
		{"list B's desired state", func() error { _, err := ds.List(ctx, "dev-b.*"); return err }},
		{"list all desired state", func() error { _, err := ds.List(ctx, ">"); return err }},
		{"list through a wildcard id", func() error { _, err := ds.List(ctx, "*.*"); return err }},
		{"write desired state", func() error { _, err := ds.Create(ctx, "dev-a.evil", []byte("{}")); return err }},
		{"read B's registration", func() error { _, err := di.Get(ctx, "dev-b"); return err }},
		{"register as B", func() error { _, err := di.Create(ctx, "dev-b", infoAs("dev-b")); return err }},
		{"own registration naming B", func() error { _, err := di.Create(ctx, "dev-a", infoAs("dev-b")); return err }},
		{"delete own registration", func() error { return di.Delete(ctx, "dev-a", 0) }},
		{"relabel itself into B's deployment", func() error { _, err := di.Update(ctx, "dev-a", infoLabels("b"), revA); return err }},
		{"B's status", func() error { _, err := dst.Create(ctx, "dev-b.victim", stateAs("dev-b", "victim")); return err }},
		{"status for a deployment not given", func() error { _, err := dst.Create(ctx, "dev-a.victim", stateAs("dev-a", "victim")); return err }},
		{"status under a literal '>'", func() error { _, err := dst.Create(ctx, "dev-a.>", stateAs("dev-a", ">")); return err }},
		{"status under a literal '*'", func() error { _, err := dst.Create(ctx, "dev-a.*", stateAs("dev-a", "*")); return err }},
		{"B's heartbeat", func() error { _, err := hb.Create(ctx, "dev-b", []byte(`{"v":1,"b":"x","s":1}`)); return err }},
		{"a heartbeat that is not one", func() error { _, err := hb.Create(ctx, "dev-a", bytes.Repeat([]byte("x"), 5000)); return err }},
		{"open the identities bucket", func() error { _, err := rc.Open(ctx, "identities"); return err }},
		{"open the deployments bucket", func() error { _, err := rc.Open(ctx, "deployments"); return err }},
		{"open the leases bucket", func() error { _, err := rc.Open(ctx, "leases"); return err }},
		{"open a failover bucket", func() error { _, err := rc.Open(ctx, "failover-pg"); return err }},
	}
	for _, r := range relayed {
		t.Run("relay: "+r.name, func(t *testing.T) {
			if err := r.call(); !errors.Is(err, store.ErrRefused) && !errors.Is(err, store.ErrInvalidKey) {
				t.Fatalf("err = %v, want refused", err)
			}
		})
	}

	// Floods: connections on one identity, and relay requests.
	t.Run("connection flood", func(t *testing.T) {
		var opened int
		for range 3 * mesh.DefaultMaxConnsPerDevice {
			if _, err := connectAs(t, natsAddr, ca, seedA, "dev-a"); err == nil {
				opened++
			}
		}
		// The attacker already holds one; the cap counts them all.
		if opened >= mesh.DefaultMaxConnsPerDevice {
			t.Fatalf("one identity opened %d more connections, want fewer than %d", opened, mesh.DefaultMaxConnsPerDevice)
		}
	})
	t.Run("relay flood", func(t *testing.T) {
		for i := range 5000 {
			m := nats.NewMsg(relay.Subject("dev-a"))
			m.Reply = mesh.DeviceInboxPrefix("dev-a") + ".flood"
			m.Header.Set(relay.HdrOp, relay.OpCreate)
			m.Header.Set(relay.HdrBucket, "device-state")
			m.Header.Set(relay.HdrKey, fmt.Sprintf("dev-a.k%d", i))
			m.Data = bytes.Repeat([]byte("x"), 64<<10)
			if err := attacker.nc.PublishMsg(m); err != nil {
				break // the connection may be cut as a slow consumer: fine
			}
		}
		_ = attacker.nc.Flush()
		// The control plane still answers, and B still follows a change.
		deploy("precious 2")
		converged(2)
	})

	after := snapshot(adminStore())
	before.desired, before.file, before.gen = after.desired, "precious 2", 2 // the change the admin made
	same("after the attacks", before, after)
	// A holds no key but its own records, and was never given B's
	// deployment.
	st := adminStore()
	desiredKV, err := st.Open(ctx, "desired-state")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := desiredKV.Get(ctx, "dev-a.victim"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("A was given B's deployment: %v", err)
	}
	for _, bucket := range []string{"device-state", "device-heartbeat"} {
		kv, err := st.Open(ctx, bucket)
		if err != nil {
			t.Fatal(err)
		}
		es, err := kv.List(ctx, "dev-a.>")
		if err != nil {
			t.Fatal(err)
		}
		if len(es) > 0 {
			t.Errorf("%s holds keys written by A: %d (first %s)", bucket, len(es), es[0].Key)
		}
	}

	// And after a restart on the same data.
	if code := srv.signalAndWait(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("server exit code %d", code)
	}
	startWithDefaults(t, serverArgs...)
	waitTLSReady(t, base, ca)
	converged(2)
	same("after a restart", after, snapshot(adminStore()))
	if out := must(cli("get", "devices")); !strings.Contains(out, "dev-b") {
		t.Errorf("dev-b is gone after the restart:\n%s", out)
	}
}
