package peer

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const cluster = "orders"

func newID(t *testing.T) Identity {
	t.Helper()
	id, err := LoadIdentity("")
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// trust is a Trusted callback over a fixed key -> node map.
func trust(m map[string]string) func(string) (string, bool) {
	return func(pub string) (string, bool) {
		node, ok := m[pub]
		return node, ok
	}
}

// mutableTrust is a Trusted callback whose members change (a membership
// that ends while a connection is kept alive).
type mutableTrust struct {
	mu sync.Mutex
	m  map[string]string
}

func (m *mutableTrust) trusted(pub string) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	node, ok := m.m[pub]
	return node, ok
}

func (m *mutableTrust) remove(pub string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.m, pub)
}

// countingListener counts the connections accepted.
type countingListener struct {
	net.Listener
	accepted atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

type testServer struct {
	*Server
	id    Identity
	addr  string
	ln    *countingListener
	calls atomic.Int64 // of Handle
}

// grant is a handler that grants 1.5 s.
func grant(context.Context, string, Request) Response {
	return Response{Granted: true, Lease: 1500 * time.Millisecond, Reason: "replica"}
}

// startServer runs a server on a loopback port until the test ends. The
// listener exists before Serve runs, so clients may connect at once.
func startServer(t *testing.T, cfg ServerConfig) *testServer {
	t.Helper()
	ts := &testServer{id: cfg.Identity}
	if !ts.id.valid() {
		ts.id = newID(t)
		cfg.Identity = ts.id
	}
	if cfg.Cluster == "" {
		cfg.Cluster = cluster
	}
	if cfg.Handle == nil {
		cfg.Handle = grant
	}
	handle := cfg.Handle
	cfg.Handle = func(ctx context.Context, from string, req Request) Response {
		ts.calls.Add(1)
		return handle(ctx, from, req)
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts.Server = srv
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.ln = &countingListener{Listener: ln}
	ts.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ts.ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ts
}

func newClient(t *testing.T, id Identity) *Client {
	c := NewClient(id)
	t.Cleanup(c.Close)
	return c
}

// rawClient speaks HTTP to a server as id, pinned to the server's key,
// for requests Client would not send.
func rawClient(t *testing.T, id Identity, pin string) *http.Client {
	tr := &http.Transport{TLSClientConfig: clientTLS(id, pin)}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func ask(ctx context.Context, c *Client, ts *testServer, from string) (Response, error) {
	return c.Ask(ctx, ts.addr, ts.id.PublicKey(), Request{Cluster: cluster, From: from, Epoch: 7})
}

func shortCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestAskGranted(t *testing.T) {
	client := newID(t)
	var got struct {
		sync.Mutex
		from string
		req  Request
	}
	ts := startServer(t, ServerConfig{Trusted: trust(map[string]string{client.PublicKey(): "db-2"}),
		Handle: func(ctx context.Context, from string, req Request) Response {
			got.Lock()
			got.from, got.req = from, req
			got.Unlock()
			return grant(ctx, from, req)
		}})
	c := newClient(t, client)
	for range 3 {
		resp, err := ask(shortCtx(t), c, ts, "db-2")
		if err != nil {
			t.Fatal(err)
		}
		if want := (Response{Granted: true, Lease: 1500 * time.Millisecond, Reason: "replica"}); resp != want {
			t.Fatalf("response %+v, want %+v", resp, want)
		}
	}
	got.Lock()
	if got.from != "db-2" || got.req != (Request{V: Version, Cluster: cluster, From: "db-2", Epoch: 7}) {
		t.Fatalf("handler saw %q %+v", got.from, got.req)
	}
	got.Unlock()
	if n := ts.ln.accepted.Load(); n != 1 {
		t.Fatalf("%d connections for 3 asks: not kept alive", n)
	}
	if s := ts.Stats(); s != (ServerStats{Granted: 3}) {
		t.Fatalf("server stats %+v", s)
	}
	if s := c.Stats(); s != (ClientStats{Granted: 3}) {
		t.Fatalf("client stats %+v", s)
	}
	pong, err := c.Ping(shortCtx(t), ts.addr, ts.id.PublicKey())
	if err != nil || pong.Cluster != cluster {
		t.Fatalf("ping: %+v, %v", pong, err)
	}
}

func TestAskRefused(t *testing.T) {
	client := newID(t)
	ts := startServer(t, ServerConfig{Trusted: trust(map[string]string{client.PublicKey(): "db-2"}),
		Handle: func(context.Context, string, Request) Response {
			return Response{Lease: time.Second, Reason: "I am promoting"} // a lease without a grant is dropped
		}})
	c := newClient(t, client)
	resp, err := ask(shortCtx(t), c, ts, "db-2")
	if err != nil {
		t.Fatal(err)
	}
	if resp != (Response{Reason: "I am promoting"}) {
		t.Fatalf("response %+v", resp)
	}
	if s := ts.Stats(); s.Refused != 1 || s.Granted != 0 {
		t.Fatalf("server stats %+v", s)
	}
	if s := c.Stats(); s != (ClientStats{Refused: 1}) {
		t.Fatalf("client stats %+v", s)
	}
}

func TestUntrustedClientRefusedInHandshake(t *testing.T) {
	member, stranger := newID(t), newID(t)
	ts := startServer(t, ServerConfig{Trusted: trust(map[string]string{member.PublicKey(): "db-2"})})
	c := newClient(t, stranger)
	_, err := ask(shortCtx(t), c, ts, "db-2")
	if err == nil {
		t.Fatal("an untrusted key was answered")
	}
	if _, ok := errors.AsType[*StatusError](err); ok {
		t.Fatalf("refused over HTTP, not in the handshake: %v", err)
	}
	if _, err := c.Ping(shortCtx(t), ts.addr, ts.id.PublicKey()); err == nil {
		t.Fatal("an untrusted key was answered a ping")
	}
	if n := ts.calls.Load(); n != 0 {
		t.Fatalf("handler called %d times", n)
	}
	if s := ts.Stats(); s.RejectedAuth != 2 || s.Pings != 0 {
		t.Fatalf("server stats %+v", s)
	}
	if s := c.Stats(); s != (ClientStats{Errors: 1}) {
		t.Fatalf("client stats %+v", s)
	}
}

// A membership that ends while a connection is kept alive: the next
// request on it is refused.
func TestMembershipEndsOnKeptConnection(t *testing.T) {
	client := newID(t)
	members := &mutableTrust{m: map[string]string{client.PublicKey(): "db-2"}}
	ts := startServer(t, ServerConfig{Trusted: members.trusted})
	c := newClient(t, client)
	if _, err := ask(shortCtx(t), c, ts, "db-2"); err != nil {
		t.Fatal(err)
	}
	members.remove(client.PublicKey())
	_, err := ask(shortCtx(t), c, ts, "db-2")
	if se, ok := errors.AsType[*StatusError](err); !ok || se.Status != http.StatusForbidden || se.Code != CodeUntrusted {
		t.Fatalf("after the membership ended: %v", err)
	}
	if n := ts.calls.Load(); n != 1 {
		t.Fatalf("handler called %d times, want 1", n)
	}
	if n := ts.ln.accepted.Load(); n != 1 {
		t.Fatalf("%d connections, want 1 (kept alive)", n)
	}
}

func TestClaimingAnotherMemberIsForbidden(t *testing.T) {
	client := newID(t)
	ts := startServer(t, ServerConfig{Trusted: trust(map[string]string{client.PublicKey(): "db-2", "Uother": "db-3"})})
	c := newClient(t, client)
	_, err := ask(shortCtx(t), c, ts, "db-3")
	se, ok := errors.AsType[*StatusError](err)
	if !ok || se.Status != http.StatusForbidden || se.Code != CodeWrongFrom {
		t.Fatalf("claiming db-3: %v", err)
	}
	if !strings.Contains(se.Reason, client.PublicKey()) {
		t.Fatalf("the reason does not name the key: %q", se.Reason)
	}
	if n := ts.calls.Load(); n != 0 {
		t.Fatalf("handler called %d times", n)
	}
	if s := ts.Stats(); s.RejectedAuth != 1 {
		t.Fatalf("server stats %+v", s)
	}
}

func TestOtherClusterIsRefused(t *testing.T) {
	client := newID(t)
	ts := startServer(t, ServerConfig{Trusted: trust(map[string]string{client.PublicKey(): "db-2"})})
	c := newClient(t, client)
	_, err := c.Ask(shortCtx(t), ts.addr, ts.id.PublicKey(), Request{Cluster: "billing", From: "db-2", Epoch: 1})
	if se, ok := errors.AsType[*StatusError](err); !ok || se.Status != http.StatusConflict || se.Code != CodeWrongCluster {
		t.Fatalf("another cluster: %v", err)
	}
	if n := ts.calls.Load(); n != 0 {
		t.Fatalf("handler called %d times", n)
	}
}

func TestServerKeyIsPinned(t *testing.T) {
	client, impostor, expected := newID(t), newID(t), newID(t)
	ts := startServer(t, ServerConfig{Identity: impostor, Trusted: trust(map[string]string{client.PublicKey(): "db-2"})})
	c := newClient(t, client)
	_, err := c.Ask(shortCtx(t), ts.addr, expected.PublicKey(), Request{Cluster: cluster, From: "db-2"})
	ke, ok := errors.AsType[*KeyError](err)
	if !ok || ke.Got != impostor.PublicKey() || ke.Want != expected.PublicKey() {
		t.Fatalf("an impostor's key: %v", err)
	}
	if n := ts.calls.Load(); n != 0 {
		t.Fatalf("handler called %d times", n)
	}
	// The same client still reaches the right key at that address.
	if _, err := ask(shortCtx(t), c, ts, "db-2"); err != nil {
		t.Fatal(err)
	}
}

func TestNoAnswerWithoutMutualTLS(t *testing.T) {
	client := newID(t)
	ts := startServer(t, ServerConfig{Trusted: trust(map[string]string{client.PublicKey(): "db-2"})})

	t.Run("plain HTTP", func(t *testing.T) {
		body := strings.NewReader(`{"v":1,"cluster":"orders","from":"db-2","epoch":7}`)
		req, _ := http.NewRequestWithContext(shortCtx(t), http.MethodPost, "http://"+ts.addr+PathPromise, body)
		req.Header.Set("Content-Type", "application/json")
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			return // the connection was closed: nothing useful either
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode == http.StatusOK || bytes.Contains(b, []byte("granted")) {
			t.Fatalf("plain HTTP answered %d %q", resp.StatusCode, b)
		}
	})
	t.Run("TLS without a client certificate", func(t *testing.T) {
		cfg := clientTLS(client, ts.id.PublicKey())
		cfg.Certificates = nil
		tr := &http.Transport{TLSClientConfig: cfg}
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequestWithContext(shortCtx(t), http.MethodGet, "https://"+ts.addr+PathPing, nil)
		if resp, err := (&http.Client{Transport: tr}).Do(req); err == nil {
			resp.Body.Close()
			t.Fatalf("answered %d without a client certificate", resp.StatusCode)
		}
	})
	t.Run("TLS 1.2", func(t *testing.T) {
		cfg := clientTLS(client, ts.id.PublicKey())
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
		tr := &http.Transport{TLSClientConfig: cfg}
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequestWithContext(shortCtx(t), http.MethodGet, "https://"+ts.addr+PathPing, nil)
		if resp, err := (&http.Client{Transport: tr}).Do(req); err == nil {
			resp.Body.Close()
			t.Fatalf("answered %d over TLS 1.2", resp.StatusCode)
		}
	})
	if n := ts.calls.Load(); n != 0 {
		t.Fatalf("handler called %d times", n)
	}
	if s := ts.Stats(); s.Pings != 0 || s.Granted != 0 {
		t.Fatalf("server stats %+v", s)
	}
}

// The client's ctx bounds a slow handler: Ask gives up at its deadline,
// and the handler's ctx ends when the client goes away.
func TestSlowHandlerBoundedByClientCtx(t *testing.T) {
	client := newID(t)
	entered, ended := make(chan struct{}), make(chan struct{})
	ts := startServer(t, ServerConfig{Trusted: trust(map[string]string{client.PublicKey(): "db-2"}),
		HandleTimeout: time.Minute,
		Handle: func(ctx context.Context, _ string, _ Request) Response {
			close(entered)
			<-ctx.Done()
			close(ended)
			return Response{Granted: true, Lease: time.Second}
		}})
	c := newClient(t, client)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := ask(ctx, c, ts, "db-2")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Ask past its deadline: %v", err)
	}
	<-entered
	<-ended // else the test times out: the handler's ctx never ended
	if s := c.Stats(); s != (ClientStats{Errors: 1}) {
		t.Fatalf("client stats %+v", s)
	}
}

// The server's own bound: a handler that waits for its ctx is cut off
// after HandleTimeout even when the client would wait longer.
func TestSlowHandlerBoundedByServer(t *testing.T) {
	client := newID(t)
	ts := startServer(t, ServerConfig{Trusted: trust(map[string]string{client.PublicKey(): "db-2"}),
		HandleTimeout: 50 * time.Millisecond,
		Handle: func(ctx context.Context, _ string, _ Request) Response {
			<-ctx.Done()
			return Response{Reason: "undecided: " + ctx.Err().Error()}
		}})
	c := newClient(t, client)
	resp, err := ask(shortCtx(t), c, ts, "db-2")
	if err != nil {
		t.Fatal(err)
	}
	if resp.Granted || !strings.HasPrefix(resp.Reason, "undecided") {
		t.Fatalf("response %+v", resp)
	}
}

func TestMalformedRequests(t *testing.T) {
	client := newID(t)
	ts := startServer(t, ServerConfig{Trusted: trust(map[string]string{client.PublicKey(): "db-2"})})
	hc := rawClient(t, client, ts.id.PublicKey())
	valid := `{"v":1,"cluster":"orders","from":"db-2","epoch":7}`
	big := `{"v":1,"cluster":"orders","from":"db-2","epoch":7,"pad":"` + strings.Repeat("x", MaxBody) + `"}`
	for _, tc := range []struct {
		name, method, path, ctype string
		body                      io.Reader
		status                    int
		code                      Code
	}{
		{"valid", http.MethodPost, PathPromise, "application/json", strings.NewReader(valid), http.StatusOK, ""},
		{"json with charset", http.MethodPost, PathPromise, "application/json; charset=utf-8", strings.NewReader(valid), http.StatusOK, ""},
		{"oversize", http.MethodPost, PathPromise, "application/json", strings.NewReader(big), http.StatusRequestEntityTooLarge, CodeTooLarge},
		// No Content-Length: the limit is found while reading.
		{"oversize chunked", http.MethodPost, PathPromise, "application/json", io.MultiReader(strings.NewReader(big)), http.StatusRequestEntityTooLarge, CodeTooLarge},
		{"GET promise", http.MethodGet, PathPromise, "", nil, http.StatusMethodNotAllowed, CodeMethodNotAllowed},
		{"POST ping", http.MethodPost, PathPing, "application/json", strings.NewReader(valid), http.StatusMethodNotAllowed, CodeMethodNotAllowed},
		{"other path", http.MethodPost, "/v1/failover/promise/", "application/json", strings.NewReader(valid), http.StatusNotFound, CodeNotFound},
		{"v2 path", http.MethodPost, "/v2/failover/promise", "application/json", strings.NewReader(valid), http.StatusNotFound, CodeNotFound},
		{"text body", http.MethodPost, PathPromise, "text/plain", strings.NewReader(valid), http.StatusUnsupportedMediaType, CodeUnsupportedType},
		{"no type", http.MethodPost, PathPromise, "", strings.NewReader(valid), http.StatusUnsupportedMediaType, CodeUnsupportedType},
		{"not JSON", http.MethodPost, PathPromise, "application/json", strings.NewReader("epoch=7"), http.StatusBadRequest, CodeBadRequest},
		{"trailing data", http.MethodPost, PathPromise, "application/json", strings.NewReader(valid + valid), http.StatusBadRequest, CodeBadRequest},
		{"version 2", http.MethodPost, PathPromise, "application/json", strings.NewReader(`{"v":2,"cluster":"orders","from":"db-2"}`), http.StatusBadRequest, CodeBadVersion},
		{"no version", http.MethodPost, PathPromise, "application/json", strings.NewReader(`{"cluster":"orders","from":"db-2"}`), http.StatusBadRequest, CodeBadVersion},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(shortCtx(t), tc.method, "https://"+ts.addr+tc.path, tc.body)
			if err != nil {
				t.Fatal(err)
			}
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d %s, want %d", resp.StatusCode, b, tc.status)
			}
			if tc.code == "" {
				return
			}
			var eb ErrorBody
			if err := json.Unmarshal(b, &eb); err != nil || eb.Code != tc.code || eb.V != Version {
				t.Fatalf("body %s (%v), want code %s", b, err, tc.code)
			}
		})
	}
	if n := ts.calls.Load(); n != 2 {
		t.Fatalf("handler called %d times, want 2 (the valid requests)", n)
	}
}

// Several goroutines ask several peers at once through one client.
func TestConcurrentAsks(t *testing.T) {
	client := newID(t)
	members := trust(map[string]string{client.PublicKey(): "db-1"})
	servers := []*testServer{
		startServer(t, ServerConfig{Trusted: members}),
		startServer(t, ServerConfig{Trusted: members}),
		startServer(t, ServerConfig{Trusted: members, Handle: func(context.Context, string, Request) Response {
			return Response{Reason: "not caught up"}
		}}),
	}
	c := newClient(t, client)
	const goroutines, asks = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*asks*len(servers))
	for g := range goroutines {
		wg.Go(func() {
			for i := range asks {
				for _, ts := range servers {
					resp, err := c.Ask(shortCtx(t), ts.addr, ts.id.PublicKey(), Request{Cluster: cluster, From: "db-1", Epoch: uint64(g*asks + i)})
					if err != nil {
						errs <- err
					} else if resp.Granted == (ts == servers[2]) {
						errs <- fmt.Errorf("%s answered %+v", ts.addr, resp)
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	n := uint64(goroutines * asks)
	if s := c.Stats(); s != (ClientStats{Granted: 2 * n, Refused: n}) {
		t.Fatalf("client stats %+v", s)
	}
	for _, ts := range servers {
		if s := ts.Stats(); s.Granted+s.Refused != n {
			t.Fatalf("server stats %+v", s)
		}
		// About one connection per goroutine; a few more when a request
		// starts before the last one's connection is back in the pool.
		if a := ts.ln.accepted.Load(); uint64(a) >= n/2 {
			t.Fatalf("%d connections for %d asks from %d goroutines: not reused", a, n, goroutines)
		}
	}
}

func TestClosedClient(t *testing.T) {
	client := newID(t)
	ts := startServer(t, ServerConfig{Trusted: trust(map[string]string{client.PublicKey(): "db-2"})})
	c := NewClient(client)
	if _, err := ask(shortCtx(t), c, ts, "db-2"); err != nil {
		t.Fatal(err)
	}
	c.Forget(ts.id.PublicKey())
	if _, err := ask(shortCtx(t), c, ts, "db-2"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if _, err := ask(shortCtx(t), c, ts, "db-2"); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestAskChecksItsArguments(t *testing.T) {
	c := newClient(t, newID(t))
	key := newID(t).PublicKey()
	for name, call := range map[string]func() error{
		"peer key": func() error { _, err := c.Ask(shortCtx(t), "127.0.0.1:1", "Uxyz", Request{}); return err },
		"address":  func() error { _, err := c.Ask(shortCtx(t), "127.0.0.1", key, Request{}); return err },
		"identity": func() error {
			_, err := NewClient(Identity{}).Ask(shortCtx(t), "127.0.0.1:1", key, Request{})
			return err
		},
	} {
		if err := call(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestNewServerValidates(t *testing.T) {
	id := newID(t)
	ok := ServerConfig{Identity: id, Cluster: cluster, Trusted: trust(nil), Handle: grant}
	if _, err := NewServer(ok); err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(*ServerConfig){
		"identity": func(c *ServerConfig) { c.Identity = Identity{} },
		"cluster":  func(c *ServerConfig) { c.Cluster = "" },
		"trusted":  func(c *ServerConfig) { c.Trusted = nil },
		"handle":   func(c *ServerConfig) { c.Handle = nil },
		"timeout":  func(c *ServerConfig) { c.HandleTimeout = -1 },
	} {
		cfg := ok
		mutate(&cfg)
		if _, err := NewServer(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestResponseWire(t *testing.T) {
	b, err := json.Marshal(Response{Granted: true, Lease: 1999 * time.Microsecond * 1000, Reason: "ok"})
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"v":1,"granted":true,"lease_ms":1999,"reason":"ok"}` {
		t.Fatalf("wire form %s", b)
	}
	// Rounded down: a shorter promise is the safe side.
	b, _ = json.Marshal(Response{Granted: true, Lease: 1500*time.Millisecond + 999*time.Microsecond})
	var r Response
	if err := json.Unmarshal(b, &r); err != nil || r.Lease != 1500*time.Millisecond {
		t.Fatalf("round trip %s: %+v, %v", b, r, err)
	}
	for _, bad := range []string{
		`{"v":2,"granted":true,"lease_ms":10}`,
		`{"granted":true,"lease_ms":10}`,
		`{"v":1,"granted":true,"lease_ms":0}`,
		`{"v":1,"granted":false,"lease_ms":10}`,
		`{"v":1,"granted":true,"lease_ms":-5}`,
		`{"v":1,"granted":true,"lease_ms":3600001}`,
		`{"v":1,"granted":"yes"}`,
	} {
		if err := json.Unmarshal([]byte(bad), &r); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestNormalize(t *testing.T) {
	for _, tc := range []struct{ in, want Response }{
		{Response{Granted: true, Lease: time.Second}, Response{Granted: true, Lease: time.Second}},
		{Response{Lease: time.Second, Reason: "no"}, Response{Reason: "no"}},
		{Response{Granted: true, Lease: time.Microsecond, Reason: "x"}, Response{Reason: "lease under a millisecond: x"}},
		{Response{Granted: true, Lease: -time.Second}, Response{Reason: "lease under a millisecond: "}},
		{Response{Granted: true, Lease: 2 * maxLease}, Response{Granted: true, Lease: maxLease}},
	} {
		if got := normalize(tc.in); got != tc.want {
			t.Errorf("normalize(%+v) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}
