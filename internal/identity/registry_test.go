package identity_test

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
	"github.com/nats-io/nkeys"

	"github.com/harmony-fleet/harmony/internal/identity"
	"github.com/harmony-fleet/harmony/internal/mesh"
	"github.com/harmony-fleet/harmony/internal/mesh/meshtest"
	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// clock is a settable Registry.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

var epoch = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// newRegistry returns a registry on a fresh identities bucket of a real
// embedded JetStream server, with its clock set to epoch, and the bucket.
func newRegistry(t *testing.T) (*identity.Registry, *clock, store.KV) {
	t.Helper()
	return registryOn(t, meshtest.StartServer(t))
}

func registryOn(t *testing.T, s *mesh.Server) (*identity.Registry, *clock, store.KV) {
	t.Helper()
	return registryOver(t, meshtest.Connect(t, s))
}

// registryOver is registryOn over a connection of the caller's.
func registryOver(t *testing.T, nc *nats.Conn) (*identity.Registry, *clock, store.KV) {
	t.Helper()
	st, err := store.NewNATS(nc, store.NATSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := st.Ensure(context.Background(), store.BucketConfig{Name: "identities", History: 1, Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: epoch}
	return &identity.Registry{KV: kv, Now: c.Now}, c, kv
}

// token creates an enrollment token valid for an hour.
func token(t *testing.T, reg *identity.Registry, device, cluster string) string {
	t.Helper()
	secret, _, err := reg.CreateToken(context.Background(), time.Hour, device, cluster, "test")
	if err != nil {
		t.Fatalf("create token: %v", err)
	}
	return secret
}

// enroll enrolls device with key using a fresh token, failing t otherwise.
func enroll(t *testing.T, reg *identity.Registry, device, key string) identity.Record {
	t.Helper()
	rec, p, err := reg.Enroll(context.Background(), identity.Request{Device: device, PublicKey: key, Token: token(t, reg, device, "")}, "10.0.0.1")
	if err != nil || p != nil {
		t.Fatalf("enroll %s: %v (pending %v)", device, err, p)
	}
	return rec
}

func readRecord(t *testing.T, kv store.KV, device string) (identity.Record, bool) {
	t.Helper()
	e, err := kv.Get(context.Background(), identity.DeviceKey(device))
	if errors.Is(err, store.ErrNotFound) {
		return identity.Record{}, false
	}
	if err != nil {
		t.Fatalf("get %s: %v", identity.DeviceKey(device), err)
	}
	var rec identity.Record
	if err := json.Unmarshal(e.Value, &rec); err != nil {
		t.Fatalf("record of %s: %v", device, err)
	}
	return rec, true
}

func exists(t *testing.T, kv store.KV, key string) bool {
	t.Helper()
	_, err := kv.Get(context.Background(), key)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get %s: %v", key, err)
	}
	return err == nil
}

func status(t *testing.T, reg *identity.Registry, device, key string) string {
	t.Helper()
	s, err := reg.Status(context.Background(), device, key)
	if err != nil {
		t.Fatalf("status of %s: %v", device, err)
	}
	return s
}

func keysOf(t *testing.T, kv store.KV) []string {
	t.Helper()
	entries, err := kv.List(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, e := range entries {
		keys = append(keys, e.Key)
	}
	return keys
}

func TestEnrollWithToken(t *testing.T) {
	reg, _, kv := newRegistry(t)
	ctx := context.Background()
	_, pub := newKey(t)

	secret, tok, err := reg.CreateToken(ctx, time.Hour, "", "", "ops")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(secret, identity.TokenPrefix) {
		t.Errorf("token %q lacks the prefix %q", secret, identity.TokenPrefix)
	}
	if want := (identity.Token{V: 1, Expires: epoch.Add(time.Hour), Created: epoch, By: "ops"}); tok != want {
		t.Errorf("token = %+v, want %+v", tok, want)
	}
	// The bucket holds the token's hash only, never the token.
	if keys := keysOf(t, kv); len(keys) != 1 || keys[0] != identity.TokenKey(secret) {
		t.Fatalf("bucket keys = %q, want only %q", keys, identity.TokenKey(secret))
	}
	e, err := kv.Get(ctx, identity.TokenKey(secret))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(e.Value), secret) {
		t.Fatalf("the bucket stores the token itself: %s", e.Value)
	}

	rec, p, err := reg.Enroll(ctx, identity.Request{Device: "dev-a", PublicKey: pub, Token: secret}, "10.0.0.1")
	if err != nil || p != nil {
		t.Fatalf("Enroll = %v, pending %v; want enrolled", err, p)
	}
	want := identity.Record{V: 1, Device: "dev-a", PublicKey: pub, Enrolled: epoch, Via: "token"}
	if rec != want {
		t.Fatalf("Enroll = %+v, want %+v", rec, want)
	}
	if stored, ok := readRecord(t, kv, "dev-a"); !ok || stored != want {
		t.Fatalf("stored record = %+v (present %v), want %+v", stored, ok, want)
	}
	if exists(t, kv, identity.TokenKey(secret)) {
		t.Fatal("the token is still in the bucket after its use")
	}
	if s := status(t, reg, "dev-a", pub); s != "enrolled" {
		t.Fatalf("Status = %q, want enrolled", s)
	}
	if s := status(t, reg, "dev-a", mustKey(t)); s != "unknown" {
		t.Fatalf("Status with another key = %q, want unknown", s)
	}

	// Spent: neither the same device nor another may use it again.
	for _, dev := range []string{"dev-a", "dev-b"} {
		_, _, err := reg.Enroll(ctx, identity.Request{Device: dev, PublicKey: mustKey(t), Token: secret}, "10.0.0.1")
		if !errors.Is(err, identity.ErrBadToken) {
			t.Errorf("second use of the token for %s = %v, want ErrBadToken", dev, err)
		}
	}
	if stored, _ := readRecord(t, kv, "dev-a"); stored.PublicKey != pub {
		t.Errorf("a spent token replaced dev-a's key: %+v", stored)
	}
	if exists(t, kv, identity.DeviceKey("dev-b")) {
		t.Error("a spent token enrolled dev-b")
	}

	recs, pend, err := reg.List(ctx)
	if err != nil || len(recs) != 1 || recs[0] != want || len(pend) != 0 {
		t.Fatalf("List = %+v, %+v, %v; want only %+v", recs, pend, err, want)
	}
}

func TestEnrollUnknownToken(t *testing.T) {
	reg, _, kv := newRegistry(t)
	secret, _ := identity.NewToken() // never stored
	_, _, err := reg.Enroll(context.Background(), identity.Request{Device: "dev-a", PublicKey: mustKey(t), Token: secret}, "")
	if !errors.Is(err, identity.ErrBadToken) {
		t.Fatalf("Enroll with an unknown token = %v, want ErrBadToken", err)
	}
	if keys := keysOf(t, kv); len(keys) != 0 {
		t.Fatalf("bucket keys = %q, want none", keys)
	}
}

func TestEnrollInvalidRequest(t *testing.T) {
	reg, _, kv := newRegistry(t)
	secret := token(t, reg, "", "")
	_, _, err := reg.Enroll(context.Background(), identity.Request{Device: "Dev_A", PublicKey: mustKey(t), Token: secret}, "")
	var fe *identity.FieldError
	if !errors.As(err, &fe) || fe.Field != "device" {
		t.Fatalf("Enroll of an invalid id = %v, want a FieldError on device", err)
	}
	if !exists(t, kv, identity.TokenKey(secret)) {
		t.Fatal("an invalid request spent the token")
	}
}

func TestTokenExpiry(t *testing.T) {
	reg, clk, kv := newRegistry(t)
	ctx := context.Background()
	secret, tok, err := reg.CreateToken(ctx, 10*time.Minute, "", "", "ops")
	if err != nil {
		t.Fatal(err)
	}
	if !tok.Expires.Equal(epoch.Add(10 * time.Minute)) {
		t.Fatalf("token expires %v, want %v", tok.Expires, epoch.Add(10*time.Minute))
	}
	req := identity.Request{Device: "dev-a", PublicKey: mustKey(t), Token: secret}

	for _, at := range []time.Duration{10 * time.Minute, time.Hour} {
		clk.Set(epoch.Add(at))
		if _, _, err := reg.Enroll(ctx, req, ""); !errors.Is(err, identity.ErrBadToken) {
			t.Fatalf("Enroll %s after creation = %v, want ErrBadToken (expired)", at, err)
		}
	}
	if exists(t, kv, identity.DeviceKey("dev-a")) {
		t.Fatal("an expired token enrolled the device")
	}
	// A refused token is not spent: a second before expiry it still works.
	clk.Set(epoch.Add(10*time.Minute - time.Second))
	if _, _, err := reg.Enroll(ctx, req, ""); err != nil {
		t.Fatalf("Enroll a second before expiry = %v, want success", err)
	}
}

func TestTokenPinnedToDevice(t *testing.T) {
	reg, _, kv := newRegistry(t)
	ctx := context.Background()
	secret := token(t, reg, "dev-a", "")
	for _, other := range []string{"dev-b", "dev-a.x", "dev-a-2", "dev"} {
		_, _, err := reg.Enroll(ctx, identity.Request{Device: other, PublicKey: mustKey(t), Token: secret}, "")
		if !errors.Is(err, identity.ErrBadToken) {
			t.Errorf("token for dev-a used by %s = %v, want ErrBadToken", other, err)
		}
		if exists(t, kv, identity.DeviceKey(other)) {
			t.Errorf("token for dev-a enrolled %s", other)
		}
	}
	if _, _, err := reg.Enroll(ctx, identity.Request{Device: "dev-a", PublicKey: mustKey(t), Token: secret}, ""); err != nil {
		t.Fatalf("token for dev-a used by dev-a = %v, want success", err)
	}
}

func TestTokenCluster(t *testing.T) {
	cases := []struct {
		name, token, asked string
		ok                 bool
	}{
		{"token without cluster, none asked", "", "", true},
		{"token without cluster refuses a cluster", "", "pg1", false},
		{"token for pg1, pg1 asked", "pg1", "pg1", true},
		{"token for pg1 refuses pg2", "pg1", "pg2", false},
		{"token for pg1, none asked", "pg1", "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			reg, _, kv := newRegistry(t)
			secret := token(t, reg, "", c.token)
			rec, _, err := reg.Enroll(context.Background(), identity.Request{Device: "dev-a", PublicKey: mustKey(t), Token: secret, Cluster: c.asked}, "")
			if !c.ok {
				if !errors.Is(err, identity.ErrBadToken) {
					t.Fatalf("Enroll = %v, want ErrBadToken", err)
				}
				if exists(t, kv, identity.DeviceKey("dev-a")) || !exists(t, kv, identity.TokenKey(secret)) {
					t.Fatal("a refused request wrote a record or spent the token")
				}
				return
			}
			if err != nil {
				t.Fatalf("Enroll = %v, want success", err)
			}
			if stored, _ := readRecord(t, kv, "dev-a"); rec.Cluster != c.asked || stored.Cluster != c.asked {
				t.Fatalf("record cluster = %q (stored %q), want %q", rec.Cluster, stored.Cluster, c.asked)
			}
		})
	}
}

// TestTokenRace: devices racing with one token: exactly one is enrolled.
func TestTokenRace(t *testing.T) {
	reg, _, kv := newRegistry(t)
	ctx := context.Background()
	const n = 8
	for round := range 5 {
		secret := token(t, reg, "", "")
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				dev := fmt.Sprintf("r%d-dev-%d", round, i)
				_, _, errs[i] = reg.Enroll(ctx, identity.Request{Device: dev, PublicKey: mustKeyNoT(), Token: secret}, "")
			})
		}
		wg.Wait()
		var winners []string
		for i, err := range errs {
			dev := fmt.Sprintf("r%d-dev-%d", round, i)
			switch {
			case err == nil:
				winners = append(winners, dev)
			case !errors.Is(err, identity.ErrBadToken):
				t.Errorf("round %d: %s: %v, want success or ErrBadToken", round, dev, err)
			}
			if enrolled := exists(t, kv, identity.DeviceKey(dev)); enrolled != (err == nil) {
				t.Errorf("round %d: %s enrolled = %v, but Enroll returned %v", round, dev, enrolled, err)
			}
		}
		if len(winners) != 1 {
			t.Fatalf("round %d: %d devices enrolled with one token (%q), want exactly 1", round, len(winners), winners)
		}
	}
}

// mustKeyNoT makes a public key off the test goroutine.
func mustKeyNoT() string {
	kp, err := nkeys.CreateUser()
	if err != nil {
		panic(err)
	}
	pub, _ := kp.PublicKey()
	return pub
}

func TestEnrollPendingAndApprove(t *testing.T) {
	reg, clk, kv := newRegistry(t)
	ctx := context.Background()
	_, pub := newKey(t)
	req := identity.Request{Device: "dev-a", PublicKey: pub}

	rec, p, err := reg.Enroll(ctx, req, "10.0.0.7")
	if err != nil || p == nil || rec != (identity.Record{}) {
		t.Fatalf("Enroll without token = %+v, %+v, %v; want pending only", rec, p, err)
	}
	want := identity.Pending{V: 1, Device: "dev-a", PublicKey: pub, Requested: epoch, From: "10.0.0.7"}
	if *p != want {
		t.Fatalf("pending = %+v, want %+v", *p, want)
	}
	if exists(t, kv, identity.DeviceKey("dev-a")) {
		t.Fatal("a request without token wrote an identity")
	}
	if s := status(t, reg, "dev-a", pub); s != "pending" {
		t.Fatalf("Status = %q, want pending", s)
	}
	if s := status(t, reg, "dev-a", mustKey(t)); s != "unknown" {
		t.Fatalf("Status with another key = %q, want unknown", s)
	}

	// Asking again with the same key returns the waiting request as is.
	clk.Set(epoch.Add(time.Minute))
	_, again, err := reg.Enroll(ctx, req, "10.0.0.8")
	if err != nil || again == nil || *again != want {
		t.Fatalf("second Enroll = %+v, %v; want the first request %+v", again, err, want)
	}
	// Another key, or another cluster, for the waiting device is refused.
	for _, other := range []identity.Request{
		{Device: "dev-a", PublicKey: mustKey(t)},
		{Device: "dev-a", PublicKey: pub, Cluster: "pg1"},
	} {
		_, p, err := reg.Enroll(ctx, other, "10.6.6.6")
		var ce *identity.ConflictError
		if !errors.As(err, &ce) || p != nil {
			t.Fatalf("Enroll %+v over a waiting request = %v (pending %v), want a *ConflictError", other, err, p)
		}
	}
	_, pend, err := reg.List(ctx)
	if err != nil || len(pend) != 1 || pend[0] != want {
		t.Fatalf("List pending = %+v, %v; want only %+v", pend, err, want)
	}

	clk.Set(epoch.Add(2 * time.Minute))
	got, err := reg.Approve(ctx, "dev-a", identity.ApproveOptions{})
	if err != nil {
		t.Fatalf("Approve: %v", err)
	}
	wantRec := identity.Record{V: 1, Device: "dev-a", PublicKey: pub, Enrolled: epoch.Add(2 * time.Minute), Via: "approval"}
	if got.Record != wantRec || got.Request != want || got.Replaced != "" {
		t.Fatalf("Approve = %+v, want %+v granting the request %+v", got, wantRec, want)
	}
	if stored, ok := readRecord(t, kv, "dev-a"); !ok || stored != wantRec {
		t.Fatalf("stored = %+v (present %v), want %+v", stored, ok, wantRec)
	}
	if exists(t, kv, identity.PendingKey("dev-a")) {
		t.Fatal("the request is still waiting after its approval")
	}
	if s := status(t, reg, "dev-a", pub); s != "enrolled" {
		t.Fatalf("Status = %q, want enrolled", s)
	}
	if _, err := reg.Approve(ctx, "dev-a", identity.ApproveOptions{}); !errors.Is(err, identity.ErrNoRequest) {
		t.Fatalf("second Approve = %v, want ErrNoRequest", err)
	}
	if _, err := reg.Approve(ctx, "dev-zz", identity.ApproveOptions{}); !errors.Is(err, identity.ErrNoRequest) {
		t.Fatalf("Approve of an unknown device = %v, want ErrNoRequest", err)
	}
}

func TestApproveKeepsCluster(t *testing.T) {
	reg, _, kv := newRegistry(t)
	ctx := context.Background()
	_, pub := newKey(t)
	if _, _, err := reg.Enroll(ctx, identity.Request{Device: "dev-a", PublicKey: pub, Cluster: "pg1"}, ""); err != nil {
		t.Fatal(err)
	}
	a, err := reg.Approve(ctx, "dev-a", identity.ApproveOptions{})
	if err != nil || a.Record.Cluster != "pg1" {
		t.Fatalf("Approve = %+v, %v; want cluster pg1", a, err)
	}
	if stored, _ := readRecord(t, kv, "dev-a"); stored.Cluster != "pg1" {
		t.Fatalf("stored cluster = %q, want pg1", stored.Cluster)
	}
}

// TestTokenReplacesPending: a token enrollment drops the device's waiting
// request, so that a later approval cannot swap the key back.
func TestTokenReplacesPending(t *testing.T) {
	reg, _, kv := newRegistry(t)
	ctx := context.Background()
	if _, _, err := reg.Enroll(ctx, identity.Request{Device: "dev-a", PublicKey: mustKey(t)}, ""); err != nil {
		t.Fatal(err)
	}
	_, pub := newKey(t)
	enroll(t, reg, "dev-a", pub)
	if exists(t, kv, identity.PendingKey("dev-a")) {
		t.Fatal("the request still waits after a token enrollment")
	}
	if _, err := reg.Approve(ctx, "dev-a", identity.ApproveOptions{}); !errors.Is(err, identity.ErrNoRequest) {
		t.Fatalf("Approve after a token enrollment = %v, want ErrNoRequest", err)
	}
	if stored, _ := readRecord(t, kv, "dev-a"); stored.PublicKey != pub {
		t.Fatalf("stored key = %s, want the token's %s", stored.PublicKey, pub)
	}
}

func TestNestedIDsRefused(t *testing.T) {
	cases := []struct {
		name  string
		setup func(t *testing.T, reg *identity.Registry, device string) // enrolls or queues first
		first string
		asked string
		token []bool // whether the second request comes with a token
	}{
		{"enrolled a, a.b asked", enrolled, "a", "a.b", []bool{true, false}},
		{"enrolled a.b, a asked", enrolled, "a.b", "a", []bool{true, false}},
		{"enrolled a, a.b.c asked", enrolled, "a", "a.b.c", []bool{true, false}},
		// Two waiting requests may not nest either. (Whether a waiting
		// request should also block a token enrollment is left open:
		// Approve checks again, so that one need not.)
		{"waiting a, a.b asked", waiting, "a", "a.b", []bool{false}},
		{"waiting a.b, a asked", waiting, "a.b", "a", []bool{false}},
	}
	for _, c := range cases {
		for _, withToken := range c.token {
			t.Run(fmt.Sprintf("%s/token=%v", c.name, withToken), func(t *testing.T) {
				reg, _, kv := newRegistry(t)
				ctx := context.Background()
				c.setup(t, reg, c.first)
				before := keysOf(t, kv)
				req := identity.Request{Device: c.asked, PublicKey: mustKey(t)}
				var secret string
				if withToken {
					secret = token(t, reg, "", "")
					req.Token = secret
				}
				_, p, err := reg.Enroll(ctx, req, "")
				var ce *identity.ConflictError
				if !errors.As(err, &ce) || p != nil {
					t.Fatalf("Enroll %s = %v (pending %v), want a *ConflictError", c.asked, err, p)
				}
				if exists(t, kv, identity.DeviceKey(c.asked)) || exists(t, kv, identity.PendingKey(c.asked)) {
					t.Fatalf("a refused nested id %s was written", c.asked)
				}
				if withToken && !exists(t, kv, identity.TokenKey(secret)) {
					t.Fatal("a refused nested id spent the token")
				}
				after := keysOf(t, kv)
				if withToken {
					after = slicesDelete(after, identity.TokenKey(secret))
				}
				if fmt.Sprint(after) != fmt.Sprint(before) {
					t.Fatalf("bucket keys %q became %q", before, after)
				}
			})
		}
	}

	t.Run("siblings are not nested", func(t *testing.T) {
		reg, _, _ := newRegistry(t)
		enrolled(t, reg, "a")
		enrolled(t, reg, "ab")
		enrolled(t, reg, "b.a")
		waiting(t, reg, "a-b")
	})
}

func enrolled(t *testing.T, reg *identity.Registry, device string) {
	enroll(t, reg, device, mustKey(t))
}

func waiting(t *testing.T, reg *identity.Registry, device string) {
	t.Helper()
	if _, p, err := reg.Enroll(context.Background(), identity.Request{Device: device, PublicKey: mustKey(t)}, ""); err != nil || p == nil {
		t.Fatalf("queue %s: %v", device, err)
	}
}

func slicesDelete(s []string, v string) []string {
	var out []string
	for _, x := range s {
		if x != v {
			out = append(out, x)
		}
	}
	return out
}

// TestApproveRefusesNested: a request cannot be approved once a nested id
// holds an identity (written here directly, as a racing enrollment could).
func TestApproveRefusesNested(t *testing.T) {
	reg, _, kv := newRegistry(t)
	ctx := context.Background()
	waiting(t, reg, "a")
	b, _ := json.Marshal(identity.Record{V: 1, Device: "a.b", PublicKey: mustKey(t), Via: "token"})
	if _, err := kv.Create(ctx, identity.DeviceKey("a.b"), b); err != nil {
		t.Fatal(err)
	}
	var ce *identity.ConflictError
	if _, err := reg.Approve(ctx, "a", identity.ApproveOptions{}); !errors.As(err, &ce) {
		t.Fatalf("Approve of a nested id = %v, want a *ConflictError", err)
	}
	if exists(t, kv, identity.DeviceKey("a")) {
		t.Fatal("a nested id was approved")
	}
}

func TestRotation(t *testing.T) {
	reg, _, kv := newRegistry(t)
	ctx := context.Background()
	_, old := newKey(t)
	_, next := newKey(t)
	enroll(t, reg, "dev-a", old)
	rec := enroll(t, reg, "dev-a", next)
	if rec.PublicKey != next {
		t.Fatalf("re-enroll = %+v, want key %s", rec, next)
	}
	if stored, _ := readRecord(t, kv, "dev-a"); stored.PublicKey != next {
		t.Fatalf("stored key = %s, want the new %s", stored.PublicKey, next)
	}
	if s := status(t, reg, "dev-a", old); s != "unknown" {
		t.Errorf("Status of the old key = %q, want unknown", s)
	}
	if s := status(t, reg, "dev-a", next); s != "enrolled" {
		t.Errorf("Status of the new key = %q, want enrolled", s)
	}
	recs, _, err := reg.List(ctx)
	if err != nil || len(recs) != 1 {
		t.Fatalf("List = %+v, %v; want one record", recs, err)
	}

	// No rotation by an anonymous request: anyone could ask, and an
	// approval would hand the device over (issue "Security II"). Only a
	// token made for the device rotates its key.
	_, third := newKey(t)
	if _, p, err := reg.Enroll(ctx, identity.Request{Device: "dev-a", PublicKey: third}, ""); !errors.Is(err, identity.ErrEnrolled) || p != nil {
		t.Fatalf("anonymous request for a new key = %v, %v; want ErrEnrolled", p, err)
	}
	if stored, _ := readRecord(t, kv, "dev-a"); stored.PublicKey != next {
		t.Fatalf("stored key = %s, want still %s", stored.PublicKey, next)
	}
}

func TestRevoke(t *testing.T) {
	reg, _, kv := newRegistry(t)
	ctx := context.Background()
	_, pub := newKey(t)
	enroll(t, reg, "dev-a", pub)
	enroll(t, reg, "dev-b", mustKey(t))
	// A request with another key waits too (left from before anonymous
	// requests for enrolled ids were refused, or by a race): revoking
	// drops it as well.
	_, next := newKey(t)
	putPending(t, kv, identity.Pending{Device: "dev-a", PublicKey: next, Requested: epoch})

	if err := reg.Revoke(ctx, "dev-a"); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if exists(t, kv, identity.DeviceKey("dev-a")) || exists(t, kv, identity.PendingKey("dev-a")) {
		t.Fatal("dev-a's identity or request survived its revocation")
	}
	for _, key := range []string{pub, next} {
		if s := status(t, reg, "dev-a", key); s != "unknown" {
			t.Errorf("Status after revoke = %q, want unknown", s)
		}
	}
	if err := reg.Revoke(ctx, "dev-a"); !errors.Is(err, identity.ErrNotEnrolled) {
		t.Fatalf("second Revoke = %v, want ErrNotEnrolled", err)
	}
	if err := reg.Revoke(ctx, "never"); !errors.Is(err, identity.ErrNotEnrolled) {
		t.Fatalf("Revoke of an unknown device = %v, want ErrNotEnrolled", err)
	}
	if !exists(t, kv, identity.DeviceKey("dev-b")) {
		t.Fatal("revoking dev-a removed dev-b")
	}
	// A revoked id may enroll again.
	enroll(t, reg, "dev-a", mustKey(t))
}

func TestSetAdmin(t *testing.T) {
	reg, _, kv := newRegistry(t)
	ctx := context.Background()
	_, pub := newKey(t)
	a := identity.Admin{Name: "s1", PublicKey: pub}
	if err := reg.SetAdmin(ctx, a); err != nil {
		t.Fatal(err)
	}
	e1, err := kv.Get(ctx, identity.AdminKey("s1"))
	if err != nil {
		t.Fatal(err)
	}
	// The same again writes nothing.
	if err := reg.SetAdmin(ctx, a); err != nil {
		t.Fatal(err)
	}
	if e2, _ := kv.Get(ctx, identity.AdminKey("s1")); e2.Revision != e1.Revision {
		t.Fatalf("an unchanged admin was written again: revision %d -> %d", e1.Revision, e2.Revision)
	}
	_, next := newKey(t)
	if err := reg.SetAdmin(ctx, identity.Admin{Name: "s1", PublicKey: next}); err != nil {
		t.Fatal(err)
	}
	e3, _ := kv.Get(ctx, identity.AdminKey("s1"))
	if !strings.Contains(string(e3.Value), next) {
		t.Fatalf("admin s1 = %s, want key %s", e3.Value, next)
	}
	var fe *identity.FieldError
	if err := reg.SetAdmin(ctx, identity.Admin{Name: "s2", PublicKey: "nope"}); !errors.As(err, &fe) || fe.Field != "publicKey" {
		t.Fatalf("SetAdmin with an invalid key = %v, want a FieldError on publicKey", err)
	}
}

// TestMaxPending: the queue takes MaxPending requests and refuses the next.
// The bucket is filled directly; the server skips fsync to keep it fast.
func TestMaxPending(t *testing.T) {
	s, err := mesh.StartServer(mesh.ServerConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	reg, _, kv := registryOn(t, s)
	ctx := context.Background()
	for i := range identity.MaxPending - 1 {
		b, _ := json.Marshal(identity.Pending{V: 1, Device: fmt.Sprintf("q-%04d", i), PublicKey: mustKeyNoT(), Requested: epoch})
		if _, err := kv.Create(ctx, identity.PendingKey(fmt.Sprintf("q-%04d", i)), b); err != nil {
			t.Fatal(err)
		}
	}
	// An enrolled device does not count.
	enroll(t, reg, "dev-enrolled", mustKey(t))

	if _, p, err := reg.Enroll(ctx, identity.Request{Device: "last", PublicKey: mustKey(t)}, ""); err != nil || p == nil {
		t.Fatalf("request number %d = %v, %v; want pending", identity.MaxPending, p, err)
	}
	_, p, err := reg.Enroll(ctx, identity.Request{Device: "one-too-many", PublicKey: mustKey(t)}, "")
	if !errors.Is(err, identity.ErrTooMany) || p != nil {
		t.Fatalf("request number %d = %v, %v; want ErrTooMany", identity.MaxPending+1, p, err)
	}
	if exists(t, kv, identity.PendingKey("one-too-many")) {
		t.Fatal("a request over the cap was queued")
	}
	// A token still works when the queue is full.
	enroll(t, reg, "with-token", mustKey(t))
	// Approving one makes room again.
	if _, err := reg.Approve(ctx, "last", identity.ApproveOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, p, err := reg.Enroll(ctx, identity.Request{Device: "one-too-many", PublicKey: mustKey(t)}, ""); err != nil || p == nil {
		t.Fatalf("request after an approval = %v, %v; want pending", p, err)
	}
}

// TestOneKeyOneIdentity: a public key that is already another device's
// (or an admin's) identity is refused, by token and by approval, and
// nothing is written.
func TestOneKeyOneIdentity(t *testing.T) {
	reg, _, _ := newRegistry(t)
	ctx := context.Background()
	keyA := mustKey(t)
	enroll(t, reg, "dev-a", keyA)
	var ce *identity.ConflictError
	if _, _, err := reg.Enroll(ctx, identity.Request{Device: "dev-b", PublicKey: keyA, Token: token(t, reg, "", "")}, ""); !errors.As(err, &ce) {
		t.Fatalf("dev-b with dev-a's key by token: %v, want a conflict", err)
	}
	if _, _, err := reg.Enroll(ctx, identity.Request{Device: "dev-b", PublicKey: keyA}, ""); !errors.As(err, &ce) {
		t.Fatalf("dev-b with dev-a's key by request: %v, want a conflict", err)
	}
	admin := mustKey(t)
	if err := reg.SetAdmin(ctx, identity.Admin{Name: "s1", PublicKey: admin}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := reg.Enroll(ctx, identity.Request{Device: "dev-c", PublicKey: admin, Token: token(t, reg, "", "")}, ""); !errors.As(err, &ce) {
		t.Fatalf("dev-c with the admin's key: %v, want a conflict", err)
	}
	// A request that waited while its key was enrolled elsewhere is not
	// approved.
	keyD := mustKey(t)
	if _, _, err := reg.Enroll(ctx, identity.Request{Device: "dev-d", PublicKey: keyD}, ""); err != nil {
		t.Fatal(err)
	}
	enroll(t, reg, "dev-e", keyD)
	if _, err := reg.Approve(ctx, "dev-d", identity.ApproveOptions{}); !errors.As(err, &ce) {
		t.Fatalf("approve dev-d with dev-e's key: %v, want a conflict", err)
	}
	recs, _, err := reg.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 {
		t.Fatalf("identities %+v, want dev-a and dev-e only", recs)
	}
	// Re-enrolling a device with its own key again is a rotation to the
	// same key, not a conflict.
	if _, _, err := reg.Enroll(ctx, identity.Request{Device: "dev-a", PublicKey: keyA, Token: token(t, reg, "dev-a", "")}, ""); err != nil {
		t.Fatalf("dev-a again with its key: %v", err)
	}
}

// TestWaitingRequestDoesNotBlockTokens: anyone may file a request, so a
// waiting "site1" must not keep an admin's token from enrolling
// "site1.kiosk"; approving "site1" afterwards is refused instead.
func TestWaitingRequestDoesNotBlockTokens(t *testing.T) {
	reg, _, _ := newRegistry(t)
	ctx := context.Background()
	if _, _, err := reg.Enroll(ctx, identity.Request{Device: "site1", PublicKey: mustKey(t)}, "203.0.113.9"); err != nil {
		t.Fatal(err)
	}
	enroll(t, reg, "site1.kiosk", mustKey(t))
	var ce *identity.ConflictError
	if _, err := reg.Approve(ctx, "site1", identity.ApproveOptions{}); !errors.As(err, &ce) {
		t.Fatalf("approve site1 with site1.kiosk enrolled: %v, want a conflict", err)
	}
	// Refusing the request: Revoke drops it and says so by succeeding.
	if err := reg.Revoke(ctx, "site1"); err != nil {
		t.Fatalf("revoke a waiting request: %v", err)
	}
	if err := reg.Revoke(ctx, "site1"); !errors.Is(err, identity.ErrNotEnrolled) {
		t.Fatalf("revoke again: %v, want ErrNotEnrolled", err)
	}
}

// TestLaterFormatRefused: a record of a later format version is not
// read (the device is refused, never given more); unknown fields of the
// current version are ignored.
func TestLaterFormatRefused(t *testing.T) {
	reg, _, kv := newRegistry(t)
	ctx := context.Background()
	key := mustKey(t)
	later := fmt.Sprintf(`{"v":2,"device":"dev-a","publicKey":%q,"via":"token"}`, key)
	if _, err := kv.Create(ctx, identity.DeviceKey("dev-a"), []byte(later)); err != nil {
		t.Fatal(err)
	}
	if st, err := reg.Status(ctx, "dev-a", key); err != nil || st != "unknown" {
		t.Fatalf("status of a v2 record = %q, %v; want unknown", st, err)
	}
	added := fmt.Sprintf(`{"v":1,"device":"dev-b","publicKey":%q,"via":"token","addedLater":true}`, mustKey(t))
	if _, err := kv.Create(ctx, identity.DeviceKey("dev-b"), []byte(added)); err != nil {
		t.Fatal(err)
	}
	recs, _, err := reg.List(ctx)
	if err != nil || len(recs) != 1 || recs[0].Device != "dev-b" {
		t.Fatalf("List = %+v, %v; want dev-b only", recs, err)
	}
}

// TestGeneralTokenEnrollsNewDevicesOnly: a token made for any device
// cannot replace an enrolled device's key (take it over); one made for
// that device can (a rotation).
func TestGeneralTokenEnrollsNewDevicesOnly(t *testing.T) {
	reg, _, kv := newRegistry(t)
	ctx := context.Background()
	key := mustKey(t)
	enroll(t, reg, "db-1", key)
	general := token(t, reg, "", "")
	var ce *identity.ConflictError
	if _, _, err := reg.Enroll(ctx, identity.Request{Device: "db-1", PublicKey: mustKey(t), Token: general}, ""); !errors.As(err, &ce) {
		t.Fatalf("a general token on an enrolled device: %v, want a conflict", err)
	}
	if rec, _ := readRecord(t, kv, "db-1"); rec.PublicKey != key {
		t.Fatalf("db-1's key changed to %s", rec.PublicKey)
	}
	// The refused attempt did not spend the token: a new device can use it.
	if _, _, err := reg.Enroll(ctx, identity.Request{Device: "kiosk-3", PublicKey: mustKey(t), Token: general}, ""); err != nil {
		t.Fatalf("the general token on a new device: %v", err)
	}
}

// TestClaimsWithKeyIndex runs the claim checks the way a server does: a
// Follow of the bucket keeps the key index, and enrollment reads it (and
// a few keys for nesting) instead of every identity.
func TestClaimsWithKeyIndex(t *testing.T) {
	reg, _, kv := newRegistry(t)
	reg.Now = nil // the real clock: Follow's records are compared with it
	reg.Keys = &identity.Keys{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		identity.Follow(ctx, kv, fleet, nil, func([]*server.NkeyUser) error { return nil },
			slog.New(slog.NewTextHandler(t.Output(), nil)), reg.Keys)
	}()
	t.Cleanup(func() { cancel(); <-done })
	indexed := func(key, device string, admin bool) {
		t.Helper()
		retry.Until(t, 10*time.Second, func() error {
			if d, a, loaded := reg.Keys.Holder(key); !loaded || d != device || a != admin {
				return fmt.Errorf("index says %q (admin %v, loaded %v) for the key, want %q (admin %v)", d, a, loaded, device, admin)
			}
			return nil
		})
	}
	bg := context.Background()
	var ce *identity.ConflictError
	keyA := mustKey(t)
	enroll(t, reg, "dev-a", keyA)
	indexed(keyA, "dev-a", false)
	if _, _, err := reg.Enroll(bg, identity.Request{Device: "dev-b", PublicKey: keyA, Token: token(t, reg, "", "")}, ""); !errors.As(err, &ce) {
		t.Fatalf("dev-b with dev-a's key by token: %v, want a conflict", err)
	}
	if _, _, err := reg.Enroll(bg, identity.Request{Device: "dev-b", PublicKey: keyA}, ""); !errors.As(err, &ce) {
		t.Fatalf("dev-b with dev-a's key by request: %v, want a conflict", err)
	}
	admin := mustKey(t)
	if err := reg.SetAdmin(bg, identity.Admin{Name: "s1", PublicKey: admin}); err != nil {
		t.Fatal(err)
	}
	indexed(admin, "", true)
	if _, _, err := reg.Enroll(bg, identity.Request{Device: "dev-c", PublicKey: admin, Token: token(t, reg, "", "")}, ""); !errors.As(err, &ce) {
		t.Fatalf("dev-c with the admin's key: %v, want a conflict", err)
	}
	// Its own key again is a rotation to the same key.
	if _, _, err := reg.Enroll(bg, identity.Request{Device: "dev-a", PublicKey: keyA, Token: token(t, reg, "dev-a", "")}, ""); err != nil {
		t.Fatalf("dev-a again with its key: %v", err)
	}

	// Nesting, read from the store: both directions, enrolled and waiting.
	enrolled(t, reg, "a")
	enrolled(t, reg, "x.y.z")
	waiting(t, reg, "p")
	for _, c := range []struct {
		asked string
		token bool
	}{
		{"a.b", true}, {"a.b", false}, {"a.b.c", true}, {"x", true}, {"x.y", false}, {"p.q", false},
	} {
		req := identity.Request{Device: c.asked, PublicKey: mustKey(t)}
		if c.token {
			req.Token = token(t, reg, "", "")
		}
		if _, _, err := reg.Enroll(bg, req, ""); !errors.As(err, &ce) {
			t.Fatalf("%s (token %v): %v, want a conflict", c.asked, c.token, err)
		}
		if exists(t, kv, identity.DeviceKey(c.asked)) || exists(t, kv, identity.PendingKey(c.asked)) {
			t.Fatalf("a refused nested id %s was written", c.asked)
		}
	}
	// A token is not blocked by a waiting request (as without the index),
	// and siblings do not nest.
	enrolled(t, reg, "p.kiosk")
	enrolled(t, reg, "ab")
	enrolled(t, reg, "x.yz")
	waiting(t, reg, "a-b")
}
