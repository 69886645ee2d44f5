package mesh_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/failover"
	"github.com/harmony-fleet/harmony/internal/identity"
	"github.com/harmony-fleet/harmony/internal/mesh"
	hserver "github.com/harmony-fleet/harmony/internal/server"
	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/testutil/natsperm"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// deniedWait bounds a call that the server refuses by dropping it: the
// client only learns of the refusal from the asynchronous -ERR.
const deniedWait = 300 * time.Millisecond

// fleet is an embedded JetStream server whose clients authenticate with
// nkeys: one full-permission "server" user and one user per device with
// mesh.DevicePermissions; the fleet buckets are created as the server does.
type fleet struct {
	url     string
	nc      *nats.Conn // the server user
	kv      map[string]store.KV
	names   config.Buckets
	buckets mesh.FleetBuckets
	keys    map[string]nkeys.KeyPair
}

func startFleet(t *testing.T, devices ...string) *fleet {
	t.Helper()
	return startFleetWith(t, nil, devices...)
}

// startFleetWith is startFleet with more users (other identities).
func startFleetWith(t *testing.T, more []*server.NkeyUser, devices ...string) *fleet {
	t.Helper()
	cfg := config.DefaultServer()
	f := &fleet{names: cfg.Buckets, keys: map[string]nkeys.KeyPair{}, kv: map[string]store.KV{},
		buckets: mesh.FleetBuckets{DesiredState: cfg.Buckets.DesiredState, DeviceInfo: cfg.Buckets.DeviceInfo,
			DeviceState: cfg.Buckets.DeviceState, DeviceHeartbeat: cfg.Buckets.DeviceHeartbeat}}
	serverKey := newUser(t)
	users := []*server.NkeyUser{{Nkey: publicKey(t, serverKey)}} // nil permissions: everything
	for _, d := range devices {
		f.keys[d] = newUser(t)
		users = append(users, &server.NkeyUser{Nkey: publicKey(t, f.keys[d]), Permissions: mesh.DevicePermissions(d, f.buckets)})
	}
	// mesh.ServerConfig cannot carry users yet: the options are those of
	// mesh.StartServer that matter here, plus the users.
	users = append(users, more...)
	ns, err := server.NewServer(&server.Options{JetStream: true, StoreDir: t.TempDir(), Host: "127.0.0.1",
		Port: server.RANDOM_PORT, NoSigs: true, NoLog: true, MaxPayload: 8 << 20, Nkeys: users})
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	f.url = ns.ClientURL()
	f.nc, err = nats.Connect(f.url, nats.Nkey(publicKey(t, serverKey), serverKey.Sign))
	if err != nil {
		t.Fatalf("connect as server: %v", err)
	}
	t.Cleanup(f.nc.Close)
	st, err := store.NewNATS(f.nc, store.NATSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, bc := range hserver.FleetBuckets(cfg) {
		kv, err := st.Ensure(context.Background(), bc)
		if err != nil {
			t.Fatalf("bucket %s: %v", bc.Name, err)
		}
		f.kv[bc.Name] = kv
	}
	return f
}

func newUser(t *testing.T) nkeys.KeyPair {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func publicKey(t *testing.T, kp nkeys.KeyPair) string {
	t.Helper()
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// device is one connection authenticated as a device, with the store and
// jetstream views of it and the asynchronous errors it was sent.
type device struct {
	id     string
	nc     *nats.Conn
	st     *store.NATS
	js     jetstream.JetStream
	errs   *natsperm.Errors
	closed chan struct{}
}

func (f *fleet) connect(t *testing.T, id string, timeout time.Duration) *device {
	t.Helper()
	kp := f.keys[id]
	d := &device{id: id, errs: &natsperm.Errors{}, closed: make(chan struct{})}
	nc, err := nats.Connect(f.url,
		nats.Name("device "+id),
		nats.Nkey(publicKey(t, kp), kp.Sign),
		nats.CustomInboxPrefix(mesh.DeviceInboxPrefix(id)),
		nats.ErrorHandler(d.errs.Record),
		// Called from the same queue as the error handler, after it.
		nats.ClosedHandler(func(*nats.Conn) { close(d.closed) }),
	)
	if err != nil {
		t.Fatalf("connect as %s: %v", id, err)
	}
	t.Cleanup(nc.Close)
	d.nc = nc
	if d.st, err = store.NewNATS(nc, store.NATSOptions{Timeout: timeout}); err != nil {
		t.Fatal(err)
	}
	if d.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	return d
}

func (d *device) open(t *testing.T, bucket string) store.KV {
	t.Helper()
	kv, err := d.st.Open(context.Background(), bucket)
	if err != nil {
		t.Fatalf("%s opens %s: %v", d.id, bucket, err)
	}
	return kv
}

// noErrors closes the connection and fails t if the server refused
// anything it did (every error callback runs before the closed callback).
func (d *device) noErrors(t *testing.T) {
	t.Helper()
	d.nc.Close()
	<-d.closed
	if errs := d.errs.All(); len(errs) > 0 {
		t.Fatalf("%s was refused: %v", d.id, errs)
	}
}

func TestDeviceInboxPrefix(t *testing.T) {
	for _, id := range []string{"a", "a.b", "edge-1.site.example"} {
		p := mesh.DeviceInboxPrefix(id)
		if strings.ContainsAny(p, "*> ") || strings.HasSuffix(p, ".") || strings.Count(p, ".") != 1 {
			t.Errorf("DeviceInboxPrefix(%q) = %q: want two tokens and no wildcards", id, p)
		}
		opts := nats.GetDefaultOptions()
		if err := nats.CustomInboxPrefix(p)(&opts); err != nil {
			t.Errorf("nats.go refuses %q: %v", p, err)
		}
	}
	// A device's inbox space never covers another's ("a" and "a.b").
	if server.SubjectMatchesFilter(mesh.DeviceInboxPrefix("a.b")+".x", mesh.DeviceInboxPrefix("a")+".>") {
		t.Error(`device "a" could subscribe to the inbox of device "a.b"`)
	}
}

// TestDevicePermissionsOwnKeys: what the agent does with its own keys works
// under its identity, and the server refuses none of it.
func TestDevicePermissionsOwnKeys(t *testing.T) {
	f := startFleet(t, "dev-a")
	ctx := context.Background()
	desired := f.kv[f.names.DesiredState]
	rev1, err := desired.Create(ctx, v1.DeviceKey("dev-a", "web"), []byte("v1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := desired.Create(ctx, v1.DeviceKey("dev-b", "web"), []byte("b1")); err != nil {
		t.Fatal(err)
	}

	a := f.connect(t, "dev-a", 5*time.Second)
	for _, b := range []string{f.names.DesiredState, f.names.DeviceInfo, f.names.DeviceState, f.names.DeviceHeartbeat} {
		a.open(t, b) // stream info
	}

	t.Run("watch own desired state", func(t *testing.T) {
		kv := a.open(t, f.names.DesiredState)
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		w, err := kv.Watch(wctx, "dev-a.*", store.WatchOptions{})
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		want := []string{"dev-a.web=v1", "replayed", "dev-a.web=v2", "dev-a.db=d1"}
		var got []string
		for ev := range w.Events() {
			switch {
			case ev.Replayed:
				got = append(got, "replayed")
				// The server writes after the replay; the watch sees it.
				if _, err := desired.Update(ctx, "dev-a.web", []byte("v2"), rev1); err != nil {
					t.Fatal(err)
				}
				if _, err := desired.Create(ctx, "dev-a.db", []byte("d1")); err != nil {
					t.Fatal(err)
				}
			default:
				got = append(got, ev.Entry.Key+"="+string(ev.Entry.Value))
			}
			if len(got) == len(want) {
				cancel()
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("watch saw %v, want %v", got, want)
		}
		// Stopping the watch deletes its consumer (allowed), rather than
		// leaving it to the server's inactivity timeout.
		waitNoConsumers(t, f, f.names.DesiredState)
	})

	t.Run("resume own desired-state watch", func(t *testing.T) {
		kv := a.open(t, f.names.DesiredState)
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		w, err := kv.Watch(wctx, "dev-a.*", store.WatchOptions{ResumeFrom: rev1 + 1})
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		for ev := range w.Events() {
			if ev.Replayed {
				cancel()
				continue
			}
			if !strings.HasPrefix(ev.Entry.Key, "dev-a.") || ev.Entry.Revision <= rev1 {
				t.Errorf("resumed watch saw %s@%d", ev.Entry.Key, ev.Entry.Revision)
			}
		}
		waitNoConsumers(t, f, f.names.DesiredState)
	})

	t.Run("get own desired state by direct get", func(t *testing.T) {
		// store.Get asks the leader with STREAM.MSG.GET, which names the
		// key in its body and is therefore not granted; the subject-carrying
		// direct get (what nats.go's KV Get does) is.
		kv, err := a.js.KeyValue(ctx, f.names.DesiredState)
		if err != nil {
			t.Fatal(err)
		}
		e, err := kv.Get(ctx, "dev-a.web")
		if err != nil || string(e.Value()) != "v2" {
			t.Fatalf("get = %v, %v; want v2", e, err)
		}
		if _, err := kv.Get(ctx, "dev-a.gone"); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Fatalf("get of a missing own key = %v, want not found", err)
		}
	})

	t.Run("device-info and heartbeat: create and CAS", func(t *testing.T) {
		for _, bucket := range []string{f.names.DeviceInfo, f.names.DeviceHeartbeat} {
			kv := a.open(t, bucket)
			rev, err := kv.Create(ctx, "dev-a", []byte("one"))
			if err != nil {
				t.Fatalf("%s create: %v", bucket, err)
			}
			if _, err := kv.Create(ctx, "dev-a", []byte("again")); !errors.Is(err, store.ErrConflict) {
				t.Fatalf("%s second create = %v, want conflict", bucket, err)
			}
			if _, err := kv.Update(ctx, "dev-a", []byte("two"), rev); err != nil {
				t.Fatalf("%s update: %v", bucket, err)
			}
			if _, err := kv.Update(ctx, "dev-a", []byte("stale"), rev); !errors.Is(err, store.ErrConflict) {
				t.Fatalf("%s stale update = %v, want conflict", bucket, err)
			}
			jkv, err := a.js.KeyValue(ctx, bucket)
			if err != nil {
				t.Fatal(err)
			}
			if e, err := jkv.Get(ctx, "dev-a"); err != nil || string(e.Value()) != "two" {
				t.Fatalf("%s get = %v, %v; want two", bucket, e, err)
			}
		}
	})

	t.Run("device-state: create, update, delete, recreate", func(t *testing.T) {
		kv := a.open(t, f.names.DeviceState)
		key := v1.DeviceKey("dev-a", "web")
		rev, err := kv.Create(ctx, key, []byte("s1"))
		if err != nil {
			t.Fatal(err)
		}
		if rev, err = kv.Update(ctx, key, []byte("s2"), rev); err != nil {
			t.Fatal(err)
		}
		if err := kv.Delete(ctx, key, rev); err != nil {
			t.Fatal(err)
		}
		// Over a delete marker, nats.go's Create reads the key (direct get)
		// and writes with its revision.
		if _, err := kv.Create(ctx, key, []byte("s3")); err != nil {
			t.Fatal(err)
		}
		if e, err := f.kv[f.names.DeviceState].Get(ctx, key); err != nil || string(e.Value) != "s3" {
			t.Fatalf("server reads %v, %v; want s3", e, err)
		}
	})

	t.Run("answer a command", func(t *testing.T) {
		sub, err := a.nc.Subscribe(v1.CommandSubject("dev-a"), func(m *nats.Msg) {
			_ = m.Respond([]byte(`{"ok":true}`))
		})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		if err := a.nc.Flush(); err != nil {
			t.Fatal(err)
		}
		m, err := f.nc.Request(v1.CommandSubject("dev-a"), []byte(`{"op":"ping"}`), 5*time.Second)
		if err != nil || string(m.Data) != `{"ok":true}` {
			t.Fatalf("request = %v, %v", m, err)
		}
	})

	a.noErrors(t)
}

// waitNoConsumers waits until the bucket's stream has no consumers: a
// stopped watch deleted its own.
func waitNoConsumers(t *testing.T, f *fleet, bucket string) {
	t.Helper()
	js, err := jetstream.New(f.nc)
	if err != nil {
		t.Fatal(err)
	}
	// The server drops an abandoned ephemeral consumer after 5 s; a watch
	// that deleted its own is gone well before.
	retry.Until(t, 2*time.Second, func() error {
		st, err := js.Stream(context.Background(), "KV_"+bucket)
		if err != nil {
			return err
		}
		info, err := st.Info(context.Background())
		if err != nil {
			return err
		}
		if n := info.State.Consumers; n != 0 {
			return fmt.Errorf("%d consumers on %s", n, bucket)
		}
		return nil
	})
}

// TestDevicePermissionsDenied: everything beyond the device's own keys,
// command subject and inbox is refused by the server, each refusal seen as
// a permissions violation (not merely a timeout).
func TestDevicePermissionsDenied(t *testing.T) {
	f := startFleet(t, "dev-a", "dev-b")
	ctx := context.Background()
	if _, err := f.kv[f.names.DesiredState].Create(ctx, "dev-a.web", []byte("a1")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.kv[f.names.DesiredState].Create(ctx, "dev-b.web", []byte("b1")); err != nil {
		t.Fatal(err)
	}
	// Device B writes its own keys under its own identity.
	b := f.connect(t, "dev-b", 5*time.Second)
	for bucket, key := range map[string]string{f.names.DeviceInfo: "dev-b", f.names.DeviceHeartbeat: "dev-b",
		f.names.DeviceState: "dev-b.web"} {
		if _, err := b.open(t, bucket).Create(ctx, key, []byte("b")); err != nil {
			t.Fatalf("dev-b writes %s/%s: %v", bucket, key, err)
		}
	}
	b.noErrors(t)

	ds, bs, bi, bh := f.names.DesiredState, f.names.DeviceState, f.names.DeviceInfo, f.names.DeviceHeartbeat
	jsAPI := func(d *device, subject string, body any) error {
		data, _ := json.Marshal(body)
		_, err := d.nc.Request(subject, data, deniedWait)
		return err
	}
	kvGet := func(d *device, bucket, key string) error {
		kv, err := d.js.KeyValue(ctx, bucket)
		if err != nil {
			return err
		}
		c, cancel := context.WithTimeout(ctx, deniedWait)
		defer cancel()
		_, err = kv.Get(c, key)
		return err
	}
	watch := func(t *testing.T, d *device, filter string) error {
		_, err := d.open(t, ds).Watch(ctx, filter, store.WatchOptions{})
		return err
	}
	write := func(bucket, key string) func(t *testing.T, d *device) error {
		return func(t *testing.T, d *device) error {
			_, err := d.open(t, bucket).Create(ctx, key, []byte("forged"))
			return err
		}
	}
	withTimeout := func(call func(ctx context.Context, js jetstream.JetStream) error) func(t *testing.T, d *device) error {
		return func(t *testing.T, d *device) error {
			c, cancel := context.WithTimeout(ctx, deniedWait)
			defer cancel()
			return call(c, d.js)
		}
	}
	subscribe := func(subject string) func(t *testing.T, d *device) error {
		return func(t *testing.T, d *device) error {
			_, err := d.nc.SubscribeSync(subject)
			if err == nil {
				err = d.nc.Flush()
			}
			return err
		}
	}

	cases := []struct {
		name string
		call func(t *testing.T, d *device) error
		// The refusal expected: "Publish to" or "Subscription to" a
		// subject matching filter. A refused subscription is accepted
		// by the client (callErr false); every refused request fails.
		what, filter string
		callErr      bool
	}{
		{"get B's desired state (direct get)", func(t *testing.T, d *device) error { return kvGet(d, ds, "dev-b.web") },
			"Publish to", "$JS.API.DIRECT.GET.KV_desired-state.$KV.desired-state.dev-b.web", true},
		{"get B's desired state (store.Get: leader message get)", func(t *testing.T, d *device) error {
			_, err := d.open(t, ds).Get(ctx, "dev-b.web")
			return err
		}, "Publish to", "$JS.API.STREAM.MSG.GET.KV_desired-state", true},
		{"read the desired-state stream by sequence", func(t *testing.T, d *device) error {
			return jsAPI(d, "$JS.API.STREAM.MSG.GET.KV_"+ds, map[string]any{"seq": 1})
		}, "Publish to", "$JS.API.STREAM.MSG.GET.KV_desired-state", true},
		{"read the desired-state stream by direct get without a key", func(t *testing.T, d *device) error {
			return jsAPI(d, "$JS.API.DIRECT.GET.KV_"+ds, map[string]any{"last_by_subj": "$KV." + ds + ".dev-b.web"})
		}, "Publish to", "$JS.API.DIRECT.GET.KV_desired-state", true},
		{"get B's device state", func(t *testing.T, d *device) error { return kvGet(d, bs, "dev-b.web") },
			"Publish to", "$JS.API.DIRECT.GET.KV_device-state.$KV.device-state.dev-b.web", true},
		{"get B's heartbeat", func(t *testing.T, d *device) error { return kvGet(d, bh, "dev-b") },
			"Publish to", "$JS.API.DIRECT.GET.KV_device-heartbeat.$KV.device-heartbeat.dev-b", true},
		{"get B's device info", func(t *testing.T, d *device) error { return kvGet(d, bi, "dev-b") },
			"Publish to", "$JS.API.DIRECT.GET.KV_device-info.$KV.device-info.dev-b", true},
		{"watch B's desired state", func(t *testing.T, d *device) error { return watch(t, d, "dev-b.*") },
			"Publish to", "$JS.API.CONSUMER.CREATE.KV_desired-state.*.$KV.desired-state.dev-b.*", true},
		{"watch the whole desired-state bucket", func(t *testing.T, d *device) error { return watch(t, d, ">") },
			"Publish to", "$JS.API.CONSUMER.CREATE.KV_desired-state.*.$KV.desired-state.>", true},
		{"list desired-state keys", func(t *testing.T, d *device) error {
			_, err := d.open(t, ds).List(ctx, "")
			return err
		}, "Publish to", "$JS.API.CONSUMER.CREATE.KV_desired-state.*.$KV.desired-state.>", true},
		{"create a consumer without a filter in the subject", func(t *testing.T, d *device) error {
			return jsAPI(d, "$JS.API.CONSUMER.CREATE.KV_"+ds+".x", map[string]any{"stream_name": "KV_" + ds,
				"config": map[string]any{"name": "x", "deliver_subject": mesh.DeviceInboxPrefix("dev-a") + ".x", "filter_subject": "$KV." + ds + ".dev-a.*"}})
		}, "Publish to", "$JS.API.CONSUMER.CREATE.KV_desired-state.x", true},
		{"create a durable consumer", func(t *testing.T, d *device) error {
			return jsAPI(d, "$JS.API.CONSUMER.DURABLE.CREATE.KV_"+ds+".x", map[string]any{"stream_name": "KV_" + ds,
				"config": map[string]any{"durable_name": "x", "filter_subject": "$KV." + ds + ".dev-b.*"}})
		}, "Publish to", "$JS.API.CONSUMER.DURABLE.CREATE.KV_desired-state.x", true},
		{"list the desired-state consumers", func(t *testing.T, d *device) error {
			return jsAPI(d, "$JS.API.CONSUMER.NAMES.KV_"+ds, nil)
		}, "Publish to", "$JS.API.CONSUMER.NAMES.KV_desired-state", true},
		{"write own desired state", write(ds, "dev-a.web"),
			"Publish to", "$KV.desired-state.dev-a.web", true},
		{"write B's device state", write(bs, "dev-b.web"),
			"Publish to", "$KV.device-state.dev-b.web", true},
		{"write B's heartbeat", write(bh, "dev-b"),
			"Publish to", "$KV.device-heartbeat.dev-b", true},
		{"write B's device info", write(bi, "dev-b"),
			"Publish to", "$KV.device-info.dev-b", true},
		{"open the deployments bucket", func(t *testing.T, d *device) error {
			_, err := d.st.Open(ctx, f.names.Deployments)
			return err
		}, "Publish to", "$JS.API.STREAM.INFO.KV_deployments", true},
		{"update the desired-state stream", withTimeout(func(c context.Context, js jetstream.JetStream) error {
			_, err := js.UpdateStream(c, jetstream.StreamConfig{Name: "KV_" + ds, Subjects: []string{"$KV." + ds + ".>"}, MaxMsgsPerSubject: 64})
			return err
		}), "Publish to", "$JS.API.STREAM.UPDATE.KV_desired-state", true},
		{"delete the desired-state stream", withTimeout(func(c context.Context, js jetstream.JetStream) error {
			return js.DeleteStream(c, "KV_"+ds)
		}), "Publish to", "$JS.API.STREAM.DELETE.KV_desired-state", true},
		{"purge the device-state stream", func(t *testing.T, d *device) error {
			return jsAPI(d, "$JS.API.STREAM.PURGE.KV_"+bs, map[string]any{"filter": "$KV." + bs + ".dev-b.web"})
		}, "Publish to", "$JS.API.STREAM.PURGE.KV_device-state", true},
		{"create a stream", withTimeout(func(c context.Context, js jetstream.JetStream) error {
			_, err := js.CreateStream(c, jetstream.StreamConfig{Name: "SNOOP", Subjects: []string{"harmony.>"}})
			return err
		}), "Publish to", "$JS.API.STREAM.CREATE.SNOOP", true},
		{"list streams", withTimeout(func(c context.Context, js jetstream.JetStream) error {
			l := js.StreamNames(c)
			for range l.Name() {
			}
			return l.Err()
		}), "Publish to", "$JS.API.STREAM.NAMES", true},
		{"read account info", withTimeout(func(c context.Context, js jetstream.JetStream) error {
			_, err := js.AccountInfo(c)
			return err
		}), "Publish to", "$JS.API.INFO", true},
		{"publish on B's command subject", func(t *testing.T, d *device) error {
			if err := d.nc.Publish(v1.CommandSubject("dev-b"), []byte(`{"op":"exec"}`)); err != nil {
				return err
			}
			return errors.New("published") // refused asynchronously
		}, "Publish to", "harmony.cmd.dev-b", true},
		{"subscribe to B's command subject", subscribe(v1.CommandSubject("dev-b")),
			"Subscription to", "harmony.cmd.dev-b", false},
		{"subscribe to every command subject", subscribe("harmony.cmd.*"),
			"Subscription to", "harmony.cmd.*", false},
		{"subscribe to B's inbox", subscribe(mesh.DeviceInboxPrefix("dev-b") + ".>"),
			"Subscription to", "_INBOX_dev.dev-b.>", false},
		{"subscribe to the default inboxes", subscribe("_INBOX.>"),
			"Subscription to", "_INBOX.>", false},
		{"subscribe to the desired-state subjects", subscribe("$KV.desired-state.>"),
			"Subscription to", "$KV.desired-state.>", false},
		{"subscribe to everything", subscribe(">"),
			"Subscription to", ">", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := f.connect(t, "dev-a", deniedWait)
			err := tc.call(t, a)
			if tc.callErr && err == nil {
				t.Errorf("the call succeeded")
			}
			a.errs.Violated(t, tc.what, tc.filter)
		})
	}
}

// TestFailoverMemberPermissions: a device that also runs a failover member
// (identity.Permissions with a cluster) can do with its cluster's bucket
// what the member does (open it, bootstrap cluster-state, read, CAS,
// watch, list, history), reading as the agent does under an identity
// (direct get); it cannot change the bucket's stream (which could
// republish into other subjects), and another cluster's bucket stays
// closed to it.
func TestFailoverMemberPermissions(t *testing.T) {
	ctx := context.Background()
	kp := newUser(t)
	rec := identity.Record{Device: "n1", PublicKey: publicKey(t, kp), Cluster: "pg1"}
	f := startFleetWith(t, identity.Users([]identity.Record{rec}, nil, mesh.FleetBuckets{DesiredState: "desired-state",
		DeviceInfo: "device-info", DeviceState: "device-state", DeviceHeartbeat: "device-heartbeat"}))

	errs := &natsperm.Errors{}
	nc, err := nats.Connect(f.url, nats.Nkey(rec.PublicKey, kp.Sign), nats.CustomInboxPrefix(mesh.DeviceInboxPrefix("n1")),
		nats.ErrorHandler(errs.Record))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	st, err := store.NewNATS(nc, store.NATSOptions{Timeout: 2 * time.Second, DirectGet: true})
	if err != nil {
		t.Fatal(err)
	}
	// The server creates the bucket when it grants the identity.
	full, err := store.NewNATS(f.nc, store.NATSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := failover.EnsureBucket(ctx, full, "pg1", 1); err != nil {
		t.Fatal(err)
	}
	kv, err := st.Open(ctx, failover.BucketName("pg1"))
	if err != nil {
		t.Fatalf("member opens its cluster's bucket: %v", err)
	}
	if _, err := failover.EnsureBucket(ctx, st, "pg1", 1); err != nil {
		t.Fatalf("member checks its existing bucket: %v", err)
	}
	if err := failover.Bootstrap(ctx, kv, "n1", ""); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	e, err := kv.Get(ctx, failover.KeyClusterState)
	if err != nil {
		t.Fatalf("get cluster-state: %v", err)
	}
	if _, err := kv.Update(ctx, failover.KeyClusterState, e.Value, e.Revision); err != nil {
		t.Fatalf("CAS cluster-state: %v", err)
	}
	if _, err := kv.Create(ctx, "member.n1", []byte(`{}`)); err != nil {
		t.Fatalf("write own member key: %v", err)
	}
	wctx, cancel := context.WithCancel(ctx)
	w, err := kv.Watch(wctx, "", store.WatchOptions{})
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	for ev := range w.Events() {
		if ev.Replayed {
			cancel()
		}
	}
	cancel()
	if entries, err := kv.List(ctx, ""); err != nil || len(entries) < 2 {
		t.Fatalf("list: %v %v", entries, err)
	}
	if h, err := kv.History(ctx, failover.KeyClusterState); err != nil || len(h) < 2 {
		t.Fatalf("history: %v %v", h, err)
	}
	if _, err := failover.ReadView(ctx, kv, "pg1"); err != nil {
		t.Fatalf("read view: %v", err)
	}
	if got := errs.All(); len(got) > 0 {
		t.Fatalf("the member was refused: %v", got)
	}

	c, cancel2 := context.WithTimeout(ctx, deniedWait)
	defer cancel2()
	if _, err := failover.EnsureBucket(c, st, "pg2", 1); err == nil {
		t.Fatal("member created another cluster's bucket")
	}
	errs.Violated(t, "Publish to", "$JS.API.STREAM.INFO.KV_failover-pg2")

	// Republishing its bucket into the devices' desired-state subjects
	// (a stream update, whose configuration permissions cannot see) is
	// refused.
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	c3, cancel3 := context.WithTimeout(ctx, deniedWait)
	defer cancel3()
	_, err = js.UpdateStream(c3, jetstream.StreamConfig{Name: "KV_failover-pg1", Subjects: []string{"$KV.failover-pg1.>"},
		RePublish: &jetstream.RePublish{Source: "$KV.failover-pg1.>", Destination: mesh.DesiredSubjectPrefix("desired-state") + ".>"}})
	if err == nil {
		t.Fatal("member updated its bucket's stream")
	}
	errs.Violated(t, "Publish to", "$JS.API.STREAM.UPDATE.KV_failover-pg1")
}
