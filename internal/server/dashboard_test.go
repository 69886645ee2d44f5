package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/api/httpapi"
	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// The dashboard's rollout section and its pause and resume buttons on a
// real server: the page shows the operator's rollout status, and the
// buttons go through the API's pause and resume (the status the API
// answers changes; a refusal comes back as the API's conflict).
func TestDashboardPausesAndResumesARollout(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.HeartbeatStaleness = config.Duration(time.Hour) // the devices below send one heartbeat only
	srv := start(t, cfg)
	base := srv.info.HTTPURL
	waitReady(t, base)

	// Two online devices that never take generation 2: its first batch
	// stays in progress (the gate's deadline is 10 minutes).
	st := openStore(t, srv.info.NATSURL)
	ctx := context.Background()
	info, err := st.Open(ctx, cfg.Buckets.DeviceInfo)
	if err != nil {
		t.Fatal(err)
	}
	beats, err := st.Open(ctx, cfg.Buckets.DeviceHeartbeat)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"dev-1", "dev-2"} {
		di, _ := v1.Marshal(v1.DeviceInfo{V: v1.FormatVersion, ID: id, Labels: map[string]string{"site": "home"}})
		hb, _ := v1.Marshal(v1.Heartbeat{V: v1.FormatVersion, Boot: "b", Seq: 1})
		if _, err := info.Create(ctx, id, di); err != nil {
			t.Fatal(err)
		}
		if _, err := beats.Create(ctx, id, hb); err != nil {
			t.Fatal(err)
		}
	}
	client, err := httpapi.New(base, viewerToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	rollout := func() v1.RolloutStatus {
		t.Helper()
		s, err := client.Rollout(ctx, "web")
		if err != nil {
			t.Fatalf("rollout status: %v", err)
		}
		return s
	}
	apply := func(content string) {
		t.Helper()
		doc := fmt.Sprintf("apiVersion: harmony/v1alpha1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector: {matchLabels: {site: home}}\n"+
			"  rollout:\n    batches: [{count: 1}, {percent: 100}]\n  resources:\n  - id: motd\n    kind: File\n    spec: {path: /tmp/motd, content: %q}\n", content)
		retry.Until(t, 30*time.Second, func() error { // until the view holds both devices (the batches must take them all)
			if code, out, _ := apiCall(t, base, adminToken, "POST", "/api/v1/deployments", doc); code != http.StatusOK {
				return fmt.Errorf("apply %s: %d %v", content, code, out)
			}
			return nil
		})
	}
	apply("one")
	apply("two")
	retry.Until(t, 30*time.Second, func() error {
		if s := rollout(); s.Phase != v1.RolloutProgressing {
			return fmt.Errorf("rollout %s, want Progressing", s.Phase)
		}
		return nil
	})

	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(method, path string, form url.Values) (int, string, string) {
		t.Helper()
		var resp *http.Response
		var err error
		if method == "POST" {
			resp, err = c.PostForm(base+path, form)
		} else {
			resp, err = c.Get(base + path)
		}
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Location"), string(b)
	}
	if code, _, body := do("POST", "/login", url.Values{"token": {adminToken}, "next": {"/"}}); code != http.StatusSeeOther {
		t.Fatalf("sign in: %d\n%.500s", code, body)
	}
	_, _, page := do("GET", "/deployments/web", nil)
	csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(page)
	if csrf == nil || !strings.Contains(page, "generation 2 rolling out from generation 1: <strong") ||
		!strings.Contains(page, `<tr id="batch-1" aria-current="step"><td>1</td><td class="wait">InProgress</td><td>1</td>`) ||
		!strings.Contains(page, `id="pause-rollout"`) {
		t.Fatalf("the deployment page has no rollout section with a pause button:\n%s", page)
	}

	code, loc, body := do("POST", "/deployments/web/rollout/pause", url.Values{"csrf": {csrf[1]}})
	if code != http.StatusSeeOther {
		t.Fatalf("pause: %d\n%.1500s", code, body)
	}
	if _, _, body := do("GET", loc, nil); !strings.Contains(body, `id="flash">web: rollout paused`) {
		t.Errorf("after the pause: no flash:\n%.3000s", body)
	}
	// The operator's read model follows the store's rollouts bucket: the
	// page and the API show the pause once it has seen it.
	retry.Until(t, 10*time.Second, func() error {
		if s := rollout(); s.Phase != v1.RolloutPaused || !strings.HasPrefix(s.Reason, "paused by test-admin at ") {
			return fmt.Errorf("after the dashboard's pause the API says %s (%s)", s.Phase, s.Reason)
		}
		return nil
	})
	if _, _, body := do("GET", "/deployments/web", nil); !strings.Contains(body, `id="resume-rollout"`) || !strings.Contains(body, `id="rollout-reason">Reason: paused by test-admin at `) {
		t.Errorf("after the pause: no resume button or no reason:\n%.3000s", body)
	}
	if code, _, body := do("POST", "/deployments/web/rollout/pause", url.Values{"csrf": {csrf[1]}}); code != http.StatusConflict ||
		!strings.Contains(body, "cannot pause a rollout that is Paused") {
		t.Errorf("pause of a paused rollout: %d\n%.1500s", code, body)
	}
	if code, loc, body = do("POST", "/deployments/web/rollout/resume", url.Values{"csrf": {csrf[1]}}); code != http.StatusSeeOther {
		t.Fatalf("resume: %d\n%.1500s", code, body)
	}
	if _, _, body := do("GET", loc, nil); !strings.Contains(body, "web: rollout resumed") {
		t.Errorf("after the resume: no flash:\n%.3000s", body)
	}
	retry.Until(t, 10*time.Second, func() error {
		if s := rollout(); s.Phase != v1.RolloutProgressing {
			return fmt.Errorf("after the dashboard's resume the API says %s", s.Phase)
		}
		return nil
	})
}
