// Package browsertest drives a real headless Chromium (Debian's chromium
// package) from tests through chromedp: it starts one browser per call of
// Start, records what the page reports as errors (uncaught exceptions,
// console.error, and browser log entries of level error, which is where
// Content-Security-Policy violations show up), waits for text without fixed
// sleeps, and saves full-page screenshots as test artifacts.
package browsertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// DefaultTimeout bounds each call of Run, Get, WaitText and Screenshot.
const DefaultTimeout = 30 * time.Second

// startTimeout bounds the start of the browser, and closeTimeout its
// graceful close, whatever the per-call timeout.
const (
	startTimeout = 30 * time.Second
	closeTimeout = 10 * time.Second
)

// ArtifactsEnv names the environment variable that overrides the directory
// of the screenshots (by default <repo root>/test/artifacts/screenshots).
const ArtifactsEnv = "HARMONY_ARTIFACTS"

// Width and Height are the size of the browser window.
const (
	Width  = 1280
	Height = 900
)

// Browser is one headless Chromium with one tab. Its methods are safe to call
// from one goroutine at a time (the tab runs one action at a time); Errors
// and Messages may be called from anywhere.
type Browser struct {
	ctx     context.Context // the tab; it lives until the test's cleanup
	timeout time.Duration

	mu       sync.Mutex
	messages []string // every console message, exception and log entry
	errs     []string // the subset that counts as an error

	output lockedBuffer // the browser's stdout and stderr
}

// Option changes how Start sets up the browser.
type Option func(*Browser)

// WithTimeout replaces DefaultTimeout as the bound of each call.
func WithTimeout(d time.Duration) Option {
	return func(b *Browser) { b.timeout = d }
}

// Start starts a headless Chromium for t and opens its tab. The browser is
// stopped at cleanup, which waits until its process has exited. A missing
// chromium fails the test: scripts/deps.sh installs it.
func Start(t testing.TB, opts ...Option) *Browser {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("browsertest: chromium is not installed (%v): run scripts/deps.sh", err)
	}
	b := &Browser{timeout: DefaultTimeout}
	for _, o := range opts {
		o(b)
	}

	allocOpts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Flag("headless", "new"),
		chromedp.NoSandbox, // tests run as root in a container
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(Width, Height),
		chromedp.CombinedOutput(&b.output),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), allocOpts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithListener(b.record))
	b.ctx = ctx
	started := false
	t.Cleanup(func() {
		// Close a running browser gracefully (it then stops its helper
		// processes itself), then cancel both contexts: their cancel funcs
		// return once the process has exited and chromedp's goroutines have
		// ended.
		if started {
			closeCtx, cancel := context.WithTimeout(ctx, closeTimeout)
			if err := chromedp.Cancel(closeCtx); err != nil && !errors.Is(err, context.Canceled) {
				t.Logf("browsertest: closing chromium: %v", err)
			}
			cancel()
		}
		cancelTab()
		cancelAlloc()
		if t.Failed() {
			b.logDiagnostics(t)
		}
	})

	// The first action starts the process, and the browser lives as long as
	// that action's context, so it gets no deadline of its own: a timer
	// stops a browser that does not come up in time.
	stalled := time.AfterFunc(startTimeout, cancelAlloc)
	err = chromedp.Do(ctx)
	if !stalled.Stop() {
		t.Fatalf("browsertest: chromium did not start within %s: %v", startTimeout, err)
	}
	if err != nil {
		t.Fatalf("browsertest: starting chromium: %v", err)
	}
	started = true
	return b
}

// Ctx is the tab's context, for chromedp.Run and chromedp.Do when an action
// needs no deadline or its own. It ends at the test's cleanup.
func (b *Browser) Ctx() context.Context { return b.ctx }

// Run runs the actions in order in the tab, all within the call's timeout.
func (b *Browser) Run(actions ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(b.ctx, b.timeout)
	defer cancel()
	return chromedp.Do(ctx, actions...)
}

// Get runs one action that returns a value, such as chromedp.Text or
// chromedp.Evaluate, within the browser's per-call timeout.
func Get[T any](b *Browser, action chromedp.Action[T]) (T, error) {
	ctx, cancel := context.WithTimeout(b.ctx, b.timeout)
	defer cancel()
	return chromedp.Run(ctx, action)
}

// Errors returns what the pages reported as errors so far, oldest first:
// uncaught exceptions and unhandled rejections, console.error calls, and
// browser log entries of level error (CSP violations, failed loads).
func (b *Browser) Errors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errs...)
}

// Messages returns every console message, exception and browser log entry
// so far, oldest first; a failed test logs them at cleanup.
func (b *Browser) Messages() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.messages...)
}

// record runs on chromedp's reader goroutine for every event of the tab, so
// it only formats and stores.
func (b *Browser) record(ev any) {
	var (
		msg   string
		isErr bool
	)
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		msg = "console." + string(ev.Type) + ": " + argsText(ev.Args) + stackPlace(ev.StackTrace)
		isErr = ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		text := d.Text
		if d.Exception != nil {
			// The description of an Error holds its stack after the first line.
			desc, _, _ := strings.Cut(objectText(d.Exception), "\n")
			text += " " + desc
		}
		msg = "exception: " + text + place(d.URL, d.LineNumber)
		isErr = true
	case *log.EventEntryAdded:
		e := ev.Entry
		msg = fmt.Sprintf("log.%s (%s): %s%s", e.Level, e.Source, e.Text, place(e.URL, e.LineNumber))
		isErr = e.Level == log.EntryLevelError
	default:
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.messages = append(b.messages, msg)
	if isErr {
		b.errs = append(b.errs, msg)
	}
}

func argsText(args []*runtime.RemoteObject) string {
	parts := make([]string, len(args))
	for i, a := range args {
		parts[i] = objectText(a)
	}
	return strings.Join(parts, " ")
}

func objectText(o *runtime.RemoteObject) string {
	if o.Type == runtime.RemoteObjectTypeString {
		var s string
		if json.Unmarshal(o.Value, &s) == nil {
			return s
		}
	}
	if o.UnserializableValue != "" {
		return string(o.UnserializableValue)
	}
	if o.Description != "" {
		return o.Description
	}
	if len(o.Value) > 0 {
		return string(o.Value)
	}
	return string(o.Type)
}

func stackPlace(st *runtime.StackTrace) string {
	if st == nil || len(st.CallFrames) == 0 {
		return ""
	}
	f := st.CallFrames[0]
	return place(f.URL, f.LineNumber)
}

// place formats a source location; the protocol counts lines from 0.
func place(url string, line int64) string {
	if url == "" {
		return ""
	}
	return fmt.Sprintf(" (%s:%d)", url, line+1)
}

// waitTextRound is how long one evaluation in the page waits for a change
// before it reports back, so that WaitText survives a navigation and
// reports recent text when its deadline passes.
const waitTextRound = 500 * time.Millisecond

// textState is what one round of WaitText found in the page.
type textState struct {
	Found bool   `json:"found"`
	Text  string `json:"text"`
	Done  bool   `json:"done"`
	Error string `json:"error"`
}

// waitTextJS resolves when the innerText of the first element matching the
// selector contains the substring (checked on every DOM mutation), or after
// the round's time with what it saw. It is evaluated through the DevTools
// protocol, which the page's Content-Security-Policy does not restrict.
const waitTextJS = `(async (sel, want, roundMs) => {
	const read = () => {
		const el = document.querySelector(sel);
		if (el === null) return {found: false, text: "", done: false};
		const text = el.innerText;
		return {found: true, text, done: text.includes(want)};
	};
	let st;
	try { st = read(); } catch (e) { return {error: String(e)}; }
	if (st.done) return st;
	return await new Promise(resolve => {
		const finish = s => { obs.disconnect(); clearTimeout(timer); resolve(s); };
		const obs = new MutationObserver(() => { const s = read(); if (s.done) finish(s); });
		const timer = setTimeout(() => finish(read()), roundMs);
		obs.observe(document, {subtree: true, childList: true, characterData: true, attributes: true});
	});
})(%s, %s, %d)`

// WaitText waits until the innerText of the first element matching the CSS
// selector contains substring, within the per-call timeout. The page does
// the waiting (a MutationObserver), so no time is lost to sleeps. When the
// timeout passes, the error wraps context.DeadlineExceeded and quotes the
// element's current text, or says that no element matches.
func (b *Browser) WaitText(selector, substring string) error {
	ctx, cancel := context.WithTimeout(b.ctx, b.timeout)
	defer cancel()
	sel, _ := json.Marshal(selector) // a JSON string is a JavaScript string literal
	want, _ := json.Marshal(substring)
	expr := fmt.Sprintf(waitTextJS, sel, want, waitTextRound.Milliseconds())
	var last textState
	for {
		st, err := chromedp.Run(ctx, chromedp.Evaluate[textState](expr, chromedp.EvalAwaitPromise))
		var perr *cdproto.Error
		switch {
		case err == nil && st.Error != "":
			return fmt.Errorf("browsertest: WaitText(%q): %s", selector, st.Error)
		case err == nil && st.Done:
			return nil
		case err == nil:
			last = st
		case ctx.Err() != nil && b.ctx.Err() == nil:
			// The deadline passed: read the text once more for the message.
			rctx, rcancel := context.WithTimeout(b.ctx, 2*time.Second)
			now, rerr := chromedp.Run(rctx, chromedp.Evaluate[textState](
				fmt.Sprintf(waitTextJS, sel, want, 0), chromedp.EvalAwaitPromise))
			rcancel()
			if rerr == nil && now.Error == "" {
				last = now
			}
			if !last.Found {
				return fmt.Errorf("browsertest: waiting %s for %q in %s: %w; no element matches", b.timeout, substring, selector, ctx.Err())
			}
			return fmt.Errorf("browsertest: waiting %s for %q in %s: %w; its text is %q", b.timeout, substring, selector, ctx.Err(), last.Text)
		case ctx.Err() != nil:
			return fmt.Errorf("browsertest: WaitText(%q): %w", selector, err)
		case errors.As(err, &perr):
			// The browser refused this round, typically because the page
			// navigated and its document went away: wait in the new one.
		default:
			return fmt.Errorf("browsertest: WaitText(%q): %w", selector, err)
		}
	}
}

// Screenshot saves a full-page PNG of the tab as <test name>_<name>.png in
// the artifacts directory and logs its path. A failure is reported with
// t.Errorf, so that a screenshot taken on a failure path does not hide the
// failure it documents.
func (b *Browser) Screenshot(t testing.TB, name string) {
	t.Helper()
	dir, err := ArtifactsDir()
	if err != nil {
		t.Errorf("browsertest: screenshot %s: %v", name, err)
		return
	}
	png, err := Get(b, chromedp.FullScreenshot(100))
	if err != nil {
		t.Errorf("browsertest: screenshot %s: %v", name, err)
		return
	}
	path := filepath.Join(dir, fileName(t.Name()+"_"+name)+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Errorf("browsertest: screenshot %s: %v", name, err)
		return
	}
	t.Logf("screenshot: %s", path)
}

var unsafeFileChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

func fileName(s string) string {
	return unsafeFileChars.ReplaceAllString(s, "_")
}

// ArtifactsDir returns, after creating it, the directory for screenshots:
// $HARMONY_ARTIFACTS when set, else test/artifacts/screenshots under the
// repository root (the nearest directory above the working directory that
// holds go.mod).
func ArtifactsDir() (string, error) {
	dir := os.Getenv(ArtifactsEnv)
	if dir == "" {
		root, err := repoRoot()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(root, "test", "artifacts", "screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	return dir, nil
}

func repoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod in %s or above it; set %s", wd, ArtifactsEnv)
		}
		dir = parent
	}
}

// logDiagnostics logs what the page and the browser said, for a failed test.
func (b *Browser) logDiagnostics(t testing.TB) {
	if msgs := b.Messages(); len(msgs) > 0 {
		t.Logf("browsertest: page messages:\n\t%s", strings.Join(msgs, "\n\t"))
	}
	var lines []string
	for line := range strings.Lines(b.output.String()) {
		// Chromium complains at length that the container has no D-Bus.
		if !strings.Contains(line, ":ERROR:dbus/") {
			lines = append(lines, line)
		}
	}
	if out := strings.TrimSpace(strings.Join(lines, "")); out != "" {
		t.Logf("browsertest: chromium output:\n%s", out)
	}
}

// lockedBuffer collects the browser's output, written from chromedp's
// goroutines and read from the test's.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
