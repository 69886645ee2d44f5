package cli_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/harmony-fleet/harmony/internal/identity"
)

// fakeEnrollAPI is a hand-written stand-in for the server's enrollment
// API: it records what the CLI sent and answers as the server does.
type fakeEnrollAPI struct {
	mu        sync.Mutex
	publicKey string   // of the last enrollment request
	approvals []string // bodies of the approve calls
	polls     int
}

func (f *fakeEnrollAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("Content-Type", "application/json")
	answer := func(status int, v any) {
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
	switch {
	case r.Method == "POST" && r.URL.Path == "/api/v1/enroll":
		var req identity.Request
		_ = json.Unmarshal(body, &req)
		f.publicKey = req.PublicKey
		answer(http.StatusAccepted, map[string]any{"device": req.Device, "status": "pending",
			"fingerprint": identity.Fingerprint(req.PublicKey), "expires": "2030-01-03T03:04:05Z"})
	case r.Method == "GET" && strings.HasPrefix(r.URL.Path, "/api/v1/enroll/"):
		f.polls++
		answer(http.StatusOK, map[string]any{"device": "kiosk-3", "status": "enrolled"})
	case r.Method == "POST" && r.URL.Path == "/api/v1/devices/kiosk-3/approve":
		f.approvals = append(f.approvals, string(body))
		if !strings.Contains(string(body), `"replace":true`) {
			answer(http.StatusConflict, map[string]any{"error": map[string]any{"code": "device_enrolled", "field": "replace",
				"message": `device "kiosk-3" is enrolled already (key fingerprint 1111-2222-3333-4444-5555); approving the request from 203.0.113.9 (key fingerprint a7c1-9cd9-16ff-a7a4-b606) replaces that key: if that is what you want, approve with --replace`}})
			return
		}
		answer(http.StatusOK, map[string]any{"device": "kiosk-3", "publicKey": "UKEY", "via": "approval",
			"fingerprint": "a7c1-9cd9-16ff-a7a4-b606", "from": "203.0.113.9", "requested": "2030-01-02T03:04:05Z",
			"replaced": "1111-2222-3333-4444-5555"})
	case r.Method == "GET" && r.URL.Path == "/api/v1/identities":
		answer(http.StatusOK, map[string]any{
			"identities": []any{map[string]any{"device": "db-1", "publicKey": "UDB", "via": "token", "enrolled": "2030-01-01T00:00:00Z",
				"fingerprint": "9999-8888-7777-6666-5555"}},
			"pending": []any{map[string]any{"device": "kiosk-3", "publicKey": "UKEY", "from": "203.0.113.9", "requested": "2030-01-02T03:04:05Z",
				"fingerprint": "a7c1-9cd9-16ff-a7a4-b606", "expires": "2030-01-03T03:04:05Z"}},
		})
	default:
		answer(http.StatusNotFound, map[string]any{"error": map[string]any{"code": "not_found", "message": r.Method + " " + r.URL.Path}})
	}
}

// TestEnrollPrintsTheFingerprint: while it waits for approval, harmony
// enroll prints the fingerprint of the key it sent, for the admin to
// compare with what `harmony device identities` shows.
func TestEnrollPrintsTheFingerprint(t *testing.T) {
	clearEnv(t)
	fake := &fakeEnrollAPI{}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	code, stdout, stderr := run(t, "enroll", "--server", srv.URL, "--id", "kiosk-3", "--nkey", filepath.Join(t.TempDir(), "device.nk"))
	if code != 0 {
		t.Fatalf("harmony enroll: exit %d\n%s", code, stderr)
	}
	fake.mu.Lock()
	fp := identity.Fingerprint(fake.publicKey)
	fake.mu.Unlock()
	if !strings.Contains(stderr, "key fingerprint "+fp) || !strings.Contains(stderr, "harmony device approve kiosk-3 --fingerprint "+fp) {
		t.Fatalf("stderr while waiting does not show the key fingerprint %s:\n%s", fp, stderr)
	}
	if !strings.Contains(stdout, fp) {
		t.Fatalf("stdout does not name the enrolled key's fingerprint %s:\n%s", fp, stdout)
	}
}

// TestApproveNeedsReplaceAndShowsTheRequest: approve sends replace only
// with --replace, passes the server's refusal on, and shows the requester's
// address and the key fingerprints of what it granted and replaced.
func TestApproveNeedsReplaceAndShowsTheRequest(t *testing.T) {
	clearEnv(t)
	fake := &fakeEnrollAPI{}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	code, _, stderr := run(t, "device", "approve", "kiosk-3", "--server", srv.URL)
	if code == 0 || !strings.Contains(stderr, "--replace") || !strings.Contains(stderr, "203.0.113.9") {
		t.Fatalf("approve over an enrolled key without --replace: exit %d\n%s", code, stderr)
	}
	code, stdout, stderr := run(t, "device", "approve", "kiosk-3", "--replace", "--fingerprint", "a7c1-9cd9-16ff-a7a4-b606", "--server", srv.URL)
	if code != 0 {
		t.Fatalf("approve --replace: exit %d\n%s", code, stderr)
	}
	for _, want := range []string{"kiosk-3", "a7c1-9cd9-16ff-a7a4-b606", "203.0.113.9", "replaced key fingerprint 1111-2222-3333-4444-5555"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("approve output lacks %q:\n%s", want, stdout)
		}
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if want := fmt.Sprint([]string{"", `{"replace":true,"fingerprint":"a7c1-9cd9-16ff-a7a4-b606"}`}); fmt.Sprint(fake.approvals) != want {
		t.Fatalf("approve bodies %q, want %q", fake.approvals, want)
	}
}

// TestIdentitiesShowAddressAndFingerprint: the table shows where a
// waiting request came from, its key fingerprint and when it expires.
func TestIdentitiesShowAddressAndFingerprint(t *testing.T) {
	clearEnv(t)
	srv := httptest.NewServer(&fakeEnrollAPI{})
	defer srv.Close()
	code, stdout, stderr := run(t, "device", "identities", "--server", srv.URL)
	if code != 0 {
		t.Fatalf("device identities: exit %d\n%s", code, stderr)
	}
	for _, want := range []string{"FINGERPRINT", "a7c1-9cd9-16ff-a7a4-b606", "from 203.0.113.9", "9999-8888-7777-6666-5555", "2030-01-03T03:04:05Z"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("identities table lacks %q:\n%s", want, stdout)
		}
	}
}
