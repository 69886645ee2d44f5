package cli_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// fakeOrphansAPI answers GET /api/v1/orphans with a hold and records the
// release it is sent.
type fakeOrphansAPI struct {
	mu       sync.Mutex
	held     int
	released string // the fingerprint posted
}

func (f *fakeOrphansAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	hold := map[string]any{"held": f.held, "causes": map[string]int{"device-gone": f.held}, "examples": []string{"dev-1.web"},
		"fingerprint": "f00dfeedf00dfeed", "approved": 0, "bound": 10, "since": "2026-12-24T10:00:00Z"}
	if f.held == 0 {
		hold = map[string]any{"held": 0, "causes": map[string]int{}, "examples": []string{}, "approved": 0, "bound": 10}
	}
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.Method == "GET" && r.URL.Path == "/api/v1/orphans":
		_ = json.NewEncoder(w).Encode(hold)
	case r.Method == "POST" && r.URL.Path == "/api/v1/orphans/release" && r.Header.Get("Authorization") == "Bearer admin":
		var body struct{ Fingerprint string }
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &body)
		f.released = body.Fingerprint
		w.WriteHeader(http.StatusAccepted)
		_ = json.NewEncoder(w).Encode(map[string]any{"result": "released", "hold": hold})
	default:
		w.WriteHeader(http.StatusForbidden)
		_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": "forbidden", "message": "viewer"}})
	}
}

func TestOrphansCommands(t *testing.T) {
	clearEnv(t)
	api := &fakeOrphansAPI{held: 40}
	srv := httptest.NewServer(api)
	defer srv.Close()

	code, out, errOut := run(t, "orphans", "--server", srv.URL, "--token", "viewer")
	if code != 0 || !strings.Contains(out, "40 removals of orphaned desired state held") || !strings.Contains(out, "device-gone 40") ||
		!strings.Contains(out, "f00dfeedf00dfeed") || !strings.Contains(out, "harmony orphans release") {
		t.Fatalf("harmony orphans: %d\n%s%s", code, out, errOut)
	}
	if code, out, _ := run(t, "orphans", "-o", "json", "--server", srv.URL, "--token", "viewer"); code != 0 || !strings.Contains(out, `"held": 40`) {
		t.Fatalf("harmony orphans -o json: %d\n%s", code, out)
	}
	if code, _, errOut := run(t, "orphans", "release", "--server", srv.URL, "--token", "viewer"); code == 0 || !strings.Contains(errOut, "viewer") {
		t.Fatalf("a viewer's release: %d %s", code, errOut)
	}
	code, out, errOut = run(t, "orphans", "release", "--server", srv.URL, "--token", "admin")
	if code != 0 || !strings.Contains(out, "released 40 held removals (device-gone 40)") {
		t.Fatalf("harmony orphans release: %d\n%s%s", code, out, errOut)
	}
	api.mu.Lock()
	released := api.released
	api.held = 0
	api.mu.Unlock()
	if released != "f00dfeedf00dfeed" {
		t.Fatalf("the release named %q, not the hold it read", released)
	}
	if code, out, _ := run(t, "orphans", "--server", srv.URL, "--token", "viewer"); code != 0 || !strings.Contains(out, "No removals") {
		t.Fatalf("nothing held: %d\n%s", code, out)
	}
	if code, _, errOut := run(t, "orphans", "release", "--server", srv.URL, "--token", "admin"); code == 0 || !strings.Contains(errOut, "no removals") {
		t.Fatalf("a release with nothing held: %d %s", code, errOut)
	}
}
