package web

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
)

// progressing is web's rollout from generation 4 to 5 in its second batch
// of three.
func progressing() v1.RolloutStatus {
	return v1.RolloutStatus{Name: "web", Generation: 5, Active: true, From: 4, To: 5, Phase: v1.RolloutProgressing, Batch: 2,
		Batches: []v1.RolloutBatchStatus{
			{State: v1.BatchDone, Devices: 2, Ready: 2},
			{State: v1.BatchInProgress, Devices: 5, Ready: 1, Updating: 1, Waiting: 1, Failed: 1, Offline: 1},
			{State: v1.BatchWaiting, Devices: 5, Waiting: 5},
		}}
}

// paused is the same rollout paused by its gate, with the devices that
// failed it; their reasons are the devices' own words.
func paused() v1.RolloutStatus {
	st := progressing()
	st.Phase = v1.RolloutPaused
	st.Reason = `batch 2: 1 of 5 devices passed, the threshold is 100% <b>`
	st.Failed = map[string]string{"dev-00003": `container "app": exit 1 <script>alert("x")</script>`}
	return st
}

// rolloutBackend is a fleet whose deployment web (generation 5) has
// the rollout st and whose deployment db has none.
func rolloutBackend(st v1.RolloutStatus) *fakeBackend {
	s := fleet(12)
	web := s.deployments["web"]
	web.Metadata.Generation = 5
	s.deployments["web"] = web
	var db v1.Deployment
	db.Metadata.Name, db.Metadata.Generation = "db", 1
	s.deployments["db"] = db
	return &fakeBackend{phase: "Converged", snap: s, rollouts: map[string]v1.RolloutStatus{"web": st}}
}

func TestRolloutSectionShowsTheBatches(t *testing.T) {
	srv := newDashboard(t, rolloutBackend(progressing()))
	c := newClient(t, srv)
	c.login(viewerSecret)
	_, _, page := c.do("GET", "/deployments/web", nil, nil)
	_, _, live := c.do("GET", "/deployments/web", nil, map[string]string{"HX-Request": "true", "HX-Target": "live"})
	for _, body := range []string{page, live} {
		for _, want := range []string{
			`<p id="rollout-line">generation 5 rolling out from generation 4: <strong class="wait" id="rollout-phase">Progressing</strong>, batch 2 of 3</p>`,
			// Each batch: its state and its devices by phase, as numbers.
			`<tr id="batch-1"><td>1</td><td class="ok">Done</td><td>2</td><td>2</td><td>0</td><td>0</td><td>0</td><td>0</td>`,
			`<tr id="batch-2" aria-current="step"><td>2</td><td class="wait">InProgress</td><td>5</td><td>1</td><td>1</td><td>1</td><td>1</td><td>1</td>`,
			`<tr id="batch-3"><td>3</td><td class="hint">Waiting</td><td>5</td><td>0</td><td>0</td><td>5</td><td>0</td><td>0</td>`,
			// And as a bar that says the same in words.
			`aria-label="1 ready, 1 updating, 1 waiting, 1 failed, 1 offline of 5"`,
			`<rect class="s" x="0" width="20" height="8"/><rect class="p" x="20" width="20" height="8"/><rect class="f" x="40" width="20" height="8"/><rect class="o" x="60" width="20" height="8"/><rect class="w" x="80" width="20" height="8"/>`,
			`<title>0 ready, 0 updating, 5 waiting, 0 failed, 0 offline of 5</title>`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("the rollout section lacks %s\n%s", want, section(body))
			}
		}
	}
	if !strings.HasPrefix(live, `<main id="live"`) {
		t.Errorf("the live refresh is not the fragment alone:\n%.300s", live)
	}
	if strings.Contains(page, `id="pause-rollout"`) || strings.Contains(page, `id="resume-rollout"`) || strings.Contains(page, `id="rollout-failed"`) {
		t.Errorf("a viewer is shown a rollout form, or failed devices that are not there:\n%s", section(page))
	}
	// A deployment that never rolled out in batches has no section.
	if _, _, body := c.do("GET", "/deployments/db", nil, nil); strings.Contains(body, `id="rollout"`) {
		t.Errorf("a deployment without a rollout shows one:\n%s", section(body))
	}
}

func TestRolloutPauseAndResumeAreForAdminsOnly(t *testing.T) {
	b := rolloutBackend(progressing())
	srv := newDashboard(t, b)
	viewer := newClient(t, srv)
	viewer.login(viewerSecret)
	if code, _, body := viewer.do("POST", "/deployments/web/rollout/pause", url.Values{"csrf": {viewer.csrf()}}, nil); code != http.StatusForbidden || !strings.Contains(body, "viewer") {
		t.Errorf("viewer pause: %d, want 403\n%.1500s", code, body)
	}

	admin := newClient(t, srv)
	admin.login(adminSecret)
	forms := func() (pause, resume bool, page string) {
		t.Helper()
		_, _, page = admin.do("GET", "/deployments/web", nil, nil)
		return strings.Contains(page, `id="pause-rollout"`), strings.Contains(page, `id="resume-rollout"`), page
	}
	if pause, resume, page := forms(); !pause || resume || !strings.Contains(page, `action="/deployments/web/rollout/pause"`) {
		t.Fatalf("Progressing: an admin is not shown Pause alone:\n%s", section(page))
	}
	// Without the CSRF token, or with another, the backend is not asked.
	for _, form := range []url.Values{{}, {"csrf": {"not-it"}}} {
		if code, _, _ := admin.do("POST", "/deployments/web/rollout/pause", form, nil); code != http.StatusForbidden {
			t.Errorf("pause with CSRF %q: %d, want 403", form.Get("csrf"), code)
		}
	}
	if len(b.rolloutCalls) != 0 {
		t.Fatalf("refused requests reached the backend: %v", b.rolloutCalls)
	}

	token := admin.csrf()
	post := func(action string) (int, string) {
		t.Helper()
		code, h, body := admin.do("POST", "/deployments/web/rollout/"+action, url.Values{"csrf": {token}}, nil)
		if code == http.StatusSeeOther {
			_, _, body = admin.do("GET", h.Get("Location"), nil, nil)
		}
		return code, body
	}
	code, body := post("pause")
	if code != http.StatusSeeOther || !strings.Contains(body, `id="flash">web: rollout paused: no further device is given the change until it is resumed<`) {
		t.Fatalf("pause: %d, no flash:\n%.1500s", code, body)
	}
	if pause, resume, page := forms(); pause || !resume || !strings.Contains(page, `id="rollout-reason">Reason: paused by alice<`) {
		t.Fatalf("Paused: an admin is not shown Resume alone, with who paused:\n%s", section(page))
	}
	// What the server refuses is shown with its status and message.
	if code, body := post("pause"); code != http.StatusConflict || !strings.Contains(body, "cannot pause a rollout that is Paused") {
		t.Errorf("pause of a paused rollout: %d\n%.1500s", code, body)
	}
	if code, body := post("resume"); code != http.StatusSeeOther || !strings.Contains(body, `id="flash">web: rollout resumed: its current batch is judged afresh<`) {
		t.Fatalf("resume: %d, no flash:\n%.1500s", code, body)
	}
	if pause, resume, page := forms(); !pause || resume {
		t.Fatalf("Progressing again: an admin is not shown Pause alone:\n%s", section(page))
	}
	if code, _, body := admin.do("POST", "/deployments/db/rollout/pause", url.Values{"csrf": {token}}, nil); code != http.StatusNotFound || !strings.Contains(body, `deployment &#34;db&#34; has no rollout`) {
		t.Errorf("pause of a deployment without a rollout: %d\n%.1500s", code, body)
	}
	if want := []string{"pause web by alice", "pause web by alice", "resume web by alice", "pause db by alice"}; !slices.Equal(b.rolloutCalls, want) {
		t.Errorf("the backend saw %q, want %q", b.rolloutCalls, want)
	}
}

func TestRolloutFailedDevicesAreListedEscaped(t *testing.T) {
	st := paused()
	for i := range maxFailedShown {
		st.Failed[fmt.Sprintf("dev-1%04d", i)] = "offline"
	}
	srv := newDashboard(t, rolloutBackend(st))
	c := newClient(t, srv)
	c.login(viewerSecret)
	_, _, body := c.do("GET", "/deployments/web", nil, nil)
	for _, want := range []string{
		`<strong class="wait" id="rollout-phase">Paused</strong>, batch 2 of 3`,
		`id="rollout-reason">Reason: batch 2: 1 of 5 devices passed, the threshold is 100% &lt;b&gt;</p>`,
		`<li><a href="/devices/dev-00003">dev-00003</a>: container &#34;app&#34;: exit 1 &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;</li>`,
		`<li>and 1 more (`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the paused rollout lacks %s\n%s", want, section(body))
		}
	}
	if strings.Contains(body, `<script>alert`) || strings.Contains(body, "100% <b>") {
		t.Errorf("a reason is not escaped:\n%s", section(body))
	}
	if n := strings.Count(section(body), "<li><a href="); n != maxFailedShown {
		t.Errorf("%d failed devices listed, want %d", n, maxFailedShown)
	}
}

func TestRolloutLine(t *testing.T) {
	three := make([]v1.RolloutBatchStatus, 3)
	for _, tc := range []struct {
		st   v1.RolloutStatus
		want string
	}{
		{v1.RolloutStatus{From: 4, To: 5, Phase: v1.RolloutPending}, "generation 5 rolling out from generation 4: Pending (the devices are not split into batches yet)"},
		{v1.RolloutStatus{From: 4, To: 5, Phase: v1.RolloutProgressing, Batch: 1, Batches: three}, "generation 5 rolling out from generation 4: Progressing, batch 1 of 3"},
		{v1.RolloutStatus{From: 4, To: 5, Phase: v1.RolloutPaused, Batch: 3, Batches: three}, "generation 5 rolling out from generation 4: Paused, batch 3 of 3"},
		{v1.RolloutStatus{From: 4, To: 5, Phase: v1.RolloutSucceeded, Batches: three}, "generation 5 rolled out from generation 4: Succeeded, every batch passed"},
		{v1.RolloutStatus{To: 5, Phase: v1.RolloutRolledBack, RollbackGeneration: 6, Batch: 2, Batches: three},
			"generation 5 rolling out: RolledBack to generation 6, which holds the earlier spec again"},
	} {
		head, tail := tc.st.Headline()
		if got := head + ": " + tc.st.Phase + tail; got != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.st.Phase, got, tc.want)
		}
	}
}

var rolloutSection = regexp.MustCompile(`(?s)<section id="rollout".*?</section>`)

// section is the page's rollout section, for failure messages (the page
// when it has none).
func section(body string) string {
	if s := rolloutSection.FindString(body); s != "" {
		return s
	}
	return fmt.Sprintf("(no rollout section)\n%.2000s", body)
}
