package server_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/harmony-fleet/harmony/internal/identity"
	"github.com/harmony-fleet/harmony/internal/server"
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
