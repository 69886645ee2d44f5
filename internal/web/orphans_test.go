package web

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/api/httpapi"
)

// holdBackend is a Backend whose operator holds removals of orphaned
// desired state (the optional orphanHolder capability).
type holdBackend struct {
	*fakeBackend
	hold httpapi.OrphanHold
}

func (b *holdBackend) OrphanHold() httpapi.OrphanHold { return b.hold }

func newHoldDashboard(t *testing.T, b Backend) *httptest.Server {
	t.Helper()
	var sum [32]byte
	copy(sum[:], mustHex(HashToken(viewerSecret)))
	d, err := New(Options{Backend: b, SessionKey: []byte(strings.Repeat("k", 32)), Tokens: []Token{{Name: "bob", Role: Viewer, SHA256: sum}}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d)
	t.Cleanup(srv.Close)
	return srv
}

// While removals are held the overview says how many, why, and the
// command that releases them; otherwise it says nothing of it.
func TestOverviewShowsHeldRemovals(t *testing.T) {
	since := time.Date(2026, 12, 24, 10, 0, 0, 0, time.UTC)
	held := httpapi.OrphanHold{Held: 1200, Since: &since, Fingerprint: "0123456789abcdef", Bound: 120,
		Causes:   map[string]int{httpapi.CauseDeviceGone: 1195, httpapi.CauseDeploymentGone: 5},
		Examples: []string{"dev-00000.web", "dev-00001.web"}}
	for _, c := range []struct {
		name    string
		backend Backend
		want    []string
		not     []string
	}{
		{"held", &holdBackend{fakeBackend: &fakeBackend{phase: "Converged", snap: fleet(3)}, hold: held},
			[]string{`id="orphan-hold"`, "1200 removals of desired state held", "1195 device gone, 5 deployment gone",
				"2026-12-24 10:00:00 UTC", "<code>dev-00000.web</code>", "<code>harmony orphans release</code>"}, nil},
		{"nothing held", &holdBackend{fakeBackend: &fakeBackend{phase: "Converged", snap: fleet(3)}}, nil, []string{`id="orphan-hold"`}},
		{"released, being collected", &holdBackend{fakeBackend: &fakeBackend{phase: "Converged", snap: fleet(3)}, hold: httpapi.OrphanHold{Approved: 7}},
			[]string{`id="orphan-hold"`, "7 released removals"}, []string{"harmony orphans release"}},
		{"a backend without the guard", &fakeBackend{phase: "Converged", snap: fleet(3)}, nil, []string{`id="orphan-hold"`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl := newClient(t, newHoldDashboard(t, c.backend))
			cl.login(viewerSecret)
			code, _, body := cl.do("GET", "/", nil, nil)
			if code != http.StatusOK {
				t.Fatalf("GET /: %d\n%s", code, body)
			}
			for _, s := range c.want {
				if !strings.Contains(body, s) {
					t.Errorf("the overview does not show %q:\n%s", s, body)
				}
			}
			for _, s := range c.not {
				if strings.Contains(body, s) {
					t.Errorf("the overview shows %q:\n%s", s, body)
				}
			}
		})
	}
}
