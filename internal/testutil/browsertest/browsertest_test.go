package browsertest_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/harmony-fleet/harmony/internal/testutil/browsertest"
	"github.com/harmony-fleet/harmony/internal/testutil/leak"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

func TestMain(m *testing.M) { leak.VerifyTestMain(m) }

const csp = "default-src 'self'; script-src 'self'"

const cleanPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>fleet</title></head>
<body>
<h1>Fleet</h1>
<p id="status">loading</p>
<script src="/app.js"></script>
</body></html>`

// app.js changes the page only after a round trip to the server, so the
// test has something asynchronous to wait for.
const appJS = `fetch('/api/status')
	.then(r => r.json())
	.then(s => { document.getElementById('status').textContent = 'agents online: ' + s.online; });
`

const inlinePage = `<!doctype html>
<html><head><meta charset="utf-8"><title>inline</title></head>
<body>
<p id="status">static</p>
<script>document.getElementById('status').textContent = 'inline ran';</script>
</body></html>`

// newSite serves the test pages, every response under the same CSP.
func newSite(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	page := func(body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Write([]byte(body))
		}
	}
	mux.Handle("GET /{$}", page(cleanPage))
	mux.Handle("GET /inline", page(inlinePage))
	mux.Handle("GET /moving", page(`<p id="status">first page</p><script src="/move.js"></script>`))
	mux.Handle("GET /second", page(`<p id="status">second page</p>`))
	mux.HandleFunc("GET /move.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		w.Write([]byte(`setTimeout(() => { location.href = '/second'; }, 300);`))
	})
	mux.HandleFunc("GET /app.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		w.Write([]byte(appJS))
	})
	// Chromium asks for a favicon, and a 404 is logged as an error.
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /api/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"online": 3}`))
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", csp)
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestPageUnderCSP(t *testing.T) {
	t.Parallel()
	srv := newSite(t)
	b := browsertest.Start(t)

	if err := b.Run(chromedp.Navigate(srv.URL + "/")); err != nil {
		t.Fatal(err)
	}
	if err := b.WaitText("#status", "agents online: 3"); err != nil {
		b.Screenshot(t, "failed")
		t.Fatal(err)
	}
	text, err := browsertest.Get(b, chromedp.Text(chromedp.CSS("h1")))
	if err != nil || text != "Fleet" {
		t.Errorf("h1 text = %q, %v; want Fleet", text, err)
	}
	b.Screenshot(t, "status")
	if errs := b.Errors(); len(errs) > 0 {
		t.Errorf("the page reported errors:\n%s", strings.Join(errs, "\n"))
	}
}

func TestInlineScriptIsACSPViolation(t *testing.T) {
	t.Parallel()
	srv := newSite(t)
	b := browsertest.Start(t)

	if err := b.Run(chromedp.Navigate(srv.URL + "/inline")); err != nil {
		t.Fatal(err)
	}
	retry.Until(t, 10*time.Second, func() error {
		for _, e := range b.Errors() {
			if strings.Contains(e, "Content Security Policy") {
				return nil
			}
		}
		return errors.New("no CSP violation reported")
	})
	if text, err := browsertest.Get(b, chromedp.Text(chromedp.CSS("#status"))); err != nil || text != "static" {
		t.Errorf("#status = %q, %v; the blocked script must not have run", text, err)
	}
}

func TestWaitTextFollowsNavigation(t *testing.T) {
	t.Parallel()
	srv := newSite(t)
	b := browsertest.Start(t)

	if err := b.Run(chromedp.Navigate(srv.URL + "/moving")); err != nil {
		t.Fatal(err)
	}
	// The page replaces itself while WaitText waits in it.
	if err := b.WaitText("#status", "second page"); err != nil {
		t.Fatal(err)
	}
	if errs := b.Errors(); len(errs) > 0 {
		t.Errorf("the pages reported errors:\n%s", strings.Join(errs, "\n"))
	}
}

func TestCollectsExceptionsAndConsoleErrors(t *testing.T) {
	t.Parallel()
	b := browsertest.Start(t)

	if err := b.Run(chromedp.Evaluate[chromedp.Void](`
		console.log("just saying");
		console.error("something broke", 42);
		setTimeout(() => { throw new TypeError("boom"); });
	`)); err != nil {
		t.Fatal(err)
	}
	retry.Until(t, 10*time.Second, func() error {
		if n := len(b.Errors()); n < 2 {
			return errors.New("fewer than two errors collected")
		}
		return nil
	})
	got := strings.Join(b.Errors(), "\n")
	for _, want := range []string{"console.error: something broke 42", "exception: Uncaught TypeError: boom"} {
		if !strings.Contains(got, want) {
			t.Errorf("errors lack %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "just saying") {
		t.Errorf("console.log counted as an error:\n%s", got)
	}
}

func TestWaitTextTimesOutWithCurrentText(t *testing.T) {
	t.Parallel()
	// The timeout bounds the navigation too: long enough for a loaded CI
	// machine to load a data: URL, short enough to wait out twice.
	b := browsertest.Start(t, browsertest.WithTimeout(3*time.Second))

	if err := b.Run(chromedp.Navigate(`data:text/html,<p id="status">still loading</p>`)); err != nil {
		t.Fatal(err)
	}
	err := b.WaitText("#status", "ready")
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), `"still loading"`) {
		t.Errorf("WaitText = %v; want a deadline error quoting the current text", err)
	}
	err = b.WaitText("#missing", "ready")
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no element matches") {
		t.Errorf("WaitText on a missing element = %v", err)
	}
	// The browser still works after a timed-out wait.
	if err := b.WaitText("#status", "still"); err != nil {
		t.Error(err)
	}
}

func TestScreenshotGoesToArtifactsDir(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(browsertest.ArtifactsEnv, dir)
	b := browsertest.Start(t)

	if err := b.Run(chromedp.Navigate(`data:text/html,<h1>hello</h1>`)); err != nil {
		t.Fatal(err)
	}
	b.Screenshot(t, "hello page")
	png, err := os.ReadFile(filepath.Join(dir, "TestScreenshotGoesToArtifactsDir_hello_page.png"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(png), "\x89PNG") {
		t.Errorf("screenshot is not a PNG: % x", png[:min(8, len(png))])
	}
}
