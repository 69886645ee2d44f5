package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/harmony-fleet/harmony/internal/failover"
	"github.com/harmony-fleet/harmony/internal/mesh/meshtest"
	"github.com/harmony-fleet/harmony/internal/testutil/browsertest"
	"github.com/harmony-fleet/harmony/internal/testutil/netproxy"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

const (
	dashAdminSecret  = "e2e-admin-7c1d0f3a9b5e4d2c8a6f1e0b3d5c7a9e"
	dashViewerSecret = "e2e-viewer-2b4d6f8a0c1e3f5a7c9e1b3d5f7a9c1e"
)

// dashEnv is a harmony server whose path to NATS goes through a proxy (so
// that a restart can meet a store that does not answer yet), two real
// agents connected to NATS directly, and a browser.
type dashEnv struct {
	t      *testing.T
	dir    string
	nats   string
	proxy  *netproxy.Proxy
	http   string
	args   []string
	server *proc
	agents map[string]*proc
	b      *browsertest.Browser
}

func newDashEnv(t *testing.T) *dashEnv {
	ns := meshtest.StartServer(t)
	e := &dashEnv{t: t, dir: t.TempDir(), nats: ns.ClientURL(), agents: map[string]*proc{}}
	e.proxy = netproxy.Start(t, strings.TrimPrefix(e.nats, "nats://"))
	e.http = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg := map[string]any{"tokens": []map[string]string{
		{"name": "ada", "role": "admin", "sha256": sha256Hex(dashAdminSecret)},
		{"name": "vic", "role": "viewer", "sha256": sha256Hex(dashViewerSecret)},
	}}
	b, _ := json.Marshal(cfg) // JSON is YAML
	path := filepath.Join(e.dir, "server.yaml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	e.args = []string{"server", "--config", path, "--data-dir", filepath.Join(e.dir, "server"),
		"--nats-url", "nats://" + e.proxy.Addr(), "--http", e.http, "--heartbeat-staleness", "2s"}
	e.server = startHarmony(t, e.args...)
	waitReady(t, "http://"+e.http)
	e.startAgent("a1", "home", "--exec")
	e.startAgent("a2", "office")
	e.b = browsertest.Start(t)
	t.Cleanup(func() {
		if t.Failed() && e.server.cmd.ProcessState == nil {
			_ = e.server.cmd.Process.Kill() // stopped first: its stderr is written until it exits
			<-e.server.done
			t.Logf("server stderr (tail):\n%s", tail(e.server.stderr.String(), 4000))
		}
	})
	return e
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (e *dashEnv) startAgent(id, site string, extra ...string) {
	root := filepath.Join(e.dir, id)
	args := append([]string{"agent", "--http", "127.0.0.1:0", "--id", id, "--nats-url", e.nats, "--state-dir", filepath.Join(root, "state"),
		"--label", "site=" + site, "--allowed-roots", filepath.Join(root, "files"), "--shell-jobs",
		"--heartbeat-interval", "300ms", "--resync-interval", "1s"}, extra...)
	e.agents[id] = startHarmony(e.t, args...)
}

func (e *dashEnv) url(path string) string { return "http://" + e.http + path }

// must fails the test, with a screenshot, when a browser step fails.
func (e *dashEnv) must(what string, err error) {
	e.t.Helper()
	if err != nil {
		e.b.Screenshot(e.t, "failed "+what)
		e.t.Fatalf("%s: %v", what, err)
	}
}

func (e *dashEnv) signIn(secret, who string) {
	e.t.Helper()
	e.must("open the sign-in page", e.b.Run(chromedp.Navigate(e.url("/"))))
	e.must("sign-in page", e.b.WaitText("h1", "Sign in"))
	e.must("type the token", e.b.Run(chromedp.SendKeys(chromedp.CSS("#token"), secret), chromedp.Click(chromedp.CSS("#signin"))))
	e.must("signed in", e.b.WaitText("#who", who))
}

// markPage sets a variable in the page; it survives only as long as the
// page is not reloaded.
func (e *dashEnv) markPage() {
	e.t.Helper()
	e.must("mark the page", e.b.Run(chromedp.Evaluate[chromedp.Void](`window.harmonyNoReload = true`)))
}

func (e *dashEnv) checkNotReloaded(what string) {
	e.t.Helper()
	same, err := browsertest.Get(e.b, chromedp.Evaluate[bool](`window.harmonyNoReload === true`))
	e.must("read the page mark", err)
	if !same {
		e.t.Fatalf("%s: the page was reloaded; live updates must not need a reload", what)
	}
}

// cspErrors are the CSP violations and uncaught exceptions the browser
// reported (network errors while the server restarts are expected).
func (e *dashEnv) cspErrors() []string {
	var out []string
	for _, m := range e.b.Errors() {
		if strings.Contains(m, "Content Security Policy") || strings.Contains(m, "Uncaught") {
			out = append(out, m)
		}
	}
	return out
}

// The dashboard in a real browser against a real server and real agents:
// counts, a progress bar that fills without a reload, an agent going
// offline, the label filter, exec and logs, a viewer who cannot delete,
// and the recovery banner across a server restart.
func TestDashboardInABrowser(t *testing.T) {
	e := newDashEnv(t)
	e.must("login page", e.b.Run(chromedp.Navigate(e.url("/login"))))
	e.b.Screenshot(t, "login")
	e.signIn(dashAdminSecret, "ada (admin)")

	// Overview: the right counts.
	e.must("two devices online", e.b.WaitText("#devices-online", "2 online"))
	e.must("no deployment", e.b.WaitText("#deployments-total", "0"))
	e.must("nothing to attend to", e.b.WaitText("#attention", "Nothing"))

	// A deployment applied through the API fills its bar without a reload.
	e.must("deployments page", e.b.Run(chromedp.Navigate(e.url("/deployments"))))
	e.must("empty list", e.b.WaitText("#deployments", "No deployments yet"))
	e.markPage()
	if out, errOut, code := cli(t, e.http, "apply", "-f", deploymentFile(t, "web", "", "dashboard-note")); code != 0 {
		t.Fatalf("apply: %s %s", out, errOut)
	}
	e.must("progress reaches 2/2", e.b.WaitText("#dep-web .counts", "2/2 succeeded"))
	full, err := browsertest.Get(e.b, chromedp.AttributeValue(chromedp.CSS("#dep-web svg.bar"), "data-succeeded"))
	e.must("read the bar", err)
	if full.Value != "100" {
		t.Fatalf("bar at %q%%, want 100", full.Value)
	}
	e.checkNotReloaded("progress bar")
	e.b.Screenshot(t, "deployments")
	e.must("deployment detail", e.b.Run(chromedp.Navigate(e.url("/deployments/web"))))
	e.must("detail state", e.b.WaitText("#state", "Succeeded"))
	e.must("per-device table", e.b.WaitText("#devices", "a2"))
	e.must("spec shown", e.b.WaitText("#spec", "dashboard-note"))
	e.b.Screenshot(t, "deployment")

	// An admin applies from the dashboard: a bad document comes back with
	// the field named and nothing stored; a good one is created and then
	// deleted through its page.
	e.must("deployments page", e.b.Run(chromedp.Navigate(e.url("/deployments"))))
	bad := "apiVersion: harmony/v1alpha1\nkind: Deployment\nmetadata: {name: extra}\nspec:\n  resources:\n  - {id: f, kind: File, spec: {path: relative, content: x}}\n"
	e.must("apply a bad document", e.b.Run(chromedp.Click(chromedp.CSS("details summary")),
		chromedp.SetValue(chromedp.CSS("#manifest"), bad), chromedp.Submit(chromedp.CSS("#apply"))))
	e.must("the field is named", e.b.WaitText("#apply-error", "spec.resources[0].spec.path"))
	kept, err := browsertest.Get(e.b, chromedp.Value(chromedp.CSS("#manifest")))
	e.must("read the form", err)
	if kept != bad {
		t.Fatalf("the rejected document was not kept in the form: %q", kept)
	}
	if _, err := describe(t, e.http, "extra"); err == nil {
		t.Fatal("a rejected document was stored")
	}
	good := strings.Replace(bad, "path: relative", "path: "+filepath.Join(e.dir, "a1", "files", "extra"), 1)
	e.must("apply a good document", e.b.Run(chromedp.SetValue(chromedp.CSS("#manifest"), good), chromedp.Submit(chromedp.CSS("#apply"))))
	e.must("created", e.b.WaitText("#flash", "extra created (generation 1)"))
	e.must("extra listed", e.b.WaitText("#deployments", "extra"))
	e.must("extra's page", e.b.Run(chromedp.Navigate(e.url("/deployments/extra"))))
	e.must("delete extra", e.b.Run(chromedp.Click(chromedp.CSS(`#delete input[name=sure]`)), chromedp.Click(chromedp.CSS("#delete button"))))
	e.must("deleted", e.b.WaitText("#flash", "deleted extra"))
	if _, err := describe(t, e.http, "extra"); err == nil {
		t.Fatal("extra still exists after the admin deleted it")
	}

	e.must("overview", e.b.Run(chromedp.Navigate(e.url("/"))))
	e.must("one succeeded", e.b.WaitText("#deployments-succeeded", "1 succeeded"))
	e.b.Screenshot(t, "overview")

	// Device detail: the logs tail of the ShellJob and the exec box.
	e.must("device a1", e.b.Run(chromedp.Navigate(e.url("/devices/a1"))))
	e.must("a1 online", e.b.WaitText("#status", "online"))
	e.must("open the logs", e.b.Run(chromedp.Click(chromedp.CSS(`a[href*="resource=hello"]`))))
	e.must("logs tail", e.b.WaitText("#output", "dashboard-note"))
	e.must("run a command", e.b.Run(chromedp.SendKeys(chromedp.CSS("#command"), "echo exec-from-the-dashboard"),
		chromedp.Click(chromedp.CSS("#exec button"))))
	e.must("command output", e.b.WaitText("#output-text", "exec-from-the-dashboard"))
	e.b.Screenshot(t, "device")
	e.must("device a2", e.b.Run(chromedp.Navigate(e.url("/devices/a2"))))
	e.must("no exec box on a2", e.b.WaitText(".static .hint", "Exec is not enabled"))

	// The label filter, then an agent stopping turns it offline on the
	// open devices page.
	e.must("devices page", e.b.Run(chromedp.Navigate(e.url("/devices"))))
	e.must("both listed", e.b.WaitText("#devices-count", "2 of 2 devices"))
	e.must("filter by label", e.b.Run(chromedp.SendKeys(chromedp.CSS("#selector"), "site=office"), chromedp.Submit(chromedp.CSS("#filter"))))
	e.must("filtered", e.b.WaitText("#devices-count", "1 of 2 devices"))
	e.must("a2 is the one", e.b.WaitText("#devices", "a2"))
	e.markPage()
	if code := e.agents["a2"].signalAndWait(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("agent a2 exited %d", code)
	}
	e.must("a2 offline", e.b.WaitText("#dev-a2", "offline"))
	e.checkNotReloaded("devices page")
	e.b.Screenshot(t, "devices")
	e.must("overview", e.b.Run(chromedp.Navigate(e.url("/"))))
	e.must("one offline", e.b.WaitText("#devices-offline", "1 offline"))
	e.must("attention names a2", e.b.WaitText("#attention", "a2"))

	// HA clusters: none here (TestDashboardShowsAnHACluster has one).
	e.must("clusters page", e.b.Run(chromedp.Navigate(e.url("/clusters"))))
	e.must("no cluster", e.b.WaitText("#clusters", "No HA cluster"))

	// A viewer sees no delete form, and a forged delete gets 403.
	e.must("sign out", e.b.Run(chromedp.Click(chromedp.CSS(".who button"))))
	e.must("signed out", e.b.WaitText("h1", "Sign in"))
	e.signIn(dashViewerSecret, "vic (viewer)")
	e.must("viewer on the deployment", e.b.Run(chromedp.Navigate(e.url("/deployments/web"))))
	e.must("viewer sees the spec", e.b.WaitText("#spec", "dashboard-note"))
	if n, err := browsertest.Get(e.b, chromedp.Evaluate[int](`document.querySelectorAll("#delete, #apply").length`)); err != nil || n != 0 {
		t.Fatalf("a viewer is shown %d delete/apply forms (%v)", n, err)
	}
	status, err := browsertest.Get(e.b, chromedp.Evaluate[int](`(async () => {
		const body = new URLSearchParams({csrf: document.querySelector('.who input[name=csrf]').value, sure: 'on'});
		const r = await fetch('/deployments/web/delete', {method: 'POST', body});
		return r.status;
	})()`, chromedp.EvalAwaitPromise))
	e.must("viewer delete", err)
	if status != 403 {
		t.Fatalf("a viewer's delete answered %d, want 403", status)
	}
	if _, err := describe(t, e.http, "web"); err != nil {
		t.Fatalf("the deployment is gone after a viewer's delete: %v", err)
	}

	// Restart the server while its store does not answer: the open page
	// shows the banner, then clears it by itself once the view is rebuilt.
	e.must("viewer overview", e.b.Run(chromedp.Navigate(e.url("/"))))
	e.must("counts before the restart", e.b.WaitText("#devices-total", "2"))
	e.markPage()
	if code := e.server.signalAndWait(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("server exited %d", code)
	}
	e.proxy.Cut()
	e.server = startHarmony(t, e.args...)
	e.must("recovery banner", e.b.WaitText("#recovery", "The server has not reached the store yet"))
	if n, err := browsertest.Get(e.b, chromedp.Evaluate[int](`document.querySelectorAll("#devices-total").length`)); err != nil || n != 0 {
		t.Fatalf("counts shown (%d) while the server has no view (%v)", n, err)
	}
	e.b.Screenshot(t, "recovery banner")
	e.proxy.Heal()
	retry.Until(t, 30*time.Second, func() error {
		n, err := browsertest.Get(e.b, chromedp.Evaluate[int](`document.querySelectorAll("#recovery").length`))
		if err != nil {
			return err
		}
		if n != 0 {
			return fmt.Errorf("banner still shown")
		}
		return nil
	})
	e.must("counts after the restart", e.b.WaitText("#devices-total", "2"))
	e.must("still one deployment", e.b.WaitText("#deployments-total", "1"))
	e.checkNotReloaded("recovery")
	if errs := e.cspErrors(); len(errs) > 0 {
		t.Fatalf("the browser reported CSP violations or exceptions:\n%s", strings.Join(errs, "\n"))
	}
}

// The HA clusters page against a real two-node PostgreSQL cluster after a
// switchover: members, epoch and a timeline with the change.
func TestDashboardShowsAnHACluster(t *testing.T) {
	c := newHACluster(t, "default", failover.AbsoluteConsistency, "n1", "n2")
	c.waitPrimary("n1", true, time.Minute)
	waitEndpoint(t, c.node("n2"), "/replica", 30*time.Second)
	if out, err := c.cli("switchover", "--to", "n2"); err != nil {
		t.Fatalf("switchover: %v\n%s", err, out)
	}
	c.waitPrimary("n2", false, time.Minute)
	b := browsertest.Start(t)
	e := &dashEnv{t: t, http: strings.TrimPrefix(c.serverHTTP, "http://"), b: b}
	e.signIn(e2eToken, "e2e (admin)")
	e.must("clusters page", b.Run(chromedp.Navigate(e.url("/clusters"))))
	e.must("the cluster is listed", b.WaitText("#clusters", c.name))
	e.must("cluster page", b.Run(chromedp.Navigate(e.url("/clusters/"+c.name))))
	e.must("primary n2", b.WaitText("#primary", "n2"))
	e.must("epoch 2", b.WaitText("#epoch", "2"))
	e.must("members", b.WaitText("#members", "n1"))
	e.must("history", b.WaitText("#history", "n1"))
	n, err := browsertest.Get(b, chromedp.Evaluate[int](`document.querySelectorAll("#timeline rect").length`))
	e.must("timeline", err)
	marks, err := browsertest.Get(b, chromedp.Evaluate[int](`document.querySelectorAll("#timeline line.mark").length`))
	e.must("timeline marks", err)
	if n != 2 || marks != 1 {
		t.Fatalf("timeline has %d bands and %d marks, want 2 (n1 then n2) and 1 change", n, marks)
	}
	b.Screenshot(t, "cluster")

	// Reading needs no JavaScript: with scripts off, the same page and the
	// devices list render in full (and htmx never runs).
	noScripts := func(ctx context.Context, target *chromedp.Target) (chromedp.Void, error) {
		_, err := cdp.Call(ctx, target, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true})
		return chromedp.Void{}, err
	}
	e.must("turn scripts off", b.Run(noScripts))
	e.must("cluster page without scripts", b.Run(chromedp.Navigate(e.url("/clusters/"+c.name))))
	e.must("primary without scripts", b.WaitText("#primary", "n2"))
	e.must("devices without scripts", b.Run(chromedp.Navigate(e.url("/devices"))))
	e.must("device rows without scripts", b.WaitText("#devices", "n1"))
	if htmx, err := browsertest.Get(b, chromedp.Evaluate[bool](`typeof window.htmx !== "undefined"`)); err != nil || htmx {
		t.Fatalf("htmx ran with scripts off (%v, %v)", htmx, err)
	}
	if errs := e.cspErrors(); len(errs) > 0 {
		t.Fatalf("the browser reported CSP violations or exceptions:\n%s", strings.Join(errs, "\n"))
	}
}
