package server_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/identity"
	"github.com/harmony-fleet/harmony/internal/server"
	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// apiCall sends one request with an optional bearer token and returns the
// status, the decoded body and the error code in it.
func apiCall(t *testing.T, base, token, method, path, body string) (int, map[string]any, string) {
	t.Helper()
	req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	e, _ := out["error"].(map[string]any)
	code, _ := e["code"].(string)
	return resp.StatusCode, out, code
}

func TestEnrollmentAPI(t *testing.T) {
	srv := start(t, testConfig(t, t.TempDir()))
	base := srv.info.HTTPURL
	waitReady(t, base)
	_, pubA, err := identity.NewSeed()
	if err != nil {
		t.Fatal(err)
	}
	_, pubB, _ := identity.NewSeed()

	// Only admins create tokens, approve and revoke; anyone may ask.
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/api/v1/enrollment-tokens", `{}`},
		{"POST", "/api/v1/devices/dev-b/approve", ``},
		{"DELETE", "/api/v1/devices/dev-a/identity", ``},
	} {
		if st, out, code := apiCall(t, base, "", c.method, c.path, c.body); st != http.StatusUnauthorized || code != "unauthorized" {
			t.Errorf("%s %s without a token: %d %v", c.method, c.path, st, out)
		}
		if st, out, code := apiCall(t, base, viewerToken, c.method, c.path, c.body); st != http.StatusForbidden || code != "forbidden" {
			t.Errorf("%s %s as a viewer: %d %v", c.method, c.path, st, out)
		}
	}
	if st, out, code := apiCall(t, base, adminToken, "POST", "/api/v1/enrollment-tokens", `{"expires":"10s"}`); st != http.StatusBadRequest ||
		code != "invalid" || out["error"].(map[string]any)["field"] != "expires" {
		t.Fatalf("a 10 s token: %d %v", st, out)
	}
	st, out, _ := apiCall(t, base, adminToken, "POST", "/api/v1/enrollment-tokens", `{"expires":"5m"}`)
	token, _ := out["token"].(string)
	if st != http.StatusCreated || !strings.HasPrefix(token, identity.TokenPrefix) {
		t.Fatalf("create token: %d %v", st, out)
	}

	// Bad requests name the field and store nothing.
	for _, c := range []struct{ body, field string }{
		{`{"device":"Dev_A","publicKey":"` + pubA + `"}`, "device"},
		{`{"device":"dev-a","publicKey":"SUAB"}`, "publicKey"},
		{`{"device":"dev-a","publicKey":"` + pubA + `","cluster":"PG 1"}`, "cluster"},
	} {
		st, out, code := apiCall(t, base, "", "POST", "/api/v1/enroll", c.body)
		if st != http.StatusBadRequest || code != "invalid" || out["error"].(map[string]any)["field"] != c.field {
			t.Errorf("enroll %s: %d %v, want 400 naming %s", c.body, st, out, c.field)
		}
	}
	if st, out, code := apiCall(t, base, "", "POST", "/api/v1/enroll", `{"device":"dev-a","publicKey":"`+pubA+`","extra":1}`); st != http.StatusBadRequest || code != "invalid" {
		t.Errorf("unknown field: %d %v", st, out)
	}

	// With the token: enrolled at once, once.
	body := fmt.Sprintf(`{"device":"dev-a","publicKey":%q,"token":%q}`, pubA, token)
	if st, out, _ := apiCall(t, base, "", "POST", "/api/v1/enroll", body); st != http.StatusOK || out["status"] != "enrolled" {
		t.Fatalf("enroll with a token: %d %v", st, out)
	}
	if st, out, code := apiCall(t, base, "", "POST", "/api/v1/enroll", body); st != http.StatusUnauthorized || code != "unauthorized" {
		t.Fatalf("the token twice: %d %v", st, out)
	}
	if st, out, _ := apiCall(t, base, "", "GET", "/api/v1/enroll/dev-a?publicKey="+pubA, ""); st != http.StatusOK || out["status"] != "enrolled" {
		t.Fatalf("status of dev-a: %d %v", st, out)
	}

	// Without: waits for an admin.
	body = fmt.Sprintf(`{"device":"dev-b","publicKey":%q}`, pubB)
	if st, out, _ := apiCall(t, base, "", "POST", "/api/v1/enroll", body); st != http.StatusAccepted || out["status"] != "pending" {
		t.Fatalf("enroll without a token: %d %v", st, out)
	}
	if st, out, _ := apiCall(t, base, "", "GET", "/api/v1/enroll/dev-b?publicKey="+pubB, ""); st != http.StatusOK || out["status"] != "pending" {
		t.Fatalf("status of dev-b: %d %v", st, out)
	}
	// Someone else's key for a waiting device is refused.
	if st, out, code := apiCall(t, base, "", "POST", "/api/v1/enroll", fmt.Sprintf(`{"device":"dev-b","publicKey":%q}`, pubA)); st != http.StatusConflict || code != "conflict" {
		t.Fatalf("another key for dev-b: %d %v", st, out)
	}
	// A nested id cannot be asked for.
	if st, out, code := apiCall(t, base, "", "POST", "/api/v1/enroll", fmt.Sprintf(`{"device":"dev-a.x","publicKey":%q}`, pubB)); st != http.StatusConflict || code != "conflict" {
		t.Fatalf("nested id: %d %v", st, out)
	}
	st, out, _ = apiCall(t, base, viewerToken, "GET", "/api/v1/identities", "")
	if st != http.StatusOK || len(out["identities"].([]any)) != 1 || len(out["pending"].([]any)) != 1 {
		t.Fatalf("identities as a viewer: %d %v", st, out)
	}
	if st, out, _ := apiCall(t, base, adminToken, "POST", "/api/v1/devices/dev-b/approve", ""); st != http.StatusOK || out["publicKey"] != pubB {
		t.Fatalf("approve: %d %v", st, out)
	}
	if st, out, code := apiCall(t, base, adminToken, "POST", "/api/v1/devices/dev-b/approve", ""); st != http.StatusNotFound || code != "not_found" {
		t.Fatalf("approve twice: %d %v", st, out)
	}
	if st, out, _ := apiCall(t, base, adminToken, "DELETE", "/api/v1/devices/dev-a/identity", ""); st != http.StatusNoContent {
		t.Fatalf("revoke: %d %v", st, out)
	}
	if st, out, _ := apiCall(t, base, "", "GET", "/api/v1/enroll/dev-a?publicKey="+pubA, ""); st != http.StatusOK || out["status"] != "unknown" {
		t.Fatalf("status of a revoked device: %d %v", st, out)
	}

	// Guessing tokens is limited like signing in.
	_, pubC, _ := identity.NewSeed()
	var last int
	for i := range 8 {
		st, _, _ := apiCall(t, base, "", "POST", "/api/v1/enroll", fmt.Sprintf(`{"device":"dev-c","publicKey":%q,"token":"hmy-enroll-guess%d"}`, pubC, i))
		last = st
	}
	if last != http.StatusTooManyRequests {
		t.Fatalf("the eighth wrong token answered %d, want 429", last)
	}
	// A valid token from the limited address still enrolls, and a valid
	// API token still works there.
	if st, out, _ := apiCall(t, base, adminToken, "GET", "/api/v1/identities", ""); st != http.StatusOK {
		t.Fatalf("the admin token from a limited address: %d %v", st, out)
	}
	enrollWithToken(t, base, "dev-c", pubC)
}

// With nats_auth on, the embedded NATS takes only known identities: the
// server's own connection works (the server gets ready), a client without
// an identity is refused, and the admin identity written to the data dir
// reaches everything.
func TestNATSAuth(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.NATSAuth = "identities"
	srv := start(t, cfg)
	waitReady(t, srv.info.HTTPURL)
	if nc, err := nats.Connect(srv.info.NATSURL); err == nil {
		nc.Close()
		t.Fatal("a client without an identity connected")
	} else if !strings.Contains(err.Error(), "Authorization Violation") {
		t.Fatalf("a client without an identity: %v, want an authorization violation", err)
	}
	admin, err := nats.NkeyOptionFromSeed(server.AdminSeedFile(cfg))
	if err != nil {
		t.Fatal(err)
	}
	// The admin identity is loaded once the server has read the bucket.
	retry.Until(t, 10*time.Second, func() error {
		nc, err := nats.Connect(srv.info.NATSURL, admin)
		if err != nil {
			return err
		}
		defer nc.Close()
		st := openStoreConn(t, nc)
		for _, b := range server.FleetBuckets(cfg) {
			if _, err := st.Open(t.Context(), b.Name); err != nil {
				return fmt.Errorf("admin opens %s: %w", b.Name, err)
			}
		}
		return nil
	})
}

// fingerprintOf is the documented key fingerprint, computed the way
// docs/install.md tells an admin to: the first 20 hex digits of the
// SHA-256 of the public key's text, in groups of four.
func fingerprintOf(pub string) string {
	sum := sha256.Sum256([]byte(pub))
	h := hex.EncodeToString(sum[:])[:20]
	return h[0:4] + "-" + h[4:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20]
}

func errorOf(out map[string]any) (message, field string) {
	e, _ := out["error"].(map[string]any)
	message, _ = e["message"].(string)
	field, _ = e["field"].(string)
	return message, field
}

// enrollWithToken enrolls device with key through a token made for it.
func enrollWithToken(t *testing.T, base, device, key string) {
	t.Helper()
	st, out, _ := apiCall(t, base, adminToken, "POST", "/api/v1/enrollment-tokens", fmt.Sprintf(`{"device":%q}`, device))
	if st != http.StatusCreated {
		t.Fatalf("token for %s: %d %v", device, st, out)
	}
	body := fmt.Sprintf(`{"device":%q,"publicKey":%q,"token":%q}`, device, key, out["token"])
	if st, out, _ := apiCall(t, base, "", "POST", "/api/v1/enroll", body); st != http.StatusOK || out["status"] != "enrolled" {
		t.Fatalf("enroll %s with its token: %d %v", device, st, out)
	}
}

// putPending writes a waiting request straight into the identities bucket,
// as a server before the fix of issue "Security II" (or a race between a
// request and an enrollment) could leave it.
func putPending(t *testing.T, kv store.KV, device, pub, from string, requested time.Time) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"v": 1, "device": device, "publicKey": pub, "from": from,
		"requested": requested.UTC().Truncate(time.Second)})
	key := identity.PendingKey(device)
	var err error
	if e, gerr := kv.Get(t.Context(), key); gerr == nil {
		_, err = kv.Update(t.Context(), key, b, e.Revision)
	} else {
		_, err = kv.Create(t.Context(), key, b)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func identitiesBucket(t *testing.T, srv running) store.KV {
	t.Helper()
	kv, err := openStore(t, srv.info.NATSURL).Open(t.Context(), config.DefaultServer().Buckets.Identities)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func pendingOf(t *testing.T, base string) []map[string]any {
	t.Helper()
	st, out, _ := apiCall(t, base, viewerToken, "GET", "/api/v1/identities", "")
	if st != http.StatusOK {
		t.Fatalf("identities: %d %v", st, out)
	}
	var pend []map[string]any
	for _, p := range out["pending"].([]any) {
		pend = append(pend, p.(map[string]any))
	}
	return pend
}

// TestEnrollmentCannotTakeOverADevice: an anonymous request for an
// enrolled id is refused (only a token made for the id may replace its
// key); a request that waits for an enrolled id anyway (written before
// this rule, or by a race) is approved only with replace, showing the
// requester's address and key fingerprint; and whatever waits, the real
// device takes its id back with a token made for it.
func TestEnrollmentCannotTakeOverADevice(t *testing.T) {
	srv := start(t, testConfig(t, t.TempDir()))
	base := srv.info.HTTPURL
	waitReady(t, base)
	_, pubA, _ := identity.NewSeed()
	_, pubX, _ := identity.NewSeed() // the intruder's
	enrollWithToken(t, base, "dev-a", pubA)

	st, out, code := apiCall(t, base, "", "POST", "/api/v1/enroll", fmt.Sprintf(`{"device":"dev-a","publicKey":%q}`, pubX))
	msg, field := errorOf(out)
	if st != http.StatusConflict || code != "device_enrolled" || field != "token" ||
		!strings.Contains(msg, `"dev-a"`) || !strings.Contains(msg, "harmony token create --device dev-a") {
		t.Fatalf("anonymous request for the enrolled dev-a: %d %v, want 409 device_enrolled naming the device and the token to make", st, out)
	}
	if pend := pendingOf(t, base); len(pend) != 0 {
		t.Fatalf("the refused request waits: %v", pend)
	}

	kv := identitiesBucket(t, srv)
	putPending(t, kv, "dev-a", pubX, "203.0.113.9", time.Now())
	pend := pendingOf(t, base)
	if len(pend) != 1 || pend[0]["from"] != "203.0.113.9" || pend[0]["fingerprint"] != fingerprintOf(pubX) || pend[0]["expires"] == nil {
		t.Fatalf("waiting requests %v, want dev-a's from 203.0.113.9 with fingerprint %s and its expiry", pend, fingerprintOf(pubX))
	}
	st, out, code = apiCall(t, base, adminToken, "POST", "/api/v1/devices/dev-a/approve", "")
	msg, field = errorOf(out)
	if st != http.StatusConflict || code != "device_enrolled" || field != "replace" || !strings.Contains(msg, "--replace") {
		t.Fatalf("approve over an enrolled key without replace: %d %v, want 409 device_enrolled saying --replace", st, out)
	}
	if st, out, _ := apiCall(t, base, "", "GET", "/api/v1/enroll/dev-a?publicKey="+pubA, ""); st != http.StatusOK || out["status"] != "enrolled" {
		t.Fatalf("dev-a's own key after the refused approval: %d %v", st, out)
	}
	st, out, code = apiCall(t, base, adminToken, "POST", "/api/v1/devices/dev-a/approve", `{"replace":true,"fingerprint":"0000-0000-0000-0000-0000"}`)
	if _, field = errorOf(out); st != http.StatusConflict || code != "conflict" || field != "fingerprint" {
		t.Fatalf("approve with another fingerprint: %d %v, want 409 on fingerprint", st, out)
	}
	st, out, _ = apiCall(t, base, adminToken, "POST", "/api/v1/devices/dev-a/approve", fmt.Sprintf(`{"replace":true,"fingerprint":%q}`, fingerprintOf(pubX)))
	if st != http.StatusOK || out["publicKey"] != pubX || out["fingerprint"] != fingerprintOf(pubX) || out["from"] != "203.0.113.9" ||
		out["replaced"] != fingerprintOf(pubA) {
		t.Fatalf("approve with replace: %d %v, want key %s from 203.0.113.9 replacing %s", st, out, fingerprintOf(pubX), fingerprintOf(pubA))
	}

	// The real device takes its id back with a token made for it, even
	// with another request waiting for the id.
	_, pubY, _ := identity.NewSeed()
	putPending(t, kv, "dev-a", pubY, "203.0.113.10", time.Now())
	_, pubA2, _ := identity.NewSeed()
	enrollWithToken(t, base, "dev-a", pubA2)
	if pend := pendingOf(t, base); len(pend) != 0 {
		t.Fatalf("a request still waits for dev-a after its token enrollment: %v", pend)
	}
	if st, out, code := apiCall(t, base, adminToken, "POST", "/api/v1/devices/dev-a/approve", `{"replace":true}`); st != http.StatusNotFound || code != "not_found" {
		t.Fatalf("approve after the token enrollment: %d %v, want 404", st, out)
	}
}

// TestExpiredRequestsAreForgotten: a request older than the waiting time
// is neither listed, nor approvable, nor in the way of a new request.
func TestExpiredRequestsAreForgotten(t *testing.T) {
	srv := start(t, testConfig(t, t.TempDir()))
	base := srv.info.HTTPURL
	waitReady(t, base)
	_, old, _ := identity.NewSeed()
	putPending(t, identitiesBucket(t, srv), "dev-e", old, "203.0.113.9", time.Now().Add(-25*time.Hour))
	if pend := pendingOf(t, base); len(pend) != 0 {
		t.Fatalf("an expired request is listed: %v", pend)
	}
	st, out, code := apiCall(t, base, adminToken, "POST", "/api/v1/devices/dev-e/approve", "")
	if msg, _ := errorOf(out); st != http.StatusNotFound || code != "not_found" || !strings.Contains(msg, "expired") {
		t.Fatalf("approve an expired request: %d %v, want 404 saying it expired", st, out)
	}
	if st, out, _ := apiCall(t, base, "", "GET", "/api/v1/enroll/dev-e?publicKey="+old, ""); st != http.StatusOK || out["status"] != "unknown" {
		t.Fatalf("status of an expired request: %d %v, want unknown", st, out)
	}
	_, pub, _ := identity.NewSeed()
	if st, out, _ := apiCall(t, base, "", "POST", "/api/v1/enroll", fmt.Sprintf(`{"device":"dev-e","publicKey":%q}`, pub)); st != http.StatusAccepted || out["status"] != "pending" {
		t.Fatalf("a new request after an expired one: %d %v, want 202 pending", st, out)
	}
}

// TestTokenlessRequestsAreLimited: a request without a token makes the
// registry read every identity, so one address may send five in a burst,
// then one every two seconds (429 beyond); a request with a valid token is
// never refused for it.
func TestTokenlessRequestsAreLimited(t *testing.T) {
	srv := start(t, testConfig(t, t.TempDir()))
	base := srv.info.HTTPURL
	waitReady(t, base)
	limited := false
	for i := range 8 {
		_, pub, _ := identity.NewSeed()
		st, _, code := apiCall(t, base, "", "POST", "/api/v1/enroll", fmt.Sprintf(`{"device":"dev-%d","publicKey":%q}`, i, pub))
		if st == http.StatusTooManyRequests && code == "rate_limited" {
			limited = true
			if i < 5 {
				t.Fatalf("request %d refused: the burst is five", i+1)
			}
		}
	}
	if !limited {
		t.Fatal("eight token-less requests in a row were all taken")
	}
	st, out, _ := apiCall(t, base, adminToken, "POST", "/api/v1/enrollment-tokens", `{"expires":"5m"}`)
	if st != http.StatusCreated {
		t.Fatalf("token: %d %v", st, out)
	}
	_, pub, _ := identity.NewSeed()
	body := fmt.Sprintf(`{"device":"dev-t","publicKey":%q,"token":%q}`, pub, out["token"])
	if st, out, _ := apiCall(t, base, "", "POST", "/api/v1/enroll", body); st != http.StatusOK || out["status"] != "enrolled" {
		t.Fatalf("a valid token from the limited address: %d %v", st, out)
	}
}
