package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/harmony-fleet/harmony/internal/testutil/leak"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/mesh"
	"github.com/harmony-fleet/harmony/internal/mesh/meshtest"
	"github.com/harmony-fleet/harmony/internal/server"
	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
	"github.com/harmony-fleet/harmony/internal/web"
)

func TestMain(m *testing.M) { leak.VerifyTestMain(m) }

// running is a server started by start; stop ends it and returns Run's error.
type running struct {
	info server.Info
	stop func() error
}

func start(t testing.TB, cfg config.Server) running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan server.Info, 1)
	done := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() {
		done <- server.Run(ctx, cfg, log, server.Options{OnReady: func(i server.Info) { ready <- i }})
	}()
	var r running
	select {
	case r.info = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("server stopped before it was ready: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("server not ready within 30s")
	}
	stopped := false
	var runErr error
	r.stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			runErr = <-done
		}
		return runErr
	}
	t.Cleanup(func() { _ = r.stop() })
	return r
}

func testConfig(t testing.TB, dataDir string) config.Server {
	cfg := config.DefaultServer()
	cfg.DataDir = dataDir
	cfg.NATSListen = "127.0.0.1:0"
	cfg.HTTP = "127.0.0.1:0"
	cfg.TLS = "off"      // TestTLS turns it on
	cfg.NATSAuth = "off" // TestNATSAuth turns it on
	cfg.Tokens = []config.Token{
		{Name: "test-admin", Role: "admin", SHA256: web.HashToken(adminToken)},
		{Name: "test-viewer", Role: "viewer", SHA256: web.HashToken(viewerToken)},
	}
	return cfg
}

const (
	adminToken  = "test-admin-token-8d2f4b6a0c1e3a5c7e9b"
	viewerToken = "test-viewer-token-1a3c5e7b9d0f2a4c6e8d"
)

// api is a client that shows the admin token.
var api = &http.Client{Transport: bearer{adminToken}}

type bearer struct{ token string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

func getJSON(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	resp, err := api.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("%s: %v", url, err)
	}
	return resp.StatusCode, body
}

func waitReady(t *testing.T, base string) {
	t.Helper()
	retry.Until(t, 30*time.Second, func() error {
		code, body := getJSON(t, base+"/readyz")
		if code != http.StatusOK {
			return errors.New(strings.TrimSpace(jsonString(body)))
		}
		return nil
	})
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func openStore(t testing.TB, natsURL string) store.Store {
	t.Helper()
	nc, err := mesh.Connect(mesh.ClientConfig{URLs: []string{natsURL}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return openStoreConn(t, nc)
}

func openStoreConn(t testing.TB, nc *nats.Conn) store.Store {
	t.Helper()
	st, err := store.NewNATS(nc, store.NATSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestBucketsAndValuesSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	srv := start(t, cfg)
	waitReady(t, srv.info.HTTPURL)

	ctx := context.Background()
	st := openStore(t, srv.info.NATSURL)
	for _, b := range server.FleetBuckets(cfg) {
		kv, err := st.Open(ctx, b.Name)
		if err != nil {
			t.Fatalf("bucket %s missing after start: %v", b.Name, err)
		}
		if _, err := kv.Create(ctx, "dev-1", []byte("kept in "+b.Name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.stop(); err != nil {
		t.Fatalf("Run returned %v after a clean stop", err)
	}

	srv2 := start(t, cfg)
	waitReady(t, srv2.info.HTTPURL)
	st2 := openStore(t, srv2.info.NATSURL)
	for _, b := range server.FleetBuckets(cfg) {
		kv, err := st2.Open(ctx, b.Name)
		if err != nil {
			t.Fatalf("bucket %s lost across restart: %v", b.Name, err)
		}
		e, err := kv.Get(ctx, "dev-1")
		if err != nil || string(e.Value) != "kept in "+b.Name {
			t.Fatalf("value in %s after restart: %q, %v", b.Name, e.Value, err)
		}
	}
	// The operator's view is rebuilt from the store alone.
	retry.Until(t, 10*time.Second, func() error {
		resp, err := http.Get(srv2.info.HTTPURL + "/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(b), `harmony_bucket_keys{bucket="deployments"} 1`) {
			return errors.New("operator view does not show the stored deployment yet")
		}
		return nil
	})
}

func TestIncompatibleBucketStopsStartup(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	// Someone made the deployments bucket with other settings.
	ns, err := mesh.StartServer(mesh.ServerConfig{DataDir: dir + "/nats", Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	st := openStore(t, ns.ClientURL())
	if _, err := st.Ensure(context.Background(), store.BucketConfig{Name: "deployments", History: 2, Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	ns.Shutdown()

	err = server.Run(context.Background(), cfg, slog.New(slog.DiscardHandler), server.Options{})
	var inc *store.IncompatibleBucketError
	if !errors.As(err, &inc) || inc.Bucket != "deployments" {
		t.Fatalf("Run = %v, want an IncompatibleBucketError for deployments", err)
	}
	if !strings.Contains(err.Error(), "history is 2, want 8") {
		t.Fatalf("error does not say what differs: %v", err)
	}
}

func TestReadyzReportsUnreachableStore(t *testing.T) {
	// An external NATS that is down: the server starts HTTP only after its
	// buckets exist, so start NATS, let the server come up, then stop NATS.
	ns := meshtest.StartServer(t)
	cfg := testConfig(t, "")
	cfg.NATSURLs = []string{ns.ClientURL()}
	srv := start(t, cfg)
	waitReady(t, srv.info.HTTPURL)
	ns.Shutdown()
	retry.Until(t, 20*time.Second, func() error {
		code, body := getJSON(t, srv.info.HTTPURL+"/readyz")
		if code != http.StatusServiceUnavailable {
			return errors.New("still ready")
		}
		if !strings.Contains(jsonString(body["reasons"]), "store:") {
			t.Fatalf("503 without a store reason: %v", body)
		}
		return nil
	})
	if code, _ := getJSON(t, srv.info.HTTPURL+"/healthz"); code != http.StatusOK {
		t.Fatalf("healthz = %d while the store is down; the process is alive", code)
	}
}

func TestInvalidConfigIsRefused(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.Replicas = 2
	err := server.Run(context.Background(), cfg, slog.New(slog.DiscardHandler), server.Options{})
	if err == nil || !strings.Contains(err.Error(), "replicas") {
		t.Fatalf("Run = %v, want an error naming replicas", err)
	}
}

// The store goes away (its NATS stops, keeping its data directory) and comes
// back: meanwhile the server is not ready but keeps serving the last view,
// marked stale; afterwards it is ready again and sees new changes.
func TestStaleViewDuringStoreOutage(t *testing.T) {
	ns := meshtest.StartSingle(t)
	cfg := testConfig(t, "")
	cfg.NATSURLs = []string{ns.URL()}
	srv := start(t, cfg)
	waitReady(t, srv.info.HTTPURL)
	post := func(name string) (int, error) {
		doc := "apiVersion: harmony/v1alpha1\nkind: Deployment\nmetadata:\n  name: " + name + "\nspec:\n  selector:\n    matchLabels:\n      site: home\n  resources: []\n"
		resp, err := api.Post(srv.info.HTTPURL+"/api/v1/deployments", "application/yaml", strings.NewReader(doc))
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if code, err := post("web"); err != nil || code >= 300 {
		t.Fatalf("apply web: %d %v", code, err)
	}
	retry.Until(t, 10*time.Second, func() error {
		_, body := getJSON(t, srv.info.HTTPURL+"/api/v1/deployments")
		if !strings.Contains(fmt.Sprint(body["items"]), "web") {
			return errors.New("web not listed yet")
		}
		return nil
	})

	ns.Stop()
	retry.Until(t, 20*time.Second, func() error {
		code, body := getJSON(t, srv.info.HTTPURL+"/api/v1/deployments")
		if code != http.StatusOK {
			return fmt.Errorf("list answered %d during the outage", code)
		}
		if body["stale"] != true || body["stale_since"] == nil {
			return fmt.Errorf("not marked stale yet: %v", body)
		}
		if !strings.Contains(fmt.Sprint(body["items"]), "web") {
			t.Fatalf("the last view was dropped during the outage: %v", body)
		}
		if code, _ := getJSON(t, srv.info.HTTPURL+"/readyz"); code != http.StatusServiceUnavailable {
			return fmt.Errorf("readyz %d during the outage", code)
		}
		return nil
	})

	ns.Start()
	waitReady(t, srv.info.HTTPURL)
	retry.Until(t, 20*time.Second, func() error {
		code, err := post("api")
		if err != nil || code >= 300 {
			return fmt.Errorf("apply api: %d %v", code, err)
		}
		return nil
	})
	retry.Until(t, 20*time.Second, func() error {
		_, body := getJSON(t, srv.info.HTTPURL+"/api/v1/deployments")
		if body["stale"] != nil {
			return fmt.Errorf("still stale: %v", body)
		}
		if !strings.Contains(fmt.Sprint(body["items"]), "api") {
			return errors.New("the change made after the outage is not in the view")
		}
		return nil
	})
}

// leaseHeld reads harmony_server_lease_held from a server's metrics.
func leaseHeld(t *testing.T, base string) bool {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, `harmony_server_lease_held{lease="orphan-gc"}`) {
			return strings.HasSuffix(line, " 1")
		}
	}
	t.Fatalf("no lease metric in %s/metrics", base)
	return false
}

// Two servers on one store: exactly one holds the orphan-collection lease
// and removes orphaned desired state; when it stops, it hands the lease
// over and the other one collects.
func TestOneServerCollectsOrphans(t *testing.T) {
	ns := meshtest.StartServer(t)
	cfgA, cfgB := testConfig(t, ""), testConfig(t, "")
	cfgA.NATSURLs, cfgB.NATSURLs = []string{ns.ClientURL()}, []string{ns.ClientURL()}
	cfgA.Name, cfgB.Name = "a", "b"
	a, b := start(t, cfgA), start(t, cfgB)
	defer b.stop()
	defer a.stop()
	waitReady(t, a.info.HTTPURL)
	waitReady(t, b.info.HTTPURL)

	holder := func() (running, running) {
		var h, other running
		retry.Until(t, 20*time.Second, func() error {
			ha, hb := leaseHeld(t, a.info.HTTPURL), leaseHeld(t, b.info.HTTPURL)
			switch {
			case ha && hb:
				t.Fatal("both servers hold the lease")
			case ha:
				h, other = a, b
			case hb:
				h, other = b, a
			default:
				return errors.New("nobody holds the lease yet")
			}
			return nil
		})
		return h, other
	}
	h, other := holder()
	retry.Holds(t, 3*time.Second, func() error {
		if leaseHeld(t, other.info.HTTPURL) {
			return errors.New("the second server took the lease while the first holds it")
		}
		return nil
	})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := openStore(t, ns.ClientURL()).Open(ctx, "desired-state")
	if err != nil {
		t.Fatal(err)
	}
	orphanRemoved := func(key string) {
		t.Helper()
		if _, err := kv.Create(ctx, key, []byte(`{"v":1}`)); err != nil {
			t.Fatal(err)
		}
		retry.Until(t, 20*time.Second, func() error {
			if _, err := kv.Get(ctx, key); !errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("orphan %s still there (%v)", key, err)
			}
			return nil
		})
	}
	orphanRemoved("dev1.ghost")

	// The holder stops; the other takes over at once and collects. The
	// stop releases the lease: without the release the other could not
	// take it before 4 s (a 6 s TTL counted from its read of a renewal at
	// most 2 s old).
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	retry.Until(t, 3500*time.Millisecond, func() error {
		if !leaseHeld(t, other.info.HTTPURL) {
			return errors.New("the lease did not pass to the remaining server")
		}
		return nil
	})
	orphanRemoved("dev2.ghost")
}

// The API answers only requests with a token; viewers may read, only
// admins may change anything; probes and metrics need no token.
func TestAPIChecksTokens(t *testing.T) {
	srv := start(t, testConfig(t, t.TempDir()))
	base := srv.info.HTTPURL
	waitReady(t, base)
	call := func(token, method, path, body string) (int, map[string]any, http.Header) {
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
		return resp.StatusCode, out, resp.Header
	}
	code := func(out map[string]any) any {
		e, _ := out["error"].(map[string]any)
		return e["code"]
	}
	doc := "apiVersion: harmony/v1alpha1\nkind: Deployment\nmetadata: {name: web}\nspec: {resources: []}\n"

	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		req, _ := http.NewRequest("GET", base+p, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s without a token: %v %v", p, resp, err)
		}
		resp.Body.Close()
	}
	if st, out, h := call("", "GET", "/api/v1/deployments", ""); st != http.StatusUnauthorized || code(out) != "unauthorized" || h.Get("WWW-Authenticate") == "" {
		t.Fatalf("no token: %d %v %v", st, out, h)
	}
	if st, out, _ := call("not-a-token", "GET", "/api/v1/deployments", ""); st != http.StatusUnauthorized || code(out) != "unauthorized" {
		t.Fatalf("unknown token: %d %v", st, out)
	}
	if st, out, _ := call(viewerToken, "GET", "/api/v1/deployments", ""); st != http.StatusOK {
		t.Fatalf("viewer read: %d %v", st, out)
	}
	if st, out, _ := call(viewerToken, "POST", "/api/v1/deployments", doc); st != http.StatusForbidden || code(out) != "forbidden" {
		t.Fatalf("viewer apply: %d %v", st, out)
	}
	if st, _, _ := call(adminToken, "GET", "/api/v1/deployments/web", ""); st != http.StatusNotFound {
		t.Fatalf("a viewer's apply was stored (GET answered %d)", st)
	}
	if st, out, _ := call(adminToken, "POST", "/api/v1/deployments", doc); st != http.StatusOK {
		t.Fatalf("admin apply: %d %v", st, out)
	}
	// GET answers from the operator's view, which follows the store a
	// moment later: wait until it shows the deployment.
	retry.Until(t, 10*time.Second, func() error {
		if st, _, _ := call(viewerToken, "GET", "/api/v1/deployments/web", ""); st != http.StatusOK {
			return fmt.Errorf("GET web answered %d", st)
		}
		return nil
	})
	for _, c := range []struct{ method, path, body string }{
		{"DELETE", "/api/v1/deployments/web", ""},
		{"PATCH", "/api/v1/devices/d1/labels", `{"set":{"a":"b"}}`},
		{"POST", "/api/v1/devices/d1/exec", `{"command":["id"]}`},
	} {
		if st, out, _ := call(viewerToken, c.method, c.path, c.body); st != http.StatusForbidden || code(out) != "forbidden" {
			t.Errorf("viewer %s %s: %d %v, want 403", c.method, c.path, st, out)
		}
	}
	if st, _, _ := call(viewerToken, "GET", "/api/v1/deployments/web", ""); st != http.StatusOK {
		t.Fatalf("the deployment is gone after a viewer's delete (GET answered %d)", st)
	}
	if st, out, _ := call(adminToken, "DELETE", "/api/v1/deployments/web", ""); st != http.StatusOK {
		t.Fatalf("admin delete: %d %v", st, out)
	}
	// Wrong tokens are limited: after five, the next is answered 429. The
	// right one never is (issue "Security II": wrong tries must not lock
	// the admin out).
	for range 5 {
		call("guess", "GET", "/api/v1/deployments", "")
	}
	if st, out, _ := call("guess", "GET", "/api/v1/deployments", ""); st != http.StatusTooManyRequests || code(out) != "rate_limited" {
		t.Fatalf("a wrong token after five failures: %d %v, want 429", st, out)
	}
	if st, out, _ := call(adminToken, "GET", "/api/v1/deployments", ""); st != http.StatusOK {
		t.Fatalf("the right token after five failures: %d %v, want 200", st, out)
	}
}

// A server whose store does not answer yet serves HTTP at once: /healthz
// 200, /readyz and the API 503 saying it is starting, the dashboard its
// sign-in page; stopping it then is a clean stop.
func TestServesHTTPBeforeTheStoreAnswers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0") // a port nothing answers on
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := httpLn.Addr().String()
	httpLn.Close()
	cfg := testConfig(t, t.TempDir())
	cfg.NATSURLs = []string{"nats://" + dead}
	cfg.HTTP = addr
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.Run(ctx, cfg, slog.New(slog.DiscardHandler), server.Options{}) }()
	base := "http://" + addr
	retry.Until(t, 10*time.Second, func() error {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return err // not listening yet
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "starting") {
			return fmt.Errorf("readyz %d %s", resp.StatusCode, body)
		}
		return nil
	})
	if code, _ := getJSON(t, base+"/healthz"); code != http.StatusOK {
		t.Fatalf("healthz %d", code)
	}
	if code, body := getJSON(t, base+"/api/v1/deployments"); code != http.StatusServiceUnavailable || !strings.Contains(jsonString(body), "store_unavailable") {
		t.Fatalf("API while starting: %d %v", code, body)
	}
	resp, err := http.Get(base + "/login")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("dashboard sign-in page while starting: %d", resp.StatusCode)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after a stop while starting: %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("server did not stop within 30s")
	}
}
