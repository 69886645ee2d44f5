package identity_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/harmony-fleet/harmony/internal/identity"
	"github.com/harmony-fleet/harmony/internal/mesh"
)

// fleet names the buckets as the default server configuration does.
var fleet = mesh.FleetBuckets{DesiredState: "desired-state", DeviceInfo: "device-info",
	DeviceState: "device-state", DeviceHeartbeat: "device-heartbeat"}

// newKey makes a user nkey pair and returns it with its public key.
func newKey(t *testing.T) (nkeys.KeyPair, string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return kp, pub
}

func TestRequestValidate(t *testing.T) {
	_, pub := newKey(t)
	account, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	accountPub, _ := account.PublicKey()
	cases := []struct {
		name  string
		req   identity.Request
		field string // "" when valid
	}{
		{"valid", identity.Request{Device: "edge-1", PublicKey: pub}, ""},
		{"valid with dots and a cluster", identity.Request{Device: "edge-1.site", PublicKey: pub, Cluster: "pg1"}, ""},
		{"token is not checked", identity.Request{Device: "edge-1", PublicKey: pub, Token: "nonsense"}, ""},
		{"empty device", identity.Request{PublicKey: pub}, "device"},
		{"upper-case device", identity.Request{Device: "Edge", PublicKey: pub}, "device"},
		{"device with a wildcard", identity.Request{Device: "edge.*", PublicKey: pub}, "device"},
		{"device with an empty label", identity.Request{Device: "edge..1", PublicKey: pub}, "device"},
		{"no public key", identity.Request{Device: "edge-1"}, "publicKey"},
		{"garbage public key", identity.Request{Device: "edge-1", PublicKey: "U-not-a-key"}, "publicKey"},
		{"account key, not a user key", identity.Request{Device: "edge-1", PublicKey: accountPub}, "publicKey"},
		{"cluster with a dot", identity.Request{Device: "edge-1", PublicKey: pub, Cluster: "pg.1"}, "cluster"},
		{"cluster upper-case", identity.Request{Device: "edge-1", PublicKey: pub, Cluster: "PG"}, "cluster"},
		{"device checked before key", identity.Request{Device: "", PublicKey: "x", Cluster: "X"}, "device"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.req.Validate()
			if c.field == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var fe *identity.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Validate() = %v, want a *FieldError for %q", err, c.field)
			}
			if fe.Field != c.field || fe.Reason == "" {
				t.Fatalf("Validate() = field %q reason %q, want field %q with a reason", fe.Field, fe.Reason, c.field)
			}
		})
	}
}

func TestNested(t *testing.T) {
	cases := []struct {
		a, b string
		want bool
	}{
		{"a", "a.b", true},
		{"a.b", "a", true},
		{"a", "a.b.c", true},
		{"a.b", "a.b.c", true},
		{"a", "a", false}, // the same id is a re-enrollment, not a nesting
		{"a", "ab", false},
		{"a", "ab.c", false},
		{"a.b", "a.c", false},
		{"b.a", "a", false},
	}
	for _, c := range cases {
		if got := identity.Nested(c.a, c.b); got != c.want {
			t.Errorf("Nested(%q, %q) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}

func TestNewToken(t *testing.T) {
	s1, k1 := identity.NewToken()
	s2, k2 := identity.NewToken()
	if s1 == s2 || k1 == k2 {
		t.Fatalf("two tokens are equal: %q %q", s1, s2)
	}
	for _, s := range []string{s1, s2} {
		if !strings.HasPrefix(s, identity.TokenPrefix) || len(s) < len(identity.TokenPrefix)+40 {
			t.Errorf("token %q: want the prefix %q and at least 32 random bytes", s, identity.TokenPrefix)
		}
	}
	sum := sha256.Sum256([]byte(s1))
	if want := "token." + hex.EncodeToString(sum[:]); k1 != want || identity.TokenKey(s1) != want {
		t.Errorf("key of %q = %q (TokenKey %q), want %q", s1, k1, identity.TokenKey(s1), want)
	}
	if strings.Contains(k1, strings.TrimPrefix(s1, identity.TokenPrefix)) {
		t.Errorf("key %q reveals the token", k1)
	}
}

func TestSeeds(t *testing.T) {
	seed, pub, err := identity.NewSeed()
	if err != nil {
		t.Fatal(err)
	}
	if !nkeys.IsValidPublicUserKey(pub) {
		t.Fatalf("NewSeed public key %q is not a user key", pub)
	}
	got, err := identity.PublicKeyOfSeed(seed)
	if err != nil || got != pub {
		t.Fatalf("PublicKeyOfSeed(seed) = %q, %v; want %q", got, err, pub)
	}
	// A seed file with a trailing newline, as editors write it.
	if got, err := identity.PublicKeyOfSeed(append(append([]byte(nil), seed...), '\n')); err != nil || got != pub {
		t.Fatalf("PublicKeyOfSeed(seed + newline) = %q, %v; want %q", got, err, pub)
	}

	account, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	accountSeed, _ := account.Seed()
	if _, err := identity.PublicKeyOfSeed(accountSeed); err == nil {
		t.Error("PublicKeyOfSeed accepted an account seed")
	}
	if _, err := identity.PublicKeyOfSeed([]byte("not a seed")); err == nil {
		t.Error("PublicKeyOfSeed accepted garbage")
	}
}

func TestPermissions(t *testing.T) {
	plain := identity.Permissions(identity.Record{Device: "dev-a"}, fleet)
	if want := mesh.DevicePermissions("dev-a", fleet); !reflect.DeepEqual(plain, want) {
		t.Fatalf("Permissions without a cluster = %+v, want DevicePermissions %+v", plain, want)
	}
	if slices.ContainsFunc(plain.Publish.Allow, func(s string) bool { return strings.Contains(s, "failover") }) {
		t.Fatalf("a device without a cluster may publish to a failover bucket: %q", plain.Publish.Allow)
	}

	member := identity.Permissions(identity.Record{Device: "dev-a", Cluster: "pg1"}, fleet)
	device := mesh.DevicePermissions("dev-a", fleet)
	for _, s := range device.Publish.Allow {
		if !slices.Contains(member.Publish.Allow, s) {
			t.Errorf("a failover member lost its device permission to publish %q", s)
		}
	}
	// A member publishes nothing more than a device (its bucket is
	// reached through the relay); it follows its bucket's republished
	// writes.
	if !reflect.DeepEqual(member.Publish, device.Publish) {
		t.Errorf("a member of pg1 may publish %q, want only a device's %q", member.Publish.Allow, device.Publish.Allow)
	}
	if !slices.Contains(member.Subscribe.Allow, "harmony.kv.failover-pg1.>") {
		t.Errorf("a member of pg1 may not follow its bucket; subscriptions: %q", member.Subscribe.Allow)
	}
	if slices.ContainsFunc(member.Subscribe.Allow, func(s string) bool { return strings.Contains(s, "failover-pg2") }) {
		t.Errorf("a member of pg1 may follow pg2's bucket: %q", member.Subscribe.Allow)
	}
	// Replies stay those of the device, and so do its other subscriptions.
	if !reflect.DeepEqual(member.Subscribe.Allow[:len(device.Subscribe.Allow)], device.Subscribe.Allow) || !reflect.DeepEqual(member.Response, device.Response) {
		t.Errorf("a member's subscribe/response permissions = %+v/%+v, want the device's %+v/%+v",
			member.Subscribe, member.Response, device.Subscribe, device.Response)
	}
	// The grant is per record: another device's permissions are untouched.
	if again := identity.Permissions(identity.Record{Device: "dev-a"}, fleet); !reflect.DeepEqual(again, plain) {
		t.Errorf("Permissions changed after a member's were built: %+v", again)
	}
}

func TestUsers(t *testing.T) {
	_, admin := newKey(t)
	_, devA := newKey(t)
	_, devB := newKey(t)
	_, member := newKey(t)
	account, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	accountPub, _ := account.PublicKey()

	users := identity.Users(
		[]identity.Record{
			{Device: "dev-a", PublicKey: devA},
			{Device: "dev-b", PublicKey: devB},
			{Device: "dev-m", PublicKey: member, Cluster: "pg1"},
			{Device: "dev-a2", PublicKey: devA},           // a key claimed twice: given to neither
			{Device: "dev-x", PublicKey: admin},           // an admin's key: stays the admin's
			{Device: "dev-bad", PublicKey: "U-not-a-key"}, // invalid key: left out
			{Device: "dev-acct", PublicKey: accountPub},   // not a user key: left out
			{Device: "", PublicKey: mustKey(t)},           // no device: left out
			{Device: "dev-empty"},                         // no key: left out
		},
		[]identity.Admin{
			{Name: "s1", PublicKey: admin},
			{Name: "s2", PublicKey: admin}, // the same key twice: once
			{Name: "s3", PublicKey: "nope"},
		},
		fleet)

	got := map[string]*server.NkeyUser{}
	for _, u := range users {
		if got[u.Nkey] != nil {
			t.Fatalf("key %s listed twice", u.Nkey)
		}
		got[u.Nkey] = u
	}
	if len(users) != 3 {
		var keys []string
		for _, u := range users {
			keys = append(keys, u.Nkey)
		}
		t.Fatalf("Users gave %d users %q, want 3 (admin, dev-b, dev-m)", len(users), keys)
	}
	if u := got[admin]; u == nil || u.Permissions != nil {
		t.Errorf("admin user = %+v, want present with nil permissions (everything)", u)
	}
	if u := got[devA]; u != nil {
		t.Errorf("a key claimed by dev-a and dev-a2 was given: %+v", u)
	}
	if u := got[devB]; u == nil || !reflect.DeepEqual(u.Permissions, mesh.DevicePermissions("dev-b", fleet)) {
		t.Errorf("dev-b user = %+v, want DevicePermissions(dev-b)", u)
	}
	if u := got[member]; u == nil || !slices.Contains(u.Permissions.Subscribe.Allow, "harmony.kv.failover-pg1.>") {
		t.Errorf("dev-m user = %+v, want the pg1 failover bucket in its subscribe allow", u)
	}
	if users := identity.Users(nil, nil, fleet); len(users) != 0 {
		t.Errorf("Users of nothing = %v, want none", users)
	}
	// Nested ids (written by a race of two enrollments) are given to
	// neither; their sibling keeps its identity.
	nest := identity.Users([]identity.Record{{Device: "a", PublicKey: mustKey(t)}, {Device: "a.b", PublicKey: mustKey(t)},
		{Device: "ab", PublicKey: devB}}, nil, fleet)
	if len(nest) != 1 || nest[0].Nkey != devB {
		t.Errorf("nested a and a.b with ab: users %v, want ab's only", nest)
	}
	// A device record never takes a reserved key (the server's own).
	if users := identity.Users([]identity.Record{{Device: "dev-s", PublicKey: devB}}, nil, fleet, devB); len(users) != 0 {
		t.Errorf("a record with a reserved key gave %v, want none", users)
	}
}

func mustKey(t *testing.T) string {
	_, pub := newKey(t)
	return pub
}
