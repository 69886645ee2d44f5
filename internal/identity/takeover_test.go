package identity_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/identity"
	"github.com/harmony-fleet/harmony/internal/mesh"
	"github.com/harmony-fleet/harmony/internal/store"
)

// putPending writes a waiting request straight into the bucket: what a
// server before the takeover fix left, or a request that raced with an
// enrollment.
func putPending(t *testing.T, kv store.KV, p identity.Pending) {
	t.Helper()
	p.V = identity.FormatVersion
	b, _ := json.Marshal(p)
	key := identity.PendingKey(p.Device)
	var err error
	if e, gerr := kv.Get(context.Background(), key); gerr == nil {
		_, err = kv.Update(context.Background(), key, b, e.Revision)
	} else {
		_, err = kv.Create(context.Background(), key, b)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestAnonymousRequestForEnrolledDeviceRefused: without a token, nobody
// can queue a new key for an enrolled id (for an admin to approve by
// mistake), and nothing is written.
func TestAnonymousRequestForEnrolledDeviceRefused(t *testing.T) {
	reg, _, kv := newRegistry(t)
	ctx := context.Background()
	key := mustKey(t)
	enroll(t, reg, "dev-a", key)
	before := keysOf(t, kv)
	_, p, err := reg.Enroll(ctx, identity.Request{Device: "dev-a", PublicKey: mustKey(t)}, "203.0.113.9")
	var ce *identity.ConflictError
	if !errors.As(err, &ce) || !errors.Is(err, identity.ErrEnrolled) || ce.Field != "token" || p != nil {
		t.Fatalf("anonymous request for enrolled dev-a = %v (pending %v), want a *ConflictError wrapping ErrEnrolled on token", err, p)
	}
	want := `device "dev-a" is enrolled: re-enrolling it needs a token made for it (harmony token create --device dev-a)`
	if err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
	if after := keysOf(t, kv); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("bucket keys %q became %q", before, after)
	}
	if rec, _ := readRecord(t, kv, "dev-a"); rec.PublicKey != key {
		t.Fatalf("dev-a's key changed to %s", rec.PublicKey)
	}
	// The same key again (the device asking whether it is enrolled the
	// wrong way) is refused as well: only Status answers that.
	if _, _, err := reg.Enroll(ctx, identity.Request{Device: "dev-a", PublicKey: key}, ""); !errors.Is(err, identity.ErrEnrolled) {
		t.Fatalf("anonymous request with dev-a's own key = %v, want ErrEnrolled", err)
	}
}

// TestApproveReplacesOnlyWhenAsked: a request waiting for an enrolled id
// is approved only with Replace; the approval tells where the request came
// from and which key it replaced.
func TestApproveReplacesOnlyWhenAsked(t *testing.T) {
	reg, clk, kv := newRegistry(t)
	ctx := context.Background()
	key, intruder := mustKey(t), mustKey(t)
	enroll(t, reg, "dev-a", key)
	putPending(t, kv, identity.Pending{Device: "dev-a", PublicKey: intruder, Requested: epoch, From: "203.0.113.9"})

	_, err := reg.Approve(ctx, "dev-a", identity.ApproveOptions{})
	var ce *identity.ConflictError
	if !errors.As(err, &ce) || !errors.Is(err, identity.ErrEnrolled) || ce.Field != "replace" {
		t.Fatalf("Approve over an enrolled key = %v, want a *ConflictError wrapping ErrEnrolled on replace", err)
	}
	want := fmt.Sprintf(`device "dev-a" is enrolled already (key fingerprint %s); approving the request from 203.0.113.9 (key fingerprint %s) replaces that key: if that is what you want, approve with --replace`,
		identity.Fingerprint(key), identity.Fingerprint(intruder))
	if err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
	if rec, _ := readRecord(t, kv, "dev-a"); rec.PublicKey != key {
		t.Fatalf("dev-a's key changed to %s without replace", rec.PublicKey)
	}
	if !exists(t, kv, identity.PendingKey("dev-a")) {
		t.Fatal("the refused approval dropped the request")
	}

	clk.Set(epoch.Add(time.Minute))
	got, err := reg.Approve(ctx, "dev-a", identity.ApproveOptions{Replace: true})
	if err != nil {
		t.Fatalf("Approve with Replace: %v", err)
	}
	wantRec := identity.Record{V: 1, Device: "dev-a", PublicKey: intruder, Enrolled: epoch.Add(time.Minute), Via: "approval"}
	if got.Record != wantRec || got.Request.From != "203.0.113.9" || got.Replaced != key {
		t.Fatalf("Approve = %+v, want %+v from 203.0.113.9 replacing %s", got, wantRec, key)
	}
	if rec, _ := readRecord(t, kv, "dev-a"); rec != wantRec {
		t.Fatalf("stored %+v, want %+v", rec, wantRec)
	}

	// Replace on a new device is harmless: nothing is replaced.
	putPending(t, kv, identity.Pending{Device: "dev-b", PublicKey: mustKey(t), Requested: epoch, From: "10.0.0.2"})
	if got, err := reg.Approve(ctx, "dev-b", identity.ApproveOptions{Replace: true}); err != nil || got.Replaced != "" {
		t.Fatalf("Approve of a new device with Replace = %+v, %v; want nothing replaced", got, err)
	}
}

// TestApproveChecksTheFingerprint: with a fingerprint the admin read off
// the device, another key is not approved.
func TestApproveChecksTheFingerprint(t *testing.T) {
	reg, _, kv := newRegistry(t)
	ctx := context.Background()
	pub := mustKey(t)
	if _, _, err := reg.Enroll(ctx, identity.Request{Device: "dev-a", PublicKey: pub}, "10.0.0.7"); err != nil {
		t.Fatal(err)
	}
	var ce *identity.ConflictError
	if _, err := reg.Approve(ctx, "dev-a", identity.ApproveOptions{Fingerprint: identity.Fingerprint(mustKey(t))}); !errors.As(err, &ce) || ce.Field != "fingerprint" {
		t.Fatalf("Approve with another key's fingerprint = %v, want a *ConflictError on fingerprint", err)
	}
	if exists(t, kv, identity.DeviceKey("dev-a")) {
		t.Fatal("a request with another fingerprint was approved")
	}
	if _, err := reg.Approve(ctx, "dev-a", identity.ApproveOptions{Fingerprint: identity.Fingerprint(pub)}); err != nil {
		t.Fatalf("Approve with the key's fingerprint: %v", err)
	}
}

// TestPendingExpiry: a request waits PendingTTL; then it is not listed,
// not approvable, its device's status is "unknown" and it neither blocks a
// new request for its id (another key) nor a nested id.
func TestPendingExpiry(t *testing.T) {
	reg, clk, kv := newRegistry(t)
	ctx := context.Background()
	old := mustKey(t)
	for id, key := range map[string]string{"site1": old, "dev-b": mustKey(t)} {
		if _, _, err := reg.Enroll(ctx, identity.Request{Device: id, PublicKey: key}, "203.0.113.9"); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := reg.Enroll(ctx, identity.Request{Device: "dev-b", PublicKey: mustKey(t)}, "203.0.113.9"); err == nil {
		t.Fatal("a second key for the waiting dev-b was queued")
	}
	clk.Set(epoch.Add(identity.PendingTTL - time.Second))
	if _, pend, _ := reg.List(ctx); len(pend) != 2 {
		t.Fatalf("requests a second before their expiry = %+v, want site1's and dev-b's", pend)
	}
	if s := status(t, reg, "site1", old); s != "pending" {
		t.Fatalf("status a second before expiry = %q, want pending", s)
	}

	clk.Set(epoch.Add(identity.PendingTTL))
	if _, pend, err := reg.List(ctx); err != nil || len(pend) != 0 {
		t.Fatalf("List after expiry = %+v, %v; want nothing waiting", pend, err)
	}
	if s := status(t, reg, "site1", old); s != "unknown" {
		t.Fatalf("status after expiry = %q, want unknown", s)
	}
	_, err := reg.Approve(ctx, "site1", identity.ApproveOptions{})
	if !errors.Is(err, identity.ErrNoRequest) {
		t.Fatalf("Approve after expiry = %v, want ErrNoRequest", err)
	}
	want := fmt.Sprintf(`no pending enrollment request: the request of "site1" expired at %s (requests wait %s); the device must ask again`,
		epoch.Add(identity.PendingTTL).Format(time.RFC3339), identity.PendingTTL)
	if err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
	if exists(t, kv, identity.DeviceKey("site1")) {
		t.Fatal("an expired request was approved")
	}
	// A nested id is no longer blocked by it.
	if _, p, err := reg.Enroll(ctx, identity.Request{Device: "site1.kiosk", PublicKey: mustKey(t)}, ""); err != nil || p == nil {
		t.Fatalf("request nested with an expired one = %v, %v; want pending", p, err)
	}
	// Nor is a request for its own id with another key.
	next := mustKey(t)
	_, p, err := reg.Enroll(ctx, identity.Request{Device: "dev-b", PublicKey: next}, "10.0.0.5")
	if err != nil || p == nil || p.PublicKey != next || p.From != "10.0.0.5" || !p.Requested.Equal(epoch.Add(identity.PendingTTL)) {
		t.Fatalf("new request after expiry = %+v, %v; want it waiting with the new key", p, err)
	}
	// And the new request waits its own full time.
	clk.Set(epoch.Add(identity.PendingTTL + time.Hour))
	if s := status(t, reg, "dev-b", next); s != "pending" {
		t.Fatalf("status of the new request = %q, want pending", s)
	}
}

// TestExpiredRequestsDoNotCountAgainstTheCap: a queue full of expired
// requests takes new ones (and forgets the expired ones).
func TestExpiredRequestsDoNotCountAgainstTheCap(t *testing.T) {
	s, err := mesh.StartServer(mesh.ServerConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	reg, clk, kv := registryOn(t, s)
	ctx := context.Background()
	for i := range identity.MaxPending {
		b, _ := json.Marshal(identity.Pending{V: 1, Device: fmt.Sprintf("q-%04d", i), PublicKey: mustKeyNoT(), Requested: epoch})
		if _, err := kv.Create(ctx, identity.PendingKey(fmt.Sprintf("q-%04d", i)), b); err != nil {
			t.Fatal(err)
		}
	}
	if _, p, err := reg.Enroll(ctx, identity.Request{Device: "full", PublicKey: mustKey(t)}, ""); !errors.Is(err, identity.ErrTooMany) || p != nil {
		t.Fatalf("request with %d waiting = %v, %v; want ErrTooMany", identity.MaxPending, p, err)
	}
	clk.Set(epoch.Add(identity.PendingTTL))
	if _, p, err := reg.Enroll(ctx, identity.Request{Device: "after", PublicKey: mustKey(t)}, ""); err != nil || p == nil {
		t.Fatalf("request with %d expired ones = %v, %v; want pending", identity.MaxPending, p, err)
	}
	if n := len(keysOf(t, kv)); n != 1 {
		t.Fatalf("%d keys in the bucket, want only the new request (the expired ones forgotten)", n)
	}
}

// TestWaitingRequestNeverBlocksTheDeviceToken: whatever request waits for
// an id (another key, from anyone), a token made for the id enrolls the
// real device and drops the request, enrolled before or not.
func TestWaitingRequestNeverBlocksTheDeviceToken(t *testing.T) {
	reg, _, kv := newRegistry(t)
	ctx := context.Background()
	// A new device whose id someone else asked for first.
	if _, _, err := reg.Enroll(ctx, identity.Request{Device: "kiosk-3", PublicKey: mustKey(t)}, "203.0.113.9"); err != nil {
		t.Fatal(err)
	}
	real := mustKey(t)
	enroll(t, reg, "kiosk-3", real)
	// An enrolled device with a request left waiting for it.
	putPending(t, kv, identity.Pending{Device: "kiosk-3", PublicKey: mustKey(t), Requested: epoch, From: "203.0.113.9"})
	next := mustKey(t)
	enroll(t, reg, "kiosk-3", next)
	if exists(t, kv, identity.PendingKey("kiosk-3")) {
		t.Fatal("the request still waits after the device's token enrollment")
	}
	if rec, _ := readRecord(t, kv, "kiosk-3"); rec.PublicKey != next {
		t.Fatalf("kiosk-3's key = %s, want the token's %s", rec.PublicKey, next)
	}
}

// TestFingerprint: the first 20 hex digits of the SHA-256 of the key's
// text in groups of four (docs/install.md: printf %s KEY | sha256sum).
func TestFingerprint(t *testing.T) {
	const key = "UCXQHEQ4HPTNBMNFG5D2LRMBIMKOWFNOVJY3ETOQ6YNHQ3FIOEPUBPKN"
	const want = "a7c1-9cd9-16ff-a7a4-b606" // printf %s KEY | sha256sum | cut -c1-20
	if got := identity.Fingerprint(key); got != want {
		t.Fatalf("Fingerprint(%s) = %s, want %s", key, got, want)
	}
	if k1, k2 := mustKey(t), mustKey(t); identity.Fingerprint(k1) == identity.Fingerprint(k2) {
		t.Fatal("two keys have one fingerprint")
	}
}
