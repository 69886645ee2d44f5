package identity_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/harmony-fleet/harmony/internal/identity"
	"github.com/harmony-fleet/harmony/internal/mesh"
	"github.com/harmony-fleet/harmony/internal/mesh/meshtest"
	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// wait bounds every wait for an asynchronous effect: generous, since a
// slow machine must not fail the tests.
const wait = 15 * time.Second

// authServer is an embedded NATS server that admits only nkey users, whose
// users Follow keeps in step with an identities bucket on that same server
// (as in harmony server), read through the server's own connection (a
// fixed user). Device connections do not reconnect on their own, so that
// a test sees every cut.
type authServer struct {
	s   *mesh.Server
	nc  *nats.Conn // the server's own connection to s
	kv  store.KV   // identities
	reg *identity.Registry
	// serverDrops counts disconnections of the server's own connection,
	// which every change of users must keep (it is a fixed user).
	serverDrops atomic.Int32

	applied atomic.Int32 // calls of SetUsers by Follow
}

func startAuthServer(t *testing.T) *authServer {
	t.Helper()
	self, selfPub := newKey(t)
	fixed := []*server.NkeyUser{{Nkey: selfPub}} // nil permissions: everything
	s, err := mesh.StartServer(mesh.ServerConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0", Nkeys: fixed})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	a := &authServer{s: s}
	a.nc, err = nats.Connect(s.ClientURL(), nats.Name("server"), nats.Nkey(selfPub, self.Sign), nats.NoReconnect(),
		nats.DisconnectErrHandler(func(*nats.Conn, error) { a.serverDrops.Add(1) }))
	if err != nil {
		t.Fatalf("connect as the server: %v", err)
	}
	t.Cleanup(a.nc.Close)
	a.reg, _, a.kv = registryOver(t, a.nc)
	a.reg.Now = nil // the real clock

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	apply := func(users []*server.NkeyUser) error {
		defer a.applied.Add(1)
		return s.SetUsers(users)
	}
	go func() {
		defer close(done)
		identity.Follow(ctx, a.kv, fleet, fixed, apply, log, nil)
	}()
	t.Cleanup(func() { cancel(); <-done })
	// Follow loads the (empty) bucket once it has read it.
	retry.Until(t, wait, func() error {
		if a.applied.Load() == 0 {
			return errors.New("no users applied yet")
		}
		return nil
	})
	return a
}

// received subscribes the server's own connection to subject, so that a
// test sees which device publishes got through.
func (a *authServer) received(t *testing.T, subject string) *nats.Subscription {
	t.Helper()
	sub, err := a.nc.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return sub
}

// next checks that the next message sub receives is data on subject
// (the identities bucket's own writes, on the same server, are skipped).
func next(t *testing.T, sub *nats.Subscription, subject, data string) {
	t.Helper()
	m, err := sub.NextMsg(wait)
	for err == nil && strings.HasPrefix(m.Subject, "$KV.identities.") {
		m, err = sub.NextMsg(wait)
	}
	if err != nil {
		t.Fatalf("waiting for %s: %v", subject, err)
	}
	if m.Subject != subject || string(m.Data) != data {
		t.Fatalf("received %q on %s, want %q on %s", m.Data, m.Subject, data, subject)
	}
}

// serverStayed fails t if the server's own connection was dropped.
func (a *authServer) serverStayed(t *testing.T) {
	t.Helper()
	if n := a.serverDrops.Load(); n != 0 {
		t.Fatalf("the server's own connection was dropped %d times by a reload", n)
	}
}

// enroll enrolls device with key by a token.
func (a *authServer) enroll(t *testing.T, device string, key nkeys.KeyPair, cluster string) {
	t.Helper()
	ctx := context.Background()
	secret, _, err := a.reg.CreateToken(ctx, time.Hour, device, cluster, "test")
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := key.PublicKey()
	if _, _, err := a.reg.Enroll(ctx, identity.Request{Device: device, PublicKey: pub, Token: secret, Cluster: cluster}, ""); err != nil {
		t.Fatalf("enroll %s: %v", device, err)
	}
}

// deviceConn is a client connection authenticated with a device's key,
// with what its handlers were told.
type deviceConn struct {
	nc           *nats.Conn
	errs         *asyncErrors
	disconnected chan error    // the first disconnection
	closed       chan struct{} // closed when the connection is
}

// dial connects as device with key, once. The connection does not
// reconnect: once the server drops it, it is closed.
func (a *authServer) dial(t *testing.T, device string, key nkeys.KeyPair) (*deviceConn, error) {
	t.Helper()
	pub, _ := key.PublicKey()
	d := &deviceConn{errs: &asyncErrors{}, disconnected: make(chan error, 1), closed: make(chan struct{})}
	nc, err := nats.Connect(a.s.ClientURL(),
		nats.Name("device "+device),
		nats.Nkey(pub, key.Sign),
		nats.CustomInboxPrefix(mesh.DeviceInboxPrefix(device)),
		nats.NoReconnect(),
		nats.ErrorHandler(d.errs.record),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			select {
			case d.disconnected <- err:
			default:
			}
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(d.closed) }),
	)
	if err != nil {
		return nil, err
	}
	t.Cleanup(nc.Close)
	d.nc = nc
	return d, nil
}

// connects waits until device can connect with key.
func (a *authServer) connects(t *testing.T, device string, key nkeys.KeyPair) *deviceConn {
	t.Helper()
	var d *deviceConn
	retry.Until(t, wait, func() error {
		var err error
		d, err = a.dial(t, device, key)
		return err
	})
	if !d.nc.IsConnected() {
		t.Fatalf("%s connected but is %v", device, d.nc.Status())
	}
	return d
}

// refused checks that device cannot connect with key: the server says
// the credentials are not authorized.
func (a *authServer) refused(t *testing.T, device string, key nkeys.KeyPair) {
	t.Helper()
	d, err := a.dial(t, device, key)
	if err == nil {
		t.Fatalf("%s connected (%v), want refused", device, d.nc.Status())
	}
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("%s connect = %v, want an authorization error", device, err)
	}
}

// cutOff waits until the server has dropped d. (Whether the client reads
// the server's "Authorization Violation" before the connection closes
// varies, so refused checks the credentials afterwards.)
func (d *deviceConn) cutOff(t *testing.T) {
	t.Helper()
	select {
	case <-d.closed:
	case <-time.After(wait):
		t.Fatalf("the connection stayed %v after its identity was withdrawn", d.nc.Status())
	}
}

// connected checks that d is still up: it round-trips with the server and
// was never dropped.
func (d *deviceConn) connected(t *testing.T) {
	t.Helper()
	if err := d.nc.FlushTimeout(wait); err != nil {
		t.Fatalf("connection lost: %v (%v)", err, d.nc.Status())
	}
	select {
	case err := <-d.disconnected:
		t.Fatalf("the connection was dropped: %v", err)
	default:
	}
}

// asyncErrors records what a connection's error handler is given.
type asyncErrors struct {
	mu   sync.Mutex
	errs []error
}

func (a *asyncErrors) record(_ *nats.Conn, _ *nats.Subscription, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.errs = append(a.errs, err)
}

func (a *asyncErrors) all() []error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]error(nil), a.errs...)
}

// violated waits until the server has reported a permissions violation
// for publishing to subject (named only in the error's text).
func (a *asyncErrors) violated(t *testing.T, subject string) {
	t.Helper()
	retry.Until(t, wait, func() error {
		var seen []string
		for _, err := range a.all() {
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `Publish to "`+subject+`"`) {
				return nil
			}
			seen = append(seen, err.Error())
		}
		return fmt.Errorf("no permissions violation for publishing to %q; errors: %q", subject, seen)
	})
}

// subscriptionViolated waits until the server has refused a
// subscription to subject.
func (a *asyncErrors) subscriptionViolated(t *testing.T, subject string) {
	t.Helper()
	retry.Until(t, wait, func() error {
		var seen []string
		for _, err := range a.all() {
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `Subscription to "`+subject+`"`) {
				return nil
			}
			seen = append(seen, err.Error())
		}
		return fmt.Errorf("no permissions violation for subscribing to %q; errors: %q", subject, seen)
	})
}

func (a *asyncErrors) none(t *testing.T) {
	t.Helper()
	if errs := a.all(); len(errs) > 0 {
		t.Fatalf("the server refused something: %v", errs)
	}
}

func TestFollowRefusesUnknownKeys(t *testing.T) {
	a := startAuthServer(t)
	key, _ := newKey(t)
	a.refused(t, "dev-a", key)

	// A request waiting for approval is no identity yet.
	pub, _ := key.PublicKey()
	if _, _, err := a.reg.Enroll(context.Background(), identity.Request{Device: "dev-a", PublicKey: pub}, ""); err != nil {
		t.Fatal(err)
	}
	// Once a later enrollment is in force, Follow has seen the request.
	later, _ := newKey(t)
	a.enroll(t, "dev-z", later, "")
	a.connects(t, "dev-z", later)
	// It gives the waiting key no user.
	a.refused(t, "dev-a", key)
	if _, err := a.reg.Approve(context.Background(), "dev-a", identity.ApproveOptions{}); err != nil {
		t.Fatal(err)
	}
	a.connects(t, "dev-a", key)
	a.serverStayed(t)
}

func TestFollowEnrollRevokeReenroll(t *testing.T) {
	a := startAuthServer(t)
	ctx := context.Background()
	old, _ := newKey(t)
	a.refused(t, "dev-a", old)

	a.enroll(t, "dev-a", old, "")
	d := a.connects(t, "dev-a", old)
	other, _ := newKey(t)
	a.enroll(t, "dev-b", other, "")
	b := a.connects(t, "dev-b", other)

	if err := a.reg.Revoke(ctx, "dev-a"); err != nil {
		t.Fatal(err)
	}
	d.cutOff(t)
	a.refused(t, "dev-a", old)
	// Another device's connection is untouched.
	b.connected(t)

	next, _ := newKey(t)
	a.enroll(t, "dev-a", next, "")
	a.connects(t, "dev-a", next)
	a.refused(t, "dev-a", old)
	b.connected(t)
	b.errs.none(t)
	a.serverStayed(t)
}

// TestFollowRotation: a new key for an enrolled device cuts the old key's
// connections off at once.
func TestFollowRotation(t *testing.T) {
	a := startAuthServer(t)
	old, _ := newKey(t)
	a.enroll(t, "dev-a", old, "")
	d := a.connects(t, "dev-a", old)

	next, _ := newKey(t)
	a.enroll(t, "dev-a", next, "")
	d.cutOff(t)
	a.refused(t, "dev-a", old)
	a.connects(t, "dev-a", next)
	a.serverStayed(t)
}

// TestFollowUnreadableRecord: a record that does not match its key is
// refused, never given another device's permissions.
func TestFollowUnreadableRecord(t *testing.T) {
	a := startAuthServer(t)
	ctx := context.Background()
	key, pub := newKey(t)
	a.enroll(t, "dev-a", key, "")
	d := a.connects(t, "dev-a", key)

	e, err := a.kv.Get(ctx, identity.DeviceKey("dev-a"))
	if err != nil {
		t.Fatal(err)
	}
	// The record under dev-a's key claims to be dev-b's.
	forged := fmt.Sprintf(`{"v":1,"device":"dev-b","publicKey":%q,"enrolled":"2030-01-01T00:00:00Z","via":"token"}`, pub)
	if _, err := a.kv.Update(ctx, e.Key, []byte(forged), e.Revision); err != nil {
		t.Fatal(err)
	}
	d.cutOff(t)
	a.refused(t, "dev-a", key)

	// A readable record again lets it in.
	good := fmt.Sprintf(`{"v":1,"device":"dev-a","publicKey":%q,"enrolled":"2030-01-01T00:00:00Z","via":"token"}`, pub)
	e, err = a.kv.Get(ctx, identity.DeviceKey("dev-a"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.kv.Update(ctx, e.Key, []byte(good), e.Revision); err != nil {
		t.Fatal(err)
	}
	a.connects(t, "dev-a", key)
	a.serverStayed(t)
}

// TestFollowDevicePermissions: an enrolled device's connection may send
// on its own relay subject (and follow its failover cluster's bucket), and
// the server refuses another device's relay subject, direct writes into a
// bucket, and another cluster's bucket.
func TestFollowDevicePermissions(t *testing.T) {
	a := startAuthServer(t)
	sub := a.received(t, "harmony.relay.>")
	keyA, _ := newKey(t)
	keyB, _ := newKey(t)
	a.enroll(t, "dev-a", keyA, "pg1")
	a.enroll(t, "dev-b", keyB, "")
	da := a.connects(t, "dev-a", keyA)

	publish := func(d *deviceConn, subject, data string) {
		t.Helper()
		if err := d.nc.Publish(subject, []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	subscribe := func(d *deviceConn, subject string) {
		t.Helper()
		if _, err := d.nc.SubscribeSync(subject); err != nil {
			t.Fatal(err)
		}
		if err := d.nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	// Its own relay subject gets through; it follows its cluster's bucket.
	publish(da, "harmony.relay.dev-a", "a")
	next(t, sub, "harmony.relay.dev-a", "a")
	subscribe(da, "harmony.kv.failover-pg1.>")
	da.errs.none(t)

	// Another device's relay subject, and any write straight into a
	// bucket (its own keys included), are refused.
	for _, subject := range []string{"harmony.relay.dev-b", "$KV.device-heartbeat.dev-a", "$KV.failover-pg1.leader", "$KV.device-info.dev-b"} {
		publish(da, subject, "forged")
		da.errs.violated(t, subject)
	}
	// Messages of one connection arrive in order: had a forgery got
	// through, it would come before this.
	publish(da, "harmony.relay.dev-a", "after")
	next(t, sub, "harmony.relay.dev-a", "after")

	// dev-b is no failover member: pg1's bucket is refused to it.
	db := a.connects(t, "dev-b", keyB)
	subscribe(db, "harmony.kv.failover-pg1.>")
	db.errs.subscriptionViolated(t, "harmony.kv.failover-pg1.>")
	publish(db, "harmony.relay.dev-b", "b")
	next(t, sub, "harmony.relay.dev-b", "b")
	a.serverStayed(t)
}

// TestFollowPermissionsChangeReconnects: re-enrolling a connected key with
// a cluster closes its open connection; connecting again, it may follow
// the cluster's bucket.
func TestFollowPermissionsChangeReconnects(t *testing.T) {
	a := startAuthServer(t)
	ctx := context.Background()
	key, pub := newKey(t)
	a.enroll(t, "dev-a", key, "")
	d := a.connects(t, "dev-a", key)
	if _, err := d.nc.SubscribeSync("harmony.kv.failover-pg1.>"); err != nil {
		t.Fatal(err)
	}
	_ = d.nc.Flush()
	d.errs.subscriptionViolated(t, "harmony.kv.failover-pg1.>")

	// The same key, now with the cluster.
	secret, _, err := a.reg.CreateToken(ctx, time.Hour, "dev-a", "pg1", "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.reg.Enroll(ctx, identity.Request{Device: "dev-a", PublicKey: pub, Token: secret, Cluster: "pg1"}, ""); err != nil {
		t.Fatal(err)
	}
	d.cutOff(t)
	var again *deviceConn
	retry.Until(t, wait, func() error {
		c, err := a.dial(t, "dev-a", key)
		if err != nil {
			return err
		}
		s, err := c.nc.SubscribeSync("harmony.kv.failover-pg1.x")
		if err == nil {
			err = c.nc.Flush()
		}
		if err == nil {
			// Delivered only if the subscription was taken.
			err = a.nc.Publish("harmony.kv.failover-pg1.x", []byte("2"))
		}
		if err == nil {
			_, err = s.NextMsg(time.Second)
		}
		if err != nil {
			c.nc.Close()
			return err
		}
		again = c
		return nil
	})
	again.connected(t)
	a.serverStayed(t)
}

// TestFollowAdmin: an admin identity connects without limits, until its
// record goes.
func TestFollowAdmin(t *testing.T) {
	a := startAuthServer(t)
	ctx := context.Background()
	sub := a.received(t, "$KV.>")
	key, pub := newKey(t)
	a.refused(t, "admin", key)
	if err := a.reg.SetAdmin(ctx, identity.Admin{Name: "s1", PublicKey: pub}); err != nil {
		t.Fatal(err)
	}
	d := a.connects(t, "admin", key)
	for _, subject := range []string{"$KV.device-heartbeat.dev-b", "$KV.desired-state.dev-b.web", "elsewhere"} {
		if err := d.nc.Publish(subject, []byte("admin")); err != nil {
			t.Fatal(err)
		}
	}
	next(t, sub, "$KV.device-heartbeat.dev-b", "admin")
	next(t, sub, "$KV.desired-state.dev-b.web", "admin")
	// Also outside the device inbox prefix.
	if _, err := d.nc.SubscribeSync("anything.>"); err != nil {
		t.Fatal(err)
	}
	if err := d.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	d.errs.none(t)

	// Deleting the admin record withdraws it.
	e, err := a.kv.Get(ctx, identity.AdminKey("s1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.kv.Delete(ctx, e.Key, e.Revision); err != nil {
		t.Fatal(err)
	}
	d.cutOff(t)
	a.refused(t, "admin", key)
	a.serverStayed(t)
}

// TestFollowUsers: what Follow hands apply: the fixed users first, then
// the bucket's admins and devices, after the bucket was read and after
// each change; it stops when its context ends.
func TestFollowUsers(t *testing.T) {
	s := meshtest.StartServer(t)
	reg, _, kv := registryOn(t, s)
	ctx := context.Background()
	_, self := newKey(t)
	_, admin := newKey(t)
	_, devA := newKey(t)
	if err := reg.SetAdmin(ctx, identity.Admin{Name: "s1", PublicKey: admin}); err != nil {
		t.Fatal(err)
	}
	enroll(t, reg, "dev-a", devA) // before Follow starts: read in the replay

	var mu sync.Mutex
	var last []*server.NkeyUser
	var calls int
	fail := true
	apply := func(users []*server.NkeyUser) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if fail { // the first load fails: Follow goes on
			fail = false
			return errors.New("refused")
		}
		last = users
		return nil
	}
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		identity.Follow(fctx, kv, fleet, []*server.NkeyUser{{Nkey: self}}, apply, slog.New(slog.NewTextHandler(t.Output(), nil)), nil)
	}()
	defer func() { cancel(); <-done }()

	want := func(keys ...string) func() error {
		return func() error {
			mu.Lock()
			defer mu.Unlock()
			var got []string
			for _, u := range last {
				got = append(got, u.Nkey)
			}
			if fmt.Sprint(got) != fmt.Sprint(keys) {
				return fmt.Errorf("applied %q (after %d calls), want %q", got, calls, keys)
			}
			return nil
		}
	}
	// The first load failed; the next change is applied in full.
	retry.Until(t, wait, func() error {
		mu.Lock()
		defer mu.Unlock()
		if calls == 0 {
			return errors.New("not called yet")
		}
		return nil
	})
	_, devB := newKey(t)
	enroll(t, reg, "dev-b", devB)
	// Admins, devices, then the fixed users (last, so that they win).
	retry.Until(t, wait, want(admin, devA, devB, self))
	mu.Lock()
	if last[0].Permissions != nil || last[1].Permissions == nil || last[2].Permissions == nil || last[3].Permissions != nil {
		t.Errorf("permissions: admin %v, dev-a %v, dev-b %v, server %v; want nil, set, set, nil",
			last[0].Permissions, last[1].Permissions, last[2].Permissions, last[3].Permissions)
	}
	mu.Unlock()

	if err := reg.Revoke(ctx, "dev-a"); err != nil {
		t.Fatal(err)
	}
	retry.Until(t, wait, want(admin, devB, self))

	cancel()
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatal("Follow did not return after its context ended")
	}
}

// TestSetUsers: the embedded server's users change without a restart:
// added users connect, removed users are cut off, a user whose permissions
// changed is cut off and connects again with the new ones, other
// connections stay.
func TestSetUsers(t *testing.T) {
	selfKey, self := newKey(t)
	keyA, pubA := newKey(t)
	keyB, pubB := newKey(t)
	s, err := mesh.StartServer(mesh.ServerConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0", Nkeys: []*server.NkeyUser{{Nkey: self}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	a := &authServer{s: s}
	srv, err := a.dial(t, "server", selfKey)
	if err != nil {
		t.Fatal(err)
	}
	a.refused(t, "dev-a", keyA)

	only := func(subject string) *server.Permissions {
		return &server.Permissions{Publish: &server.SubjectPermission{Allow: []string{subject}},
			Subscribe: &server.SubjectPermission{Allow: []string{mesh.DeviceInboxPrefix("dev-a") + ".>"}}}
	}
	set := func(users ...*server.NkeyUser) {
		t.Helper()
		if err := s.SetUsers(users); err != nil {
			t.Fatalf("SetUsers: %v", err)
		}
	}
	set(&server.NkeyUser{Nkey: self}, &server.NkeyUser{Nkey: pubA, Permissions: only("one")}, &server.NkeyUser{Nkey: pubB})
	// SetUsers returns once the users are loaded: no waiting needed.
	da, err := a.dial(t, "dev-a", keyA)
	if err != nil {
		t.Fatalf("dev-a after SetUsers: %v", err)
	}
	db, err := a.dial(t, "dev-b", keyB)
	if err != nil {
		t.Fatalf("dev-b after SetUsers: %v", err)
	}
	if err := da.nc.Publish("two", nil); err != nil {
		t.Fatal(err)
	}
	da.errs.violated(t, "two")

	// New permissions close the open connection; the next one has them.
	set(&server.NkeyUser{Nkey: self}, &server.NkeyUser{Nkey: pubA, Permissions: only("two")}, &server.NkeyUser{Nkey: pubB})
	da.cutOff(t)
	db.connected(t) // unchanged: stays
	if da, err = a.dial(t, "dev-a", keyA); err != nil {
		t.Fatalf("dev-a after the change: %v", err)
	}
	sub, err := srv.nc.SubscribeSync("two")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := da.nc.Publish("two", []byte("now")); err != nil {
		t.Fatal(err)
	}
	if m, err := sub.NextMsg(wait); err != nil || string(m.Data) != "now" {
		t.Fatalf("dev-a's publish to two after the change = %v, %v; want delivered", m, err)
	}
	if err := da.nc.Publish("one", nil); err != nil {
		t.Fatal(err)
	}
	da.errs.violated(t, "one")

	// Removing dev-b cuts it off; dev-a and the server stay.
	set(&server.NkeyUser{Nkey: self}, &server.NkeyUser{Nkey: pubA, Permissions: only("two")})
	db.cutOff(t)
	a.refused(t, "dev-b", keyB)
	da.connected(t)
	srv.connected(t)
	srv.errs.none(t)
}
