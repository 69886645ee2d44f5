package mesh_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
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
	"github.com/harmony-fleet/harmony/internal/relay"
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

	mu      sync.Mutex
	members map[string]string // device -> failover cluster its identity was granted
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
	// A generous timeout: the first writes to new streams may wait for
	// the disk while other packages' tests run beside this one.
	st, err := store.NewNATS(f.nc, store.NATSOptions{Timeout: 30 * time.Second})
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
	// The relay answers devices' requests as harmony server does, with a
	// connection of its own.
	rnc, err := nats.Connect(f.url, nats.Nkey(publicKey(t, serverKey), serverKey.Sign))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rnc.Close)
	f.members = map[string]string{}
	rl := relay.NewServer(rnc, relay.Fleet{DesiredState: f.kv[f.names.DesiredState], DeviceInfo: f.kv[f.names.DeviceInfo],
		DeviceState: f.kv[f.names.DeviceState], DeviceHeartbeat: f.kv[f.names.DeviceHeartbeat]}, slog.New(slog.DiscardHandler),
		relay.Options{
			MemberBucket: func(_ context.Context, device string) (string, error) {
				f.mu.Lock()
				defer f.mu.Unlock()
				if c := f.members[device]; c != "" {
					return failover.BucketName(c), nil
				}
				return "", nil
			},
			OpenBucket: func(ctx context.Context, bucket string) (store.KV, error) { return st.Open(ctx, bucket) }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = rl.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	<-rl.Ready()
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
	st     *store.NATS   // JetStream directly: what the device may NOT do
	rl     *relay.Client // through the relay: what the agent does
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
	d.rl = relay.NewClient(nc, relay.ClientOptions{Device: id, Timeout: timeout,
		Republish: map[string]string{f.names.DesiredState: mesh.DesiredSubjectPrefix(f.names.DesiredState)}})
	return d
}

// relayed opens a bucket through the relay, as the agent does.
func (d *device) relayed(t *testing.T, bucket string) store.KV {
	t.Helper()
	kv, err := d.rl.Open(context.Background(), bucket)
	if err != nil {
		t.Fatalf("%s opens %s through the relay: %v", d.id, bucket, err)
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

// Valid records of a device's own buckets (the relay refuses others).
func infoValue(id string) []byte {
	b, _ := json.Marshal(v1.DeviceInfo{V: v1.FormatVersion, ID: id})
	return b
}

func beatValue(seq uint64) []byte {
	b, _ := json.Marshal(v1.Heartbeat{V: v1.FormatVersion, Boot: "b00t", Seq: seq})
	return b
}

func stateValue(id, dep, phase string) []byte {
	b, _ := json.Marshal(v1.DeviceState{V: v1.FormatVersion, Device: id, Deployment: dep, Phase: phase})
	return b
}

// TestDevicePermissionsOwnKeys: what the agent does with its own keys works
// under its identity, through the relay, and the server refuses none of it.
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
		a.relayed(t, b)
	}

	t.Run("watch own desired state", func(t *testing.T) {
		kv := a.relayed(t, f.names.DesiredState)
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
		// No consumer was made, by the device or for it.
		waitNoConsumers(t, f, f.names.DesiredState)
	})

	t.Run("get and list own desired state", func(t *testing.T) {
		kv := a.relayed(t, f.names.DesiredState)
		e, err := kv.Get(ctx, "dev-a.web")
		if err != nil || string(e.Value) != "v2" {
			t.Fatalf("get = %v, %v; want v2", e, err)
		}
		if _, err := kv.Get(ctx, "dev-a.gone"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("get of a missing own key = %v, want not found", err)
		}
		l, err := kv.List(ctx, "dev-a.*")
		if err != nil || len(l) != 2 || l[0].Key != "dev-a.db" || l[1].Key != "dev-a.web" {
			t.Fatalf("list = %v, %v; want dev-a.db and dev-a.web", l, err)
		}
	})

	t.Run("device-info and heartbeat: create and CAS", func(t *testing.T) {
		for bucket, val := range map[string]func(int) []byte{
			f.names.DeviceInfo:      func(int) []byte { return infoValue("dev-a") },
			f.names.DeviceHeartbeat: func(i int) []byte { return beatValue(uint64(i)) },
		} {
			kv := a.relayed(t, bucket)
			rev, err := kv.Create(ctx, "dev-a", val(1))
			if err != nil {
				t.Fatalf("%s create: %v", bucket, err)
			}
			if _, err := kv.Create(ctx, "dev-a", val(2)); !errors.Is(err, store.ErrConflict) {
				t.Fatalf("%s second create = %v, want conflict", bucket, err)
			}
			if _, err := kv.Update(ctx, "dev-a", val(3), rev); err != nil {
				t.Fatalf("%s update: %v", bucket, err)
			}
			if _, err := kv.Update(ctx, "dev-a", val(4), rev); !errors.Is(err, store.ErrConflict) {
				t.Fatalf("%s stale update = %v, want conflict", bucket, err)
			}
			if e, err := kv.Get(ctx, "dev-a"); err != nil || string(e.Value) != string(val(3)) {
				t.Fatalf("%s get = %v, %v; want the update", bucket, e, err)
			}
		}
	})

	t.Run("device-state: create, update, delete, recreate", func(t *testing.T) {
		kv := a.relayed(t, f.names.DeviceState)
		key := v1.DeviceKey("dev-a", "web")
		rev, err := kv.Create(ctx, key, stateValue("dev-a", "web", "Progressing"))
		if err != nil {
			t.Fatal(err)
		}
		if rev, err = kv.Update(ctx, key, stateValue("dev-a", "web", "Ready"), rev); err != nil {
			t.Fatal(err)
		}
		if err := kv.Delete(ctx, key, rev); err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Create(ctx, key, stateValue("dev-a", "web", "Failed")); err != nil {
			t.Fatal(err)
		}
		if e, err := f.kv[f.names.DeviceState].Get(ctx, key); err != nil || string(e.Value) != string(stateValue("dev-a", "web", "Failed")) {
			t.Fatalf("server reads %v, %v; want the last status", e, err)
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
	for bucket, kv := range map[string][2]string{f.names.DeviceInfo: {"dev-b", string(infoValue("dev-b"))},
		f.names.DeviceHeartbeat: {"dev-b", string(beatValue(1))},
		f.names.DeviceState:     {"dev-b.web", string(stateValue("dev-b", "web", "Ready"))}} {
		if _, err := b.relayed(t, bucket).Create(ctx, kv[0], []byte(kv[1])); err != nil {
			t.Fatalf("dev-b writes %s/%s: %v", bucket, kv[0], err)
		}
	}
	b.noErrors(t)

	ds, bs, bi, bh := f.names.DesiredState, f.names.DeviceState, f.names.DeviceInfo, f.names.DeviceHeartbeat
	jsAPI := func(d *device, subject string, body any) error {
		data, _ := json.Marshal(body)
		_, err := d.nc.Request(subject, data, deniedWait)
		return err
	}
	// nats.go's KV Get: a direct get with the key in the request subject.
	kvGet := func(d *device, bucket, key string) error {
		return jsAPI(d, "$JS.API.DIRECT.GET.KV_"+bucket+".$KV."+bucket+"."+key, nil)
	}
	// A watch or a list is an ordered consumer made with its filter in
	// the request subject (what nats.go's KV Watch sends).
	watch := func(t *testing.T, d *device, filter string) error {
		subj := "$JS.API.CONSUMER.CREATE.KV_" + ds + ".w." + "$KV." + ds + "." + filter
		return jsAPI(d, subj, map[string]any{"stream_name": "KV_" + ds, "config": map[string]any{"name": "w",
			"deliver_subject": mesh.DeviceInboxPrefix(d.id) + ".w", "filter_subject": "$KV." + ds + "." + filter, "ack_policy": "none"}})
	}
	// A write is a JetStream publish on the key's subject, headers and all.
	publish := func(bucket, key string, hdr nats.Header) func(t *testing.T, d *device) error {
		return func(t *testing.T, d *device) error {
			m := nats.NewMsg("$KV." + bucket + "." + key)
			m.Header = hdr
			m.Data = []byte("forged")
			_, err := d.nc.RequestMsg(m, deniedWait)
			return err
		}
	}
	write := func(bucket, key string) func(t *testing.T, d *device) error { return publish(bucket, key, nil) }
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
			"Publish to", "$JS.API.CONSUMER.CREATE.KV_desired-state.w.$KV.desired-state.dev-b.*", true},
		{"watch the whole desired-state bucket", func(t *testing.T, d *device) error { return watch(t, d, ">") },
			"Publish to", "$JS.API.CONSUMER.CREATE.KV_desired-state.w.$KV.desired-state.>", true},
		{"watch own desired state with a consumer", func(t *testing.T, d *device) error { return watch(t, d, "dev-a.*") },
			"Publish to", "$JS.API.CONSUMER.CREATE.KV_desired-state.w.$KV.desired-state.dev-a.*", true},
		{"push own desired state into B's command subject", func(t *testing.T, d *device) error {
			return jsAPI(d, "$JS.API.CONSUMER.CREATE.KV_"+ds+".x.$KV."+ds+".dev-a.*", map[string]any{"stream_name": "KV_" + ds,
				"config": map[string]any{"name": "x", "deliver_subject": v1.CommandSubject("dev-b"), "filter_subject": "$KV." + ds + ".dev-a.*"}})
		}, "Publish to", "$JS.API.CONSUMER.CREATE.KV_desired-state.x.$KV.desired-state.dev-a.*", true},
		{"open own device-info bucket (stream info)", func(t *testing.T, d *device) error {
			_, err := d.st.Open(ctx, bi)
			return err
		}, "Publish to", "$JS.API.STREAM.INFO.KV_device-info", true},
		{"get own desired state by direct get", func(t *testing.T, d *device) error {
			return jsAPI(d, "$JS.API.DIRECT.GET.KV_"+ds+".$KV."+ds+".dev-a.web", nil)
		}, "Publish to", "$JS.API.DIRECT.GET.KV_desired-state.$KV.desired-state.dev-a.web", true},
		{"batched direct get naming B's keys in the body", func(t *testing.T, d *device) error {
			return jsAPI(d, "$JS.API.DIRECT.GET.KV_"+ds, map[string]any{"multi_last": []string{"$KV." + ds + ".dev-b.*"}, "batch": 10})
		}, "Publish to", "$JS.API.DIRECT.GET.KV_desired-state", true},
		{"roll up the device-info stream from own key", publish(bi, "dev-a", nats.Header{"Nats-Rollup": []string{"all"}}),
			"Publish to", "$KV.device-info.dev-a", true},
		{"write own heartbeat straight into the bucket", write(bh, "dev-a"),
			"Publish to", "$KV.device-heartbeat.dev-a", true},
		{"write a literal wildcard key", write(bs, "dev-a.>"),
			"Publish to", "$KV.device-state.dev-a.>", true},
		{"send a relay request in B's name", func(t *testing.T, d *device) error {
			m := nats.NewMsg(relay.Subject("dev-b"))
			m.Header.Set(relay.HdrOp, relay.OpGet)
			m.Header.Set(relay.HdrBucket, ds)
			m.Header.Set(relay.HdrKey, "dev-b.web")
			_, err := d.nc.RequestMsg(m, deniedWait)
			return err
		}, "Publish to", "harmony.relay.dev-b", true},
		{"subscribe to every relay request", subscribe("harmony.relay.>"),
			"Subscription to", "harmony.relay.>", false},
		{"subscribe to B's republished desired state", subscribe(mesh.DesiredSubjectPrefix(ds) + ".dev-b.*"),
			"Subscription to", "harmony.kv.desired-state.dev-b.*", false},

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
// (identity.Permissions with a cluster) can do with its cluster's bucket,
// through the relay, what the member does (open it, bootstrap
// cluster-state, read, CAS, watch, list, history); it reaches no JetStream
// API itself (so it cannot change the bucket's stream, which could
// republish into other subjects, nor point a consumer at another device's
// subjects), and another cluster's bucket stays closed to it.
func TestFailoverMemberPermissions(t *testing.T) {
	ctx := context.Background()
	kp := newUser(t)
	rec := identity.Record{Device: "n1", PublicKey: publicKey(t, kp), Cluster: "pg1"}
	f := startFleetWith(t, identity.Users([]identity.Record{rec}, nil, mesh.FleetBuckets{DesiredState: "desired-state",
		DeviceInfo: "device-info", DeviceState: "device-state", DeviceHeartbeat: "device-heartbeat"}))
	f.mu.Lock()
	f.members["n1"] = "pg1"
	f.mu.Unlock()

	errs := &natsperm.Errors{}
	nc, err := nats.Connect(f.url, nats.Nkey(rec.PublicKey, kp.Sign), nats.CustomInboxPrefix(mesh.DeviceInboxPrefix("n1")),
		nats.ErrorHandler(errs.Record))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	bucket := failover.BucketName("pg1")
	st := relay.NewClient(nc, relay.ClientOptions{Device: "n1", Timeout: 10 * time.Second,
		Republish: map[string]string{bucket: store.RepublishPrefix(bucket)}})
	// The server creates the bucket when it grants the identity.
	full, err := store.NewNATS(f.nc, store.NATSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := failover.EnsureBucket(ctx, full, "pg1", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := failover.EnsureBucket(ctx, full, "pg2", 1); err != nil {
		t.Fatal(err)
	}
	kv, err := st.Open(ctx, bucket)
	if err != nil {
		t.Fatalf("member opens its cluster's bucket: %v", err)
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
	if _, err := kv.Create(ctx, "heartbeat.n1", []byte(`{}`)); err != nil {
		t.Fatalf("write own member key: %v", err)
	}
	wctx, cancel := context.WithCancel(ctx)
	w, err := kv.Watch(wctx, "", store.WatchOptions{})
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	var seen []string
	for ev := range w.Events() {
		if ev.Replayed {
			// A write after the replay comes on the republished subject.
			fkv, err := full.Open(ctx, bucket)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := fkv.Create(ctx, "heartbeat.n2", []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			continue
		}
		seen = append(seen, ev.Entry.Key)
		if ev.Entry.Key == "heartbeat.n2" {
			cancel()
		}
	}
	cancel()
	if len(seen) < 3 {
		t.Fatalf("watch saw %v: want cluster-state, heartbeat.n1 and heartbeat.n2", seen)
	}
	if entries, err := kv.List(ctx, ">"); err != nil || len(entries) < 3 {
		t.Fatalf("list: %v %v", entries, err)
	}
	if h, err := kv.History(ctx, failover.KeyClusterState); err != nil || len(h) < 2 {
		t.Fatalf("history: %v %v", h, err)
	}
	if _, err := failover.ReadView(ctx, kv, "pg1"); err != nil {
		t.Fatalf("read view: %v", err)
	}
	waitNoConsumers(t, f, bucket)
	if got := errs.All(); len(got) > 0 {
		t.Fatalf("the member was refused: %v", got)
	}

	// Keys the failover role does not write, and keys or filters long
	// enough to overflow a NATS protocol line (which would close the
	// control plane's own connection), are refused; the control plane
	// keeps its connection.
	if _, err := kv.Create(ctx, "evil.key", []byte(`{}`)); !errors.Is(err, store.ErrRefused) {
		t.Fatalf("member writes a key outside the failover schema: %v, want refused", err)
	}
	if _, err := kv.Create(ctx, "heartbeat."+strings.Repeat("x", 5000), []byte(`{}`)); !errors.Is(err, store.ErrRefused) {
		t.Fatalf("member writes a 5,000-byte key: %v, want refused", err)
	}
	if _, err := kv.List(ctx, strings.Repeat("a.", 3000)+">"); !errors.Is(err, store.ErrRefused) {
		t.Fatalf("member lists with a 6,000-byte filter: %v, want refused", err)
	}
	if !f.nc.IsConnected() {
		t.Fatal("the control plane's connection is gone")
	}
	if _, err := kv.Get(ctx, failover.KeyClusterState); err != nil {
		t.Fatalf("the relay stopped answering: %v", err)
	}

	// Another cluster's bucket, through the relay: refused by the relay.
	if _, err := st.Open(ctx, failover.BucketName("pg2")); !errors.Is(err, store.ErrRefused) {
		t.Fatalf("member opens another cluster's bucket: %v, want refused", err)
	}
	// And nothing of JetStream is within its reach.
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
	data, _ := json.Marshal(map[string]any{"stream_name": "KV_failover-pg1", "config": map[string]any{"name": "x",
		"deliver_subject": v1.CommandSubject("dev-b"), "filter_subject": "$KV.failover-pg1.>"}})
	if _, err := nc.Request("$JS.API.CONSUMER.CREATE.KV_failover-pg1.x.$KV.failover-pg1.>", data, deniedWait); err == nil {
		t.Fatal("member made a consumer on its bucket")
	}
	errs.Violated(t, "Publish to", "$JS.API.CONSUMER.CREATE.KV_failover-pg1.x.$KV.failover-pg1.>")
	if _, err := nc.SubscribeSync(store.RepublishPrefix(failover.BucketName("pg2")) + ".>"); err == nil {
		_ = nc.Flush()
	}
	errs.Violated(t, "Subscription to", "harmony.kv.failover-pg2.>")
}
