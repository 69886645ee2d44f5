package web

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/api/httpapi"
	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/failover"
)

// fakeBackend is a hand-written Backend for the dashboard's own logic.
type fakeBackend struct {
	mu      sync.Mutex
	phase   string
	snap    fakeFleet
	deleted []string
	applied []string
	undone  []string
	// rollouts are the deployments' rollouts (none: never rolled out);
	// rolloutCalls what pause and resume were asked ("pause web by alice").
	rollouts     map[string]v1.RolloutStatus
	rolloutCalls []string
}

// fakeFleet is a fleet held in the fake: devices with their heartbeat's
// age, deployments and each pair's status. The fake works the API's
// answers out from it the simple way (a pass over everything): the
// server's running counts are the operator's business, tested there.
type fakeFleet struct {
	deployments map[string]v1.Deployment
	devices     map[string]v1.DeviceInfo
	states      map[string]v1.DeviceState // by <device>.<deployment>
	age         map[string]time.Duration  // since the last heartbeat; absent: never
}

const fakeStaleness = 30 * time.Second

func (s fakeFleet) online(id string) bool {
	age, ok := s.age[id]
	return ok && age <= fakeStaleness
}

func (s fakeFleet) ids() []string { return slices.Sorted(maps.Keys(s.devices)) }

// status is a deployment's roll-up with its devices' lines.
func (s fakeFleet) status(name string) httpapi.DeploymentStatus {
	d := s.deployments[name]
	out := httpapi.DeploymentStatus{Name: name, Generation: d.Metadata.Generation}
	for _, id := range s.ids() {
		if !d.Spec.Selector.Matches(s.devices[id].Labels) {
			continue
		}
		out.Matched++
		line := httpapi.DeploymentDevice{Device: id, Online: s.online(id), Phase: v1.PhasePending}
		st, has := s.states[v1.DeviceKey(id, name)]
		if has {
			line.Phase, line.ObservedGeneration, line.Message = st.Phase, st.ObservedGeneration, st.Message
		}
		switch {
		case !line.Online:
			out.Offline++
			line.Phase = httpapi.PhaseOffline
		case line.Phase == v1.PhaseReady && line.ObservedGeneration == out.Generation:
			out.Succeeded++
		case line.Phase == v1.PhaseFailed || line.Phase == v1.PhaseConflict:
			out.Failed++
			out.LastError = id + ": " + line.Message
		default:
			out.Pending++
		}
		out.Devices = append(out.Devices, line)
	}
	return out
}

func (s fakeFleet) device(id string) httpapi.Device {
	out := httpapi.Device{ID: id, Labels: s.devices[id].Labels, Online: s.online(id), HeartbeatAgeSecs: -1, Deployments: map[string]string{}}
	if age, ok := s.age[id]; ok {
		out.HeartbeatAgeSecs = age.Seconds()
	}
	for name, d := range s.deployments {
		if !d.Spec.Selector.Matches(out.Labels) {
			continue
		}
		phase := v1.PhasePending
		if st, ok := s.states[v1.DeviceKey(id, name)]; ok {
			phase = st.Phase
		}
		if !out.Online {
			phase = httpapi.PhaseOffline
		}
		out.Deployments[name] = phase
	}
	return out
}

func (f *fakeBackend) Phase() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.phase
}
func (f *fakeBackend) Progress() string { return "3 of 6 buckets replayed" }
func (f *fakeBackend) Stale() time.Time { return time.Time{} }
func (f *fakeBackend) Summary() Summary {
	s := f.snap
	var out Summary
	for _, name := range slices.Sorted(maps.Keys(s.deployments)) {
		st := s.status(name)
		st.Devices = nil
		out.Deployments = append(out.Deployments, st)
	}
	for _, id := range s.ids() {
		if s.online(id) {
			out.Fleet.Online++
		} else {
			out.Fleet.Offline++
			out.Offline = append(out.Offline, id)
		}
	}
	out.Fleet.Devices = len(s.devices)
	for _, k := range slices.Sorted(maps.Keys(s.states)) {
		if s.states[k].Phase == v1.PhaseConflict {
			out.Conflicts = append(out.Conflicts, k)
		}
	}
	return out
}
func (f *fakeBackend) Deployment(name string) (httpapi.DeploymentView, bool) {
	d, ok := f.snap.deployments[name]
	if !ok {
		return httpapi.DeploymentView{}, false
	}
	return httpapi.DeploymentView{Deployment: d, Status: f.snap.status(name)}, true
}
func (f *fakeBackend) Devices(q DeviceQuery) DevicePage {
	s := f.snap
	var ids []string
	for _, id := range s.ids() {
		if q.Selector.Matches(s.devices[id].Labels) &&
			(q.State != StateOnline || s.online(id)) && (q.State != StateOffline || !s.online(id)) {
			ids = append(ids, id)
		}
	}
	out := DevicePage{Total: len(s.devices), Matched: len(ids)}
	from := min(max(0, q.From), len(ids))
	for _, id := range ids[from:min(from+q.Limit, len(ids))] {
		out.Items = append(out.Items, s.device(id))
	}
	return out
}
func (f *fakeBackend) Device(id string) (httpapi.DeviceView, v1.DeviceInfo, bool) {
	info, ok := f.snap.devices[id]
	if !ok {
		return httpapi.DeviceView{}, v1.DeviceInfo{}, false
	}
	view := httpapi.DeviceView{Device: f.snap.device(id), States: []v1.DeviceState{}}
	for _, name := range slices.Sorted(maps.Keys(f.snap.deployments)) {
		if st, ok := f.snap.states[v1.DeviceKey(id, name)]; ok {
			view.States = append(view.States, st)
		}
	}
	return view, info, true
}
func (f *fakeBackend) HeartbeatAge(id string) (time.Duration, bool) {
	age, ok := f.snap.age[id]
	return age, ok
}
func (f *fakeBackend) StateMessage(key string) string { return f.snap.states[key].Message }
func (f *fakeBackend) Apply(_ context.Context, body []byte) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if strings.Contains(string(body), "bad") {
		return nil, errors.New("document 1: spec.resources[0].spec.path: must be an absolute path")
	}
	f.applied = append(f.applied, string(body))
	return []string{"web created (generation 1)"}, nil
}
func (f *fakeBackend) Delete(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deleted = append(f.deleted, name)
	return nil
}
func (f *fakeBackend) Undo(_ context.Context, name string) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if name != "web" {
		return 0, fmt.Errorf("deployment %q not found", name)
	}
	f.undone = append(f.undone, name)
	return 7, nil
}
func (f *fakeBackend) Rollout(name string) (v1.RolloutStatus, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.snap.deployments[name]
	if !ok {
		return v1.RolloutStatus{}, false
	}
	if st, ok := f.rollouts[name]; ok {
		return st, true
	}
	return v1.RolloutStatus{Name: name, Generation: d.Metadata.Generation}, true
}
func (f *fakeBackend) PauseRollout(_ context.Context, name, by string) error {
	return f.pauseOrResume(name, by, true)
}
func (f *fakeBackend) ResumeRollout(_ context.Context, name, by string) error {
	return f.pauseOrResume(name, by, false)
}

// pauseOrResume refuses as the server does: with the API's error (its
// status is the page's).
func (f *fakeBackend) pauseOrResume(name, by string, pause bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	what, from, to := "resume", v1.RolloutPaused, v1.RolloutProgressing
	if pause {
		what, from, to = "pause", v1.RolloutProgressing, v1.RolloutPaused
	}
	f.rolloutCalls = append(f.rolloutCalls, what+" "+name+" by "+by)
	st, ok := f.rollouts[name]
	switch {
	case !ok:
		return httpapi.Errorf(httpapi.CodeNotFound, "deployment %q has no rollout", name)
	case st.Phase != from:
		return httpapi.Errorf(httpapi.CodeConflict, "deployment %q: cannot %s a rollout that is %s", name, what, st.Phase)
	}
	st.Phase, st.Reason = to, ""
	if pause {
		st.Reason = "paused by " + by
	}
	f.rollouts[name] = st
	return nil
}
func (f *fakeBackend) Command(context.Context, string, v1.CommandRequest) (v1.CommandReply, error) {
	return v1.CommandReply{OK: true, Output: "up 3 days"}, nil
}
func (f *fakeBackend) Clusters(context.Context) ([]string, error) { return nil, nil }
func (f *fakeBackend) Cluster(context.Context, string) (failover.View, error) {
	return failover.View{}, errors.New("no such cluster")
}
func (f *fakeBackend) ClusterHistory(context.Context, string) ([]failover.HistoryEntry, error) {
	return nil, errors.New("no such cluster")
}

const (
	adminSecret  = "admin-secret-0123456789"
	viewerSecret = "viewer-secret-0123456789"
)

func fleet(n int) fakeFleet {
	s := fakeFleet{deployments: map[string]v1.Deployment{}, devices: map[string]v1.DeviceInfo{},
		states: map[string]v1.DeviceState{}, age: map[string]time.Duration{}}
	for i := range n {
		id := fmt.Sprintf("dev-%05d", i)
		site := "home"
		if i%2 == 1 {
			site = "office"
		}
		s.devices[id] = v1.DeviceInfo{ID: id, Labels: map[string]string{"site": site}}
		s.age[id] = time.Second
		if i%10 == 9 {
			s.age[id] = time.Hour // offline
		}
	}
	var d v1.Deployment
	d.Metadata.Name, d.Metadata.Generation = "web", 1
	s.deployments["web"] = d
	for i := range n / 2 {
		id := fmt.Sprintf("dev-%05d", i)
		s.states[v1.DeviceKey(id, "web")] = v1.DeviceState{Device: id, Deployment: "web", ObservedGeneration: 1, Phase: v1.PhaseReady}
	}
	return s
}

type client struct {
	t    *testing.T
	base string
	c    *http.Client
}

func newDashboard(t *testing.T, b *fakeBackend) *httptest.Server {
	t.Helper()
	tok := func(name string, role Role, secret string) Token {
		var sum [32]byte
		copy(sum[:], mustHex(HashToken(secret)))
		return Token{Name: name, Role: role, SHA256: sum}
	}
	d, err := New(Options{Backend: b, SessionKey: []byte(strings.Repeat("k", 32)),
		Tokens: []Token{tok("alice", Admin, adminSecret), tok("bob", Viewer, viewerSecret)}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d)
	t.Cleanup(srv.Close)
	return srv
}

func mustHex(s string) []byte {
	b := make([]byte, len(s)/2)
	for i := range b {
		fmt.Sscanf(s[2*i:2*i+2], "%02x", &b[i])
	}
	return b
}

func newClient(t *testing.T, srv *httptest.Server) *client {
	jar, _ := cookiejar.New(nil)
	return &client{t: t, base: srv.URL, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

func (c *client) do(method, path string, form url.Values, header map[string]string) (int, http.Header, string) {
	c.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, c.base+path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.c.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func (c *client) login(secret string) {
	c.t.Helper()
	code, h, body := c.do("POST", "/login", url.Values{"token": {secret}, "next": {"/"}}, nil)
	if code != http.StatusSeeOther || h.Get("Location") != "/" {
		c.t.Fatalf("login: %d %s\n%s", code, h.Get("Location"), body)
	}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (c *client) csrf() string {
	c.t.Helper()
	_, _, body := c.do("GET", "/", nil, nil)
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		c.t.Fatalf("no CSRF token on the page:\n%s", body)
	}
	return m[1]
}

func TestSignInIsRequired(t *testing.T) {
	srv := newDashboard(t, &fakeBackend{phase: "Converged", snap: fleet(3)})
	c := newClient(t, srv)
	for _, p := range []string{"/", "/deployments", "/devices", "/devices/dev-00001", "/clusters"} {
		code, h, _ := c.do("GET", p, nil, nil)
		if code != http.StatusSeeOther || !strings.HasPrefix(h.Get("Location"), "/login?next=") {
			t.Errorf("GET %s without a session: %d %q, want a redirect to /login", p, code, h.Get("Location"))
		}
	}
	code, h, _ := c.do("GET", "/", nil, map[string]string{"HX-Request": "true", "HX-Target": "live"})
	if code != http.StatusUnauthorized || h.Get("HX-Redirect") == "" {
		t.Errorf("htmx poll without a session: %d, HX-Redirect %q; want 401 with HX-Redirect", code, h.Get("HX-Redirect"))
	}
	if code, _, _ := c.do("POST", "/deployments/web/delete", url.Values{"sure": {"on"}}, nil); code != http.StatusUnauthorized {
		t.Errorf("POST without a session: %d, want 401", code)
	}
	if code, _, body := c.do("POST", "/login", url.Values{"token": {"wrong"}}, nil); code != http.StatusUnauthorized || !strings.Contains(body, "Unknown token") {
		t.Errorf("wrong token: %d\n%s", code, body)
	}
	// A forged cookie is no session.
	u, _ := url.Parse(srv.URL)
	c.c.Jar.SetCookies(u, []*http.Cookie{{Name: sessionCookie, Value: "eyJuIjoiYWxpY2UiLCJyIjoiYWRtaW4iLCJlIjo5OTk5OTk5OTk5LCJzIjoieCJ9.forged"}})
	if code, _, _ := c.do("GET", "/", nil, nil); code != http.StatusSeeOther {
		t.Errorf("forged session cookie: %d, want a redirect to /login", code)
	}
}

func TestEveryPageIsSelfContained(t *testing.T) {
	b := &fakeBackend{phase: "Converged", snap: fleet(20), rollouts: map[string]v1.RolloutStatus{"web": paused()}} // its bars and its form
	srv := newDashboard(t, b)
	c := newClient(t, srv)
	c.login(adminSecret)
	script := regexp.MustCompile(`(?is)<script([^>]*)>(.*?)</script>`)
	inline := regexp.MustCompile(`(?i)<style|\sstyle=|\son[a-z]+=|javascript:`)
	for _, p := range []string{"/", "/deployments", "/deployments/web", "/devices", "/devices?page=1&selector=site%3Dhome", "/devices/dev-00001", "/clusters", "/clusters/none", "/login"} {
		code, h, body := c.do("GET", p, nil, nil)
		if code != http.StatusOK {
			t.Errorf("GET %s: %d\n%s", p, code, body)
			continue
		}
		if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe") {
			t.Errorf("GET %s: CSP %q", p, csp)
		}
		if m := inline.FindString(body); m != "" {
			t.Errorf("GET %s: inline style or handler %q", p, m)
		}
		scripts := script.FindAllStringSubmatch(body, -1)
		for _, m := range scripts {
			if !strings.Contains(m[1], `src="/static/`) || strings.TrimSpace(m[2]) != "" {
				t.Errorf("GET %s: a script that is not a file of this server: %q", p, m[0])
			}
		}
		if len(scripts) != 1 {
			t.Errorf("GET %s: %d scripts, want htmx alone", p, len(scripts))
		}
	}
	for _, p := range []string{"/static/htmx.min.js", "/static/htmx.LICENSE", "/static/app.css"} {
		if code, _, body := c.do("GET", p, nil, nil); code != http.StatusOK || len(body) == 0 {
			t.Errorf("GET %s: %d, %d bytes", p, code, len(body))
		}
	}
}

func TestViewerCannotChangeAnything(t *testing.T) {
	b := &fakeBackend{phase: "Converged", snap: fleet(3)}
	srv := newDashboard(t, b)
	viewer := newClient(t, srv)
	viewer.login(viewerSecret)
	token := viewer.csrf()
	_, _, page := viewer.do("GET", "/deployments/web", nil, nil)
	if strings.Contains(page, `id="delete"`) || strings.Contains(page, `id="undo"`) {
		t.Error("a viewer is shown the delete or the undo form")
	}
	for _, tc := range []struct{ path string }{{"/deployments/web/delete"}, {"/deployments/web/undo"}, {"/deployments/web/rollout/pause"}, {"/deployments/web/rollout/resume"}, {"/deployments"}, {"/devices/dev-00001/exec"}} {
		code, _, body := viewer.do("POST", tc.path, url.Values{"csrf": {token}, "sure": {"on"}, "manifest": {"x"}, "command": {"id"}}, nil)
		if code != http.StatusForbidden || !strings.Contains(body, "viewer") {
			t.Errorf("viewer POST %s: %d, want 403\n%s", tc.path, code, body)
		}
	}
	if len(b.deleted)+len(b.applied)+len(b.undone)+len(b.rolloutCalls) != 0 {
		t.Fatalf("a viewer's request reached the backend: deleted %v, applied %v, undone %v, rollouts %v", b.deleted, b.applied, b.undone, b.rolloutCalls)
	}
}

func TestAdminWritesNeedTheCSRFToken(t *testing.T) {
	b := &fakeBackend{phase: "Converged", snap: fleet(3)}
	srv := newDashboard(t, b)
	admin := newClient(t, srv)
	admin.login(adminSecret)
	if code, _, _ := admin.do("POST", "/deployments/web/delete", url.Values{"sure": {"on"}}, nil); code != http.StatusForbidden {
		t.Errorf("delete without CSRF token: %d, want 403", code)
	}
	if code, _, _ := admin.do("POST", "/deployments/web/delete", url.Values{"sure": {"on"}, "csrf": {"not-it"}}, nil); code != http.StatusForbidden {
		t.Errorf("delete with a wrong CSRF token: %d, want 403", code)
	}
	token := admin.csrf()
	if code, _, _ := admin.do("POST", "/deployments/web/delete", url.Values{"sure": {"on"}, "csrf": {token}},
		map[string]string{"Origin": "https://evil.example"}); code != http.StatusForbidden {
		t.Errorf("delete from another origin: %d, want 403", code)
	}
	if len(b.deleted) != 0 {
		t.Fatalf("refused requests reached the backend: %v", b.deleted)
	}
	code, h, _ := admin.do("POST", "/deployments/web/delete", url.Values{"sure": {"on"}, "csrf": {token}}, map[string]string{"Origin": srv.URL})
	if code != http.StatusSeeOther || len(b.deleted) != 1 || b.deleted[0] != "web" {
		t.Fatalf("admin delete: %d %s, backend saw %v", code, h.Get("Location"), b.deleted)
	}
	// The page redirected to says what happened; a forged message is not shown.
	if _, _, body := admin.do("GET", h.Get("Location"), nil, nil); !strings.Contains(body, `id="flash">deleted web<`) {
		t.Errorf("no flash after delete:\n%.1500s", body)
	}
	if _, _, body := admin.do("GET", "/deployments?msg=Enter+your+token+at+evil.example&ms=x", nil, nil); strings.Contains(body, `id="flash"`) {
		t.Errorf("an unsigned flash message is shown:\n%.1500s", body)
	}
	// Undo: the form is on the page; without the token it is refused; with
	// it the backend undoes and the page says so.
	if _, _, page := admin.do("GET", "/deployments/web", nil, nil); !strings.Contains(page, `id="undo"`) {
		t.Error("an admin is not shown the undo form")
	}
	if code, _, _ := admin.do("POST", "/deployments/web/undo", url.Values{}, nil); code != http.StatusForbidden || len(b.undone) != 0 {
		t.Errorf("undo without CSRF token: %d, backend saw %v", code, b.undone)
	}
	code, h, _ = admin.do("POST", "/deployments/web/undo", url.Values{"csrf": {token}}, nil)
	if code != http.StatusSeeOther || len(b.undone) != 1 {
		t.Fatalf("admin undo: %d, backend saw %v", code, b.undone)
	}
	if _, _, body := admin.do("GET", h.Get("Location"), nil, nil); !strings.Contains(body, "web: the previous spec is back, as generation 7") {
		t.Errorf("no flash after undo:\n%.1500s", body)
	}
	if code, _, body := admin.do("POST", "/deployments/nosuch/undo", url.Values{"csrf": {token}}, nil); code != http.StatusBadRequest || !strings.Contains(body, `deployment &#34;nosuch&#34; not found`) {
		t.Errorf("undo of no deployment: %d\n%.1500s", code, body)
	}
	// A rejected apply comes back with the text and the reason.
	code, _, body := admin.do("POST", "/deployments", url.Values{"csrf": {token}, "manifest": {"kind: bad"}}, nil)
	if code != http.StatusBadRequest || !strings.Contains(body, "spec.resources[0].spec.path") || !strings.Contains(body, "kind: bad</textarea>") {
		t.Errorf("rejected apply: %d\n%s", code, body)
	}
}

func TestFailedSignInsAreRateLimited(t *testing.T) {
	srv := newDashboard(t, &fakeBackend{phase: "Converged", snap: fleet(1)})
	c := newClient(t, srv)
	for i := range 5 {
		if code, _, _ := c.do("POST", "/login", url.Values{"token": {"guess"}}, nil); code != http.StatusUnauthorized {
			t.Fatalf("failed sign-in %d: %d, want 401", i+1, code)
		}
	}
	code, _, body := c.do("POST", "/login", url.Values{"token": {"guess"}}, nil)
	if code != http.StatusTooManyRequests {
		t.Fatalf("wrong sign-in after 5 failures: %d, want 429\n%s", code, body)
	}
	// A valid token is never limited (TestAValidTokenIsNeverLimited).
	c.login(adminSecret)
}

func TestDevicesArePaginatedAndFiltered(t *testing.T) {
	srv := newDashboard(t, &fakeBackend{phase: "Converged", snap: fleet(10000)})
	c := newClient(t, srv)
	c.login(viewerSecret)
	row := regexp.MustCompile(`<tr id="dev-`)
	_, _, body := c.do("GET", "/devices", nil, nil)
	if n := len(row.FindAllString(body, -1)); n != 50 {
		t.Errorf("first page has %d rows, want 50", n)
	}
	if !strings.Contains(body, "10000 of 10000 devices · page 1 of 200") {
		t.Errorf("page header missing:\n%.2000s", body)
	}
	_, _, body = c.do("GET", "/devices?selector=site%3Doffice&state=offline&page=2", nil, nil)
	// Offline: every tenth device (i%10==9), all of them odd, so all office.
	if !strings.Contains(body, "1000 of 10000 devices · page 2 of 20") || !strings.Contains(body, `id="dev-dev-00509"`) {
		t.Errorf("filtered page 2 wrong:\n%.3000s", body)
	}
	_, _, body = c.do("GET", "/devices?selector=site", nil, nil)
	if !strings.Contains(body, `id="selector-error"`) {
		t.Errorf("a bad selector is not reported:\n%.2000s", body)
	}
}

func TestRecoveryBannerAndLiveFragment(t *testing.T) {
	b := &fakeBackend{phase: "Recovering", snap: fleet(10)}
	srv := newDashboard(t, b)
	c := newClient(t, srv)
	c.login(viewerSecret)
	live := map[string]string{"HX-Request": "true", "HX-Target": "live"}
	_, _, body := c.do("GET", "/", nil, live)
	if !strings.HasPrefix(body, `<main id="live"`) || strings.Contains(body, "<html") {
		t.Fatalf("live refresh is not the fragment alone:\n%.500s", body)
	}
	if !strings.Contains(body, `id="recovery"`) || !strings.Contains(body, `every 1s`) {
		t.Fatalf("recovering: no banner or no fast refresh:\n%s", body)
	}
	if strings.Contains(body, `id="devices-total"`) || !strings.Contains(body, `id="waiting"`) {
		t.Fatalf("recovering: counts shown before the view is complete:\n%s", body)
	}
	b.mu.Lock()
	b.phase = "Converged"
	b.mu.Unlock()
	_, _, body = c.do("GET", "/", nil, live)
	if strings.Contains(body, `id="recovery"`) || !strings.Contains(body, `every 2s`) {
		t.Fatalf("converged: banner still there or refresh not back to 2s:\n%s", body)
	}
	if !strings.Contains(body, `id="devices-offline">1 offline`) || !strings.Contains(body, `id="devices-online">9 online`) {
		t.Fatalf("overview counts wrong:\n%s", body)
	}
}

func TestDeploymentDevicesArePaginatedWorstFirst(t *testing.T) {
	srv := newDashboard(t, &fakeBackend{phase: "Converged", snap: fleet(10000)})
	c := newClient(t, srv)
	c.login(viewerSecret)
	_, _, body := c.do("GET", "/deployments/web", nil, nil)
	rows := regexp.MustCompile(`<tr><td><a href="/devices/[^"]+">[^<]+</a></td><td class="[a-z]+">([A-Za-z]+)</td>`).FindAllStringSubmatch(body, -1)
	if len(rows) != 50 || !strings.Contains(body, "page 1 of 200") {
		t.Fatalf("%d rows on the first page, want 50 of 200 pages:\n%.3000s", len(rows), body)
	}
	for _, r := range rows {
		if r[1] != "Offline" { // the 1,000 offline devices come before the rest
			t.Fatalf("first page shows a %s device before the offline ones", r[1])
		}
	}
	_, _, body = c.do("GET", "/deployments/web?page=200", nil, nil)
	if !strings.Contains(body, "page 200 of 200") || !strings.Contains(body, `class="ok">Ready`) || strings.Contains(body, `id="next"`) {
		t.Fatalf("last page wrong:\n%.3000s", body)
	}
}

func TestSafeNextStaysOnThisServer(t *testing.T) {
	for in, want := range map[string]string{
		"/devices?selector=site%3Dhome": "/devices?selector=site%3Dhome",
		"/deployments/web":              "/deployments/web",
		"":                              "/",
		"//evil.example":                "/",
		"/\t/evil.example":              "/",
		"/\\evil.example":               "/",
		"https://evil.example/":         "/",
		"/%2F/evil.example":             "/",
		"javascript:alert(1)":           "/",
		"devices":                       "/",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestANewSecretEndsOldSessions(t *testing.T) {
	b := &fakeBackend{phase: "Converged", snap: fleet(1)}
	key := []byte(strings.Repeat("k", 32))
	tok := func(secret string) Token {
		var sum [32]byte
		copy(sum[:], mustHex(HashToken(secret)))
		return Token{Name: "admin", Role: Admin, SHA256: sum}
	}
	old, _ := New(Options{Backend: b, SessionKey: key, Tokens: []Token{tok("old-secret-0123456789")}})
	srv := httptest.NewServer(old)
	defer srv.Close()
	c := newClient(t, srv)
	c.login("old-secret-0123456789")
	// The same name and role, a new secret (the server restarted with it).
	rotated, _ := New(Options{Backend: b, SessionKey: key, Tokens: []Token{tok("new-secret-0123456789")}})
	srv.Config.Handler = rotated
	if code, h, _ := c.do("GET", "/", nil, nil); code != http.StatusSeeOther || !strings.HasPrefix(h.Get("Location"), "/login") {
		t.Fatalf("a session of the old secret still works: %d %q", code, h.Get("Location"))
	}
}

func TestParallelGuessesAreLimitedToo(t *testing.T) {
	srv := newDashboard(t, &fakeBackend{phase: "Converged", snap: fleet(1)})
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Post(srv.URL+"/login", "application/x-www-form-urlencoded", strings.NewReader("token=guess"))
			if err != nil {
				return
			}
			resp.Body.Close()
			mu.Lock()
			codes[resp.StatusCode]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if codes[http.StatusUnauthorized] > 5 || codes[http.StatusTooManyRequests] < 15 {
		t.Fatalf("20 parallel guesses: %v, want at most 5 tried and the rest refused", codes)
	}
}

func TestErrorsAndHeldPagesKeepTheirLiveRefreshRight(t *testing.T) {
	b := &fakeBackend{phase: "Recovering", snap: fleet(1)}
	srv := newDashboard(t, b)
	c := newClient(t, srv)
	c.login(viewerSecret)
	// While the view is incomplete an unknown device may just not be there
	// yet: the page is held and keeps refreshing.
	code, _, body := c.do("GET", "/devices/dev-99999", nil, nil)
	if code != http.StatusOK || !strings.Contains(body, `id="recovery"`) || !strings.Contains(body, `hx-get="/devices/dev-99999"`) {
		t.Fatalf("held device page: %d\n%s", code, body)
	}
	b.mu.Lock()
	b.phase = "Converged"
	b.mu.Unlock()
	// Converged: a live refresh of a page that is gone keeps the <main>.
	_, _, body = c.do("GET", "/devices/dev-99999", nil, map[string]string{"HX-Request": "true", "HX-Target": "live"})
	if !strings.HasPrefix(body, `<main id="live"`) || !strings.Contains(body, "is not known") {
		t.Fatalf("live refresh of a missing device:\n%s", body)
	}
	// An error page answering a POST does not poll that POST-only URL.
	token := c.csrf()
	_, _, body = c.do("POST", "/deployments/web/delete", url.Values{"csrf": {token}, "sure": {"on"}}, nil)
	if strings.Contains(body, "hx-get") {
		t.Fatalf("the answer to a POST polls it:\n%s", body)
	}
}

func TestSuccessesAreNeverLimited(t *testing.T) {
	srv := newDashboard(t, &fakeBackend{phase: "Converged", snap: fleet(1)})
	d := srv.Config.Handler.(*Dashboard)
	for i := range 50 {
		req := httptest.NewRequest("GET", "/api/v1/deployments", nil)
		req.Header.Set("Authorization", "Bearer "+viewerSecret)
		if _, err := d.Authenticate(req); err != nil {
			t.Fatalf("request %d with a valid token: %v", i+1, err)
		}
	}
}

// TestAttentionPage holds the page picked in two passes to the page of a
// stable sort of the whole table, for every page size and offset.
func TestAttentionPage(t *testing.T) {
	phases := []string{v1.PhaseFailed, v1.PhaseConflict, "Offline", v1.PhasePending, v1.PhaseProgressing, v1.PhaseReady}
	for _, size := range []int{0, 1, 7, 30} {
		rolls := make([]httpapi.DeploymentDevice, size)
		for i := range rolls {
			rolls[i] = httpapi.DeploymentDevice{Device: fmt.Sprintf("d%02d", i), Phase: phases[(i*7+i/3)%len(phases)]}
		}
		sorted := slices.Clone(rolls)
		slices.SortStableFunc(sorted, func(a, b httpapi.DeploymentDevice) int { return rollOrder(a) - rollOrder(b) })
		for n := 1; n <= size+1; n++ {
			for from := 0; from <= size; from++ {
				want := sorted[from:min(from+n, size)]
				if got := attentionPage(rolls, from, n); fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("%d lines, [%d, +%d): got %v, want %v", size, from, n, got, want)
				}
			}
		}
	}
}
