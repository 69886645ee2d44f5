package relay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/mesh"
	"github.com/harmony-fleet/harmony/internal/mesh/meshtest"
	"github.com/harmony-fleet/harmony/internal/relay"
	hserver "github.com/harmony-fleet/harmony/internal/server"
	"github.com/harmony-fleet/harmony/internal/store"
)

// bench is a real NATS server with the fleet buckets, a relay answering on
// a connection of its own, and the server's view of the buckets.
type bench struct {
	srv     *mesh.Server
	names   config.Buckets
	kv      map[string]store.KV
	metrics *relay.Metrics
}

func start(t *testing.T, limits relay.Limits) *bench {
	t.Helper()
	return startWith(t, relay.Options{Limits: limits})
}

// startWith is start with the relay's options (Metrics are the bench's).
func startWith(t *testing.T, opts relay.Options) *bench {
	t.Helper()
	return startWithKV(t, func(map[string]store.KV) relay.Options { return opts })
}

// startWithKV is startWith with options made once the buckets are there.
func startWithKV(t *testing.T, options func(map[string]store.KV) relay.Options) *bench {
	t.Helper()
	srv := meshtest.StartServer(t)
	nc := meshtest.Connect(t, srv)
	st, err := store.NewNATS(nc, store.NATSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.DefaultServer()
	b := &bench{srv: srv, names: cfg.Buckets, kv: map[string]store.KV{}, metrics: relay.NewMetrics()}
	for _, bc := range hserver.FleetBuckets(cfg) {
		kv, err := st.Ensure(context.Background(), bc)
		if err != nil {
			t.Fatal(err)
		}
		b.kv[bc.Name] = kv
	}
	opts := options(b.kv)
	opts.Metrics = b.metrics
	rl := relay.NewServer(meshtest.Connect(t, srv), relay.Fleet{DesiredState: b.kv[b.names.DesiredState],
		DeviceInfo: b.kv[b.names.DeviceInfo], DeviceState: b.kv[b.names.DeviceState], DeviceHeartbeat: b.kv[b.names.DeviceHeartbeat]},
		slog.New(slog.DiscardHandler), opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = rl.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	<-rl.Ready()
	return b
}

// device connects as an agent under an identity would: its own inbox.
func (b *bench) device(t *testing.T, id string) (*nats.Conn, *relay.Client) {
	t.Helper()
	nc, err := nats.Connect(b.srv.ClientURL(), nats.CustomInboxPrefix(mesh.DeviceInboxPrefix(id)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc, relay.NewClient(nc, relay.ClientOptions{Device: id, Timeout: 5 * time.Second,
		Republish: map[string]string{b.names.DesiredState: mesh.DesiredSubjectPrefix(b.names.DesiredState)}})
}

func open(t *testing.T, c *relay.Client, bucket string) store.KV {
	t.Helper()
	kv, err := c.Open(context.Background(), bucket)
	if err != nil {
		t.Fatalf("open %s: %v", bucket, err)
	}
	return kv
}

func state(id, dep string) []byte {
	b, _ := json.Marshal(v1.DeviceState{V: v1.FormatVersion, Device: id, Deployment: dep, Phase: "Ready"})
	return b
}

func info(id string) []byte {
	b, _ := json.Marshal(v1.DeviceInfo{V: v1.FormatVersion, ID: id})
	return b
}

// TestRelayRefuses: what a device may not do through the relay is refused
// with store.ErrRefused (or ErrInvalidKey), names what was asked, and
// writes nothing.
func TestRelayRefuses(t *testing.T) {
	b := start(t, relay.Limits{})
	ctx := context.Background()
	if _, err := b.kv[b.names.DesiredState].Create(ctx, "dev-a.web", []byte("a")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.kv[b.names.DesiredState].Create(ctx, "dev-b.web", []byte("b")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.kv[b.names.DeviceInfo].Create(ctx, "dev-b", info("dev-b")); err != nil {
		t.Fatal(err)
	}
	_, a := b.device(t, "dev-a")
	ds, di, dst, hb := open(t, a, b.names.DesiredState), open(t, a, b.names.DeviceInfo), open(t, a, b.names.DeviceState), open(t, a, b.names.DeviceHeartbeat)
	big := bytes.Repeat([]byte("x"), v1.MaxDeviceStateBytes+1)
	cases := []struct {
		name string
		call func() error
		want string // in the error
	}{
		{"read B's desired state", func() error { _, err := ds.Get(ctx, "dev-b.web"); return err }, `"dev-b.web"`},
		{"list B's desired state", func() error { _, err := ds.List(ctx, "dev-b.*"); return err }, `"dev-b.*"`},
		{"list every desired state", func() error { _, err := ds.List(ctx, ">"); return err }, `">"`},
		{"write desired state", func() error { _, err := ds.Create(ctx, "dev-a.new", []byte("x")); return err }, "create"},
		{"read B's info", func() error { _, err := di.Get(ctx, "dev-b"); return err }, `"dev-b"`},
		{"overwrite B's info", func() error { _, err := di.Update(ctx, "dev-b", info("dev-b"), 1); return err }, `"dev-b"`},
		{"delete own info", func() error { return di.Delete(ctx, "dev-a", 0) }, "delete"},
		{"info naming another device", func() error { _, err := di.Create(ctx, "dev-a", info("dev-b")); return err }, `"dev-b"`},
		{"info that does not decode", func() error { _, err := di.Create(ctx, "dev-a", []byte("{")); return err }, "device-info value"},
		{"status for a deployment not given", func() error { _, err := dst.Create(ctx, "dev-a.other", state("dev-a", "other")); return err }, `"other"`},
		{"status naming another key", func() error { _, err := dst.Create(ctx, "dev-a.web", state("dev-a", "db")); return err }, "dev-a.db"},
		{"status too large", func() error { _, err := dst.Create(ctx, "dev-a.web", big); return err }, "device-state value"},
		{"status under a literal wildcard", func() error { _, err := dst.Create(ctx, "dev-a.>", state("dev-a", ">")); return err }, `"dev-a.>"`},
		{"status under a wildcard token", func() error { _, err := dst.Create(ctx, "dev-a.*", state("dev-a", "*")); return err }, `"dev-a.*"`},
		{"status of B", func() error { _, err := dst.Create(ctx, "dev-b.web", state("dev-b", "web")); return err }, `"dev-b.web"`},
		{"heartbeat of B", func() error { _, err := hb.Create(ctx, "dev-b", []byte(`{"v":1,"b":"x","s":1}`)); return err }, `"dev-b"`},
		{"heartbeat that does not decode", func() error { _, err := hb.Create(ctx, "dev-a", []byte(`{"v":1,"junk":1}`)); return err }, "heartbeat value"},
		{"an unknown bucket", func() error { _, err := a.Open(ctx, "deployments"); return err }, `"deployments"`},
		{"the identities bucket", func() error { _, err := a.Open(ctx, "identities"); return err }, `"identities"`},
		{"history of a fleet key", func() error { _, err := dst.History(ctx, "dev-a.web"); return err }, "history"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if !errors.Is(err, store.ErrRefused) && !errors.Is(err, store.ErrInvalidKey) {
				t.Fatalf("err = %v, want refused", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to name %s", err, tc.want)
			}
		})
	}
	// Nothing was written: B's records are as they were, A has none.
	if e, err := b.kv[b.names.DeviceInfo].Get(ctx, "dev-b"); err != nil || !bytes.Equal(e.Value, info("dev-b")) || e.Revision != 1 {
		t.Fatalf("B's info: %v, %v", e, err)
	}
	for _, bucket := range []string{b.names.DeviceInfo, b.names.DeviceState, b.names.DeviceHeartbeat} {
		if l, err := b.kv[bucket].List(ctx, ""); err != nil || len(l) > 1 {
			t.Fatalf("%s holds %v (%v)", bucket, l, err)
		}
	}
	// What A may do still works after all that.
	if _, err := dst.Create(ctx, "dev-a.web", state("dev-a", "web")); err != nil {
		t.Fatalf("own status: %v", err)
	}
	if l, err := ds.List(ctx, "dev-a.*"); err != nil || len(l) != 1 {
		t.Fatalf("own list: %v %v", l, err)
	}
}

// TestRelayAnswersOnlyTheDevicesInbox: a request in a device's name whose
// answer would go anywhere but that device's inbox (a JetStream consumer
// delivering into the relay subject, another client) is not served.
func TestRelayAnswersOnlyTheDevicesInbox(t *testing.T) {
	b := start(t, relay.Limits{})
	ctx := context.Background()
	if _, err := b.kv[b.names.DesiredState].Create(ctx, "dev-a.web", []byte("secret")); err != nil {
		t.Fatal(err)
	}
	other, err := nats.Connect(b.srv.ClientURL()) // default inbox
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	m := nats.NewMsg(relay.Subject("dev-a"))
	m.Header.Set(relay.HdrOp, relay.OpGet)
	m.Header.Set(relay.HdrBucket, b.names.DesiredState)
	m.Header.Set(relay.HdrKey, "dev-a.web")
	if ans, err := other.RequestMsg(m, 500*time.Millisecond); err == nil {
		t.Fatalf("answered to a foreign inbox: %q", ans.Data)
	}
	// A reply naming the JetStream API (the relay answers with the
	// control plane's permissions) is never sent: with an external NATS,
	// whose device users may publish on their relay subject with any
	// reply, this would delete a stream.
	m.Reply = "$JS.API.STREAM.DELETE.KV_" + b.names.DesiredState
	m.Header.Set(relay.HdrOp, relay.OpOpen)
	if err := other.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	if err := other.Flush(); err != nil {
		t.Fatal(err)
	}
	// The device's own request is answered (after the one above: one
	// subscription, in order), and the bucket is still there.
	_, a := b.device(t, "dev-a")
	if e, err := open(t, a, b.names.DesiredState).Get(ctx, "dev-a.web"); err != nil || string(e.Value) != "secret" {
		t.Fatalf("own get: %v %v", e, err)
	}
	if _, err := b.kv[b.names.DesiredState].Get(ctx, "dev-a.web"); err != nil {
		t.Fatalf("the bucket after a reply aimed at the JetStream API: %v", err)
	}
}

// TestRelayFloodIsBounded: a device flooding its relay subject is cut to
// its budget (some of its requests come back rate_limited, the rest are
// dropped) while another device's requests are still served.
func TestRelayFloodIsBounded(t *testing.T) {
	b := start(t, relay.Limits{Rate: 20, Burst: 20, InFlight: 4})
	ctx := context.Background()
	if _, err := b.kv[b.names.DesiredState].Create(ctx, "dev-b.web", []byte("b")); err != nil {
		t.Fatal(err)
	}
	ncA, _ := b.device(t, "dev-a")
	answers, err := ncA.SubscribeSync(mesh.DeviceInboxPrefix("dev-a") + ".flood")
	if err != nil {
		t.Fatal(err)
	}
	// 5,000 heartbeats as fast as the connection takes them.
	for i := range 5000 {
		m := nats.NewMsg(relay.Subject("dev-a"))
		m.Reply = mesh.DeviceInboxPrefix("dev-a") + ".flood"
		m.Header.Set(relay.HdrOp, relay.OpCreate)
		m.Header.Set(relay.HdrBucket, b.names.DeviceHeartbeat)
		m.Header.Set(relay.HdrKey, "dev-a")
		m.Data = []byte(`{"v":1,"b":"x","s":` + strings.Repeat("1", 1+i%5) + `}`)
		if err := ncA.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := ncA.Flush(); err != nil {
		t.Fatal(err)
	}
	// B is served meanwhile.
	_, bc := b.device(t, "dev-b")
	if e, err := open(t, bc, b.names.DesiredState).Get(ctx, "dev-b.web"); err != nil || string(e.Value) != "b" {
		t.Fatalf("B's get during A's flood: %v %v", e, err)
	}
	// A heard that it is rate limited.
	limited := false
	for !limited {
		m, err := answers.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("no rate_limited answer to the flood: %v", err)
		}
		limited = m.Header.Get(relay.HdrError) == relay.CodeRateLimited
	}
}

// TestRelayListCarriesLargeValues: a list whose values do not fit one
// answer names the rest, and the client reads them one by one.
func TestRelayListCarriesLargeValues(t *testing.T) {
	b := start(t, relay.Limits{})
	ctx := context.Background()
	want := map[string][]byte{}
	for _, dep := range []string{"a", "b", "c"} {
		v := bytes.Repeat([]byte(dep), 700<<10)
		want["dev-a."+dep] = v
		if _, err := b.kv[b.names.DesiredState].Create(ctx, "dev-a."+dep, v); err != nil {
			t.Fatal(err)
		}
	}
	_, a := b.device(t, "dev-a")
	l, err := open(t, a, b.names.DesiredState).List(ctx, "dev-a.*")
	if err != nil {
		t.Fatal(err)
	}
	if len(l) != 3 {
		t.Fatalf("list has %d entries", len(l))
	}
	for _, e := range l {
		if !bytes.Equal(e.Value, want[e.Key]) || e.Revision == 0 {
			t.Fatalf("%s: %d bytes at revision %d", e.Key, len(e.Value), e.Revision)
		}
	}
}

// TestRelayPinsLabels: a device keeps the labels it registered with
// (deployments select by label: relabelling itself would claim another
// deployment's desired state); the rest of its record still updates.
func TestRelayPinsLabels(t *testing.T) {
	b := start(t, relay.Limits{})
	ctx := context.Background()
	_, a := b.device(t, "dev-a")
	di := open(t, a, b.names.DeviceInfo)
	rec := func(site, host string) []byte {
		v, _ := json.Marshal(v1.DeviceInfo{V: v1.FormatVersion, ID: "dev-a", Labels: map[string]string{"site": site},
			Inventory: v1.Inventory{Hostname: host}})
		return v
	}
	rev, err := di.Create(ctx, "dev-a", rec("home", "pi"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = di.Update(ctx, "dev-a", rec("office", "pi"), rev)
	if !errors.Is(err, store.ErrRefused) || !strings.Contains(err.Error(), "site=home") {
		t.Fatalf("relabel: %v, want refused naming the registered labels", err)
	}
	if _, err := di.Update(ctx, "dev-a", rec("home", "pi-2"), rev); err != nil {
		t.Fatalf("an update keeping the labels: %v", err)
	}
	e, err := b.kv[b.names.DeviceInfo].Get(ctx, "dev-a")
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := v1.DecodeDeviceInfo(e.Value); d.Labels["site"] != "home" || d.Inventory.Hostname != "pi-2" {
		t.Fatalf("stored %+v", d)
	}
}

// TestRelayRefusesLongKeys: a key long enough to overflow a NATS protocol
// line would close the control plane's connection when it publishes it:
// refused before any I/O.
func TestRelayRefusesLongKeys(t *testing.T) {
	b := start(t, relay.Limits{})
	ctx := context.Background()
	_, a := b.device(t, "dev-a")
	dst := open(t, a, b.names.DeviceState)
	long := "dev-a." + strings.Repeat("x", 5000)
	if _, err := dst.Create(ctx, long, state("dev-a", "x")); !errors.Is(err, store.ErrRefused) {
		t.Fatalf("long key: %v, want refused", err)
	}
	if _, err := open(t, a, b.names.DesiredState).List(ctx, strings.Repeat("a.", 3000)+"*"); !errors.Is(err, store.ErrRefused) {
		t.Fatalf("long filter: %v, want refused", err)
	}
}

// TestRelayAdvertisesTheSpread: open and list answers carry the
// reconnection window the control plane asks for, and the client hands it
// on; a get does not.
func TestRelayAdvertisesTheSpread(t *testing.T) {
	b := startWith(t, relay.Options{Spread: func() time.Duration { return 3500 * time.Millisecond }})
	nc, err := nats.Connect(b.srv.ClientURL(), nats.CustomInboxPrefix(mesh.DeviceInboxPrefix("dev-a")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	heard := make(chan time.Duration, 10)
	c := relay.NewClient(nc, relay.ClientOptions{Device: "dev-a", Timeout: 5 * time.Second,
		OnSpread: func(d time.Duration) { heard <- d }})
	kv := open(t, c, b.names.DesiredState)
	if got := <-heard; got != 3500*time.Millisecond {
		t.Fatalf("open: heard %s, want 3.5s", got)
	}
	if _, err := kv.List(context.Background(), "dev-a.*"); err != nil {
		t.Fatal(err)
	}
	if got := <-heard; got != 3500*time.Millisecond {
		t.Fatalf("list: heard %s, want 3.5s", got)
	}
	if _, err := kv.Get(context.Background(), "dev-a.web"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get of a missing key: %v", err)
	}
	select {
	case d := <-heard:
		t.Fatalf("a get carried the spread (%s)", d)
	default:
	}
}
