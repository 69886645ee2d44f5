// Package identity keeps the NATS identities of enrolled devices: one nkey
// per device, given least-privilege permissions (mesh.DevicePermissions),
// plus the admin identities of the servers' operators. Records live in one
// bucket (config.Buckets.Identities) that only the control plane can read;
// every embedded NATS server of the control plane follows it and reloads
// its users when it changes (Follow), so that an enrollment takes effect
// and a revocation cuts the device off within a moment.
//
// Keys of the bucket:
//
//	device.<id>     Record: the device's public key (and failover cluster)
//	pending.<id>    Pending: an enrollment request waiting for an admin
//	token.<sha256>  Token: a one-time enrollment token (its hash only)
//	admin.<name>    Admin: an operator identity of server <name> (CLI)
package identity

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/failover"
	"github.com/harmony-fleet/harmony/internal/mesh"
)

// Key prefixes of the identities bucket.
const (
	prefixDevice  = "device."
	prefixPending = "pending."
	prefixToken   = "token."
	prefixAdmin   = "admin."
)

// MaxPending caps enrollment requests waiting for approval: anyone who can
// reach the server may ask, so the queue must not grow without bound.
// Expired requests do not count.
const MaxPending = 1000

// PendingTTL is how long a request waits for approval. An expired request
// is not listed, cannot be approved, does not count against MaxPending and
// does not keep anyone from asking for its id again (it is replaced, and
// forgotten when the queue is counted). A device waiting longer must ask
// again: `harmony enroll` waits --wait, 10 minutes by default.
const PendingTTL = 24 * time.Hour

// FormatVersion is the version of the bucket's records. A server refuses
// records of a later version (an upgrade that changed their meaning must
// reach every server first) and ignores fields it does not know (added
// ones, which older servers can do without).
const FormatVersion = 1

// TokenPrefix starts every enrollment token, so that a leaked one is easy
// to recognise (and to search for in logs and repositories).
const TokenPrefix = "hmy-enroll-"

// Record is an enrolled device's identity.
type Record struct {
	V         int    `json:"v"`
	Device    string `json:"device"`
	PublicKey string `json:"publicKey"`
	// Cluster, when set, lets the identity also use the bucket of this
	// PostgreSQL failover cluster (the device runs a failover member).
	Cluster string `json:"cluster,omitempty"`
	// Declared: Cluster was granted because the device's desired state
	// declares a member of it (a PostgresCluster resource); the server
	// takes it back once that member has left.
	Declared bool      `json:"declared,omitempty"`
	Enrolled time.Time `json:"enrolled"`
	// Via is "token" or "approval": how the identity was granted.
	Via string `json:"via"`
}

// Pending is an enrollment request that waits for `harmony device approve`.
type Pending struct {
	V         int       `json:"v"`
	Device    string    `json:"device"`
	PublicKey string    `json:"publicKey"`
	Cluster   string    `json:"cluster,omitempty"`
	Requested time.Time `json:"requested"`
	From      string    `json:"from"` // the requester's network address
}

// Expiry is when the request stops waiting: Requested plus PendingTTL.
func (p Pending) Expiry() time.Time { return p.Requested.Add(PendingTTL) }

func (p Pending) expired(now time.Time) bool { return !now.Before(p.Expiry()) }

// Token is what the bucket keeps of an enrollment token: never the token.
type Token struct {
	V       int       `json:"v"`
	Expires time.Time `json:"expires"`
	// Device, when set, is the only device id the token may enroll;
	// Cluster, when set, the failover cluster it may also grant.
	Device  string    `json:"device,omitempty"`
	Cluster string    `json:"cluster,omitempty"`
	Created time.Time `json:"created"`
	By      string    `json:"by"` // the API token's name that created it
}

// Admin is an operator identity: no limits on NATS (the `harmony failover`
// commands use it). Each server writes its own at start.
type Admin struct {
	V         int    `json:"v"`
	Name      string `json:"name"`
	PublicKey string `json:"publicKey"`
}

// Request asks for an identity.
type Request struct {
	Device    string `json:"device"`
	PublicKey string `json:"publicKey"`
	// Token is a one-time enrollment token; without it the request waits
	// for an admin's approval.
	Token   string `json:"token,omitempty"`
	Cluster string `json:"cluster,omitempty"`
}

// FieldError names the request field that is wrong.
type FieldError struct {
	Field, Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Validate checks a request's fields (not its token).
func (r Request) Validate() error {
	if err := v1.ValidateDeviceID(r.Device); err != nil {
		return &FieldError{"device", err.Error()}
	}
	if !nkeys.IsValidPublicUserKey(r.PublicKey) {
		return &FieldError{"publicKey", "not an nkey user public key (U...)"}
	}
	if r.Cluster != "" {
		if err := v1.ValidateDeploymentName(r.Cluster); err != nil {
			return &FieldError{"cluster", err.Error()}
		}
	}
	return nil
}

// NewToken returns a fresh enrollment token and the bucket key of its hash.
func NewToken() (secret, key string) {
	var b [32]byte
	_, _ = rand.Read(b[:])
	secret = TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	return secret, TokenKey(secret)
}

// TokenKey is the bucket key of a token: its SHA-256, so that reading the
// bucket does not reveal usable tokens.
func TokenKey(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return prefixToken + hex.EncodeToString(sum[:])
}

// Fingerprint is a short name of a public key for people to compare: the
// first 20 hex digits (80 bits) of the SHA-256 of the key's text, in groups
// of four, "a7c1-9cd9-16ff-a7a4-b606". `harmony enroll` prints it while it
// waits, `harmony device identities` and `approve` show it, and anyone can
// compute it: printf %s KEY | sha256sum | cut -c1-20. Making another key
// with the same fingerprint takes about 2^80 tries.
func Fingerprint(publicKey string) string {
	sum := sha256.Sum256([]byte(publicKey))
	h := hex.EncodeToString(sum[:10])
	return h[0:4] + "-" + h[4:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20]
}

// DeviceKey, PendingKey and AdminKey are bucket keys.
func DeviceKey(id string) string   { return prefixDevice + id }
func PendingKey(id string) string  { return prefixPending + id }
func AdminKey(name string) string  { return prefixAdmin + name }
func deviceOf(key string) string   { return strings.TrimPrefix(key, prefixDevice) }
func isDeviceKey(key string) bool  { return strings.HasPrefix(key, prefixDevice) }
func isAdminKey(key string) bool   { return strings.HasPrefix(key, prefixAdmin) }
func isPendingKey(key string) bool { return strings.HasPrefix(key, prefixPending) }
func pendingOf(key string) string  { return strings.TrimPrefix(key, prefixPending) }
func validAdmin(a Admin) bool      { return nkeys.IsValidPublicUserKey(a.PublicKey) }
func validRecord(r Record) bool    { return nkeys.IsValidPublicUserKey(r.PublicKey) && r.Device != "" }
func now() time.Time               { return time.Now().UTC().Truncate(time.Second) }

// versioned is every record of the bucket.
type versioned interface{ version() int }

func (r Record) version() int  { return r.V }
func (p Pending) version() int { return p.V }
func (t Token) version() int   { return t.V }
func (a Admin) version() int   { return a.V }

func decode[T versioned](b []byte) (T, error) {
	var v T
	d := json.NewDecoder(bytes.NewReader(b))
	if err := d.Decode(&v); err != nil {
		return v, err
	}
	if d.More() {
		return v, errors.New("data after the JSON value")
	}
	if v.version() != FormatVersion {
		return v, fmt.Errorf("record format version %d; this server reads %d", v.version(), FormatVersion)
	}
	return v, nil
}

// DecodeRecord reads a device's record from the identities bucket
// (DeviceKey), checking its format version.
func DecodeRecord(b []byte) (Record, error) { return decode[Record](b) }

// Nested reports whether one device id is a dot-prefix of the other ("a"
// and "a.b"): NATS subject permissions cannot keep such a pair apart (see
// mesh.DevicePermissions), so no two identities may be nested.
func Nested(a, b string) bool {
	return a != b && (strings.HasPrefix(a, b+".") || strings.HasPrefix(b, a+"."))
}

// Permissions of an enrolled device: its own fleet keys, and when it runs a
// failover member, its cluster's bucket as well (members read each other's
// heartbeats and take the leader key by compare-and-set, so within one
// cluster the members trust each other). Both are reached through the
// relay, which checks the cluster against this record.
func Permissions(r Record, fleet mesh.FleetBuckets) *server.Permissions {
	p := mesh.DevicePermissions(r.Device, fleet)
	if r.Cluster != "" {
		fp := mesh.MemberPermissions(failover.BucketName(r.Cluster))
		p.Subscribe.Allow = append(p.Subscribe.Allow, fp.Subscribe.Allow...)
	}
	return p
}

// Users turns records into the NATS users of an embedded server: admins
// without limits, devices with Permissions. Unreadable records are left
// out (and so refused), never given more. A key claimed by more than one
// device is given to none of them, and so are nested device ids, and a device record never takes an
// admin's key or one of reserved (the server's own): enrollment refuses
// such keys, so they can only come from a race or a hand-made record.
func Users(devices []Record, admins []Admin, fleet mesh.FleetBuckets, reserved ...string) []*server.NkeyUser {
	return users(devices, admins, fleet, nil, reserved...)
}

// permCache keeps the permissions made for a (device, cluster), so that a
// reload gives an unchanged device the very same *Permissions and the
// server's change check stops at a pointer comparison.
type permCache map[[2]string]*server.Permissions

func (c permCache) of(r Record, fleet mesh.FleetBuckets) *server.Permissions {
	if c == nil {
		return Permissions(r, fleet)
	}
	k := [2]string{r.Device, r.Cluster}
	p, ok := c[k]
	if !ok {
		p = Permissions(r, fleet)
		c[k] = p
	}
	return p
}

func users(devices []Record, admins []Admin, fleet mesh.FleetBuckets, cache permCache, reserved ...string) []*server.NkeyUser {
	users := make([]*server.NkeyUser, 0, len(devices)+len(admins))
	taken := map[string]bool{}
	for _, k := range reserved {
		taken[k] = true
	}
	for _, a := range admins {
		if validAdmin(a) && !taken[a.PublicKey] {
			taken[a.PublicKey] = true
			users = append(users, &server.NkeyUser{Nkey: a.PublicKey})
		}
	}
	claims := map[string]int{}
	ids := map[string]bool{}
	for _, r := range devices {
		claims[r.PublicKey]++
		ids[r.Device] = true
	}
	// Nested ids (a race of two enrollments can write both) are given to
	// neither: permissions cannot keep them apart.
	nested := map[string]bool{}
	for id := range ids {
		for i := range len(id) {
			if id[i] == '.' && ids[id[:i]] {
				nested[id], nested[id[:i]] = true, true
			}
		}
	}
	for _, r := range devices {
		if validRecord(r) && !taken[r.PublicKey] && claims[r.PublicKey] == 1 && !nested[r.Device] {
			users = append(users, &server.NkeyUser{Nkey: r.PublicKey, Permissions: cache.of(r, fleet)})
		}
	}
	return users
}

// NewSeed makes a user nkey pair and returns its seed and public key.
func NewSeed() (seed []byte, public string, err error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, "", err
	}
	seed, err = kp.Seed()
	if err != nil {
		return nil, "", err
	}
	public, err = kp.PublicKey()
	return seed, public, err
}

// PublicKeyOfSeed reads the public key of a seed (a file's contents).
func PublicKeyOfSeed(data []byte) (string, error) {
	kp, err := nkeys.ParseDecoratedNKey(data)
	if err != nil {
		return "", fmt.Errorf("not an nkey seed: %w", err)
	}
	defer kp.Wipe()
	pub, err := kp.PublicKey()
	if err != nil {
		return "", err
	}
	if !nkeys.IsValidPublicUserKey(pub) {
		return "", errors.New("not a user nkey seed (SU...)")
	}
	return pub, nil
}
