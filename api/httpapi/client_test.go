package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/harmony-fleet/harmony/api/httpapi"
)

func TestParseBaseURL(t *testing.T) {
	for _, tt := range []struct {
		in, want, err string
	}{
		{in: "https://127.0.0.1:8080", want: "https://127.0.0.1:8080"},
		{in: "http://localhost:8080/", want: "http://localhost:8080"},
		{in: "https://fleet.example/harmony/", want: "https://fleet.example/harmony"},
		{in: "127.0.0.1:18080", err: `"127.0.0.1:18080": want a URL such as https://127.0.0.1:18080`},
		{in: "fleet.example", err: `"fleet.example": want a URL such as https://fleet.example`},
		{in: "ftp://fleet.example", err: `"ftp://fleet.example": want a URL such as https://127.0.0.1:8080`},
		{in: "https://", err: "want a URL"},
		{in: "", err: `"": want a URL such as https://127.0.0.1:8080`},
		{in: "https://h:1/?x=1", err: "want a URL"},
	} {
		u, err := httpapi.ParseBaseURL(tt.in)
		switch {
		case tt.err != "":
			var ue *httpapi.URLError
			if err == nil || !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseBaseURL(%q) = %v, %v; want an error with %q", tt.in, u, err, tt.err)
			}
		case err != nil || u.String() != tt.want:
			t.Errorf("ParseBaseURL(%q) = %v, %v; want %s", tt.in, u, err, tt.want)
		}
	}
}

func TestPath(t *testing.T) {
	if got := httpapi.Path(httpapi.RouteLabels, "a/b c"); got != "/api/v1/devices/a%2Fb%20c/labels" {
		t.Fatalf("Path = %q", got)
	}
	if got := httpapi.Path(httpapi.RouteStatus); got != "/api/v1/status" {
		t.Fatalf("Path = %q", got)
	}
}

// TestClientErrors: an error answer is an *Error with its code, status and
// field; a failed command's reply comes with it.
func TestClientErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/api/v1/devices/nosuch/labels":
			w.WriteHeader(http.StatusNotFound)
			_ = json.NewEncoder(w).Encode(httpapi.ErrorBody{Error: httpapi.Errorf(httpapi.CodeNotFound, `device "nosuch" not found`).WithField("id")})
		case "/api/v1/devices/d1/exec":
			w.WriteHeader(http.StatusBadGateway)
			_, _ = w.Write([]byte(`{"error":{"code":"device_error","message":"exit status 3","reply":{"ok":false,"code":"failed","output":"partial\n","exitCode":3}}}`))
		case "/api/v1/status":
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":{"code":"unauthorized","message":"no token"}}`))
		default:
			w.WriteHeader(http.StatusTeapot)
			_, _ = w.Write([]byte("not json"))
		}
	}))
	defer srv.Close()
	c, err := httpapi.New(srv.URL, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, err = c.PatchLabels(ctx, "nosuch", httpapi.LabelPatch{Set: map[string]string{"a": "b"}})
	var e *httpapi.Error
	if !errors.As(err, &e) || e.Code != httpapi.CodeNotFound || e.Status != http.StatusNotFound || e.Field != "id" || !httpapi.IsCode(err, httpapi.CodeNotFound) {
		t.Fatalf("labels of an unknown device: %#v", err)
	}
	_, err = c.Exec(ctx, "d1", httpapi.ExecRequest{Command: []string{"false"}})
	if !errors.As(err, &e) || e.Code != httpapi.CodeDeviceError || e.Reply == nil || e.Reply.ExitCode != 3 || e.Reply.Output != "partial\n" {
		t.Fatalf("a failed exec: %#v", err)
	}
	if _, err := c.Status(ctx); !httpapi.IsCode(err, httpapi.CodeUnauthorized) || !strings.Contains(err.Error(), "no token was sent") {
		t.Fatalf("unauthorized without a token: %v", err)
	}
	if _, err := c.Orphans(ctx); err == nil || errors.As(err, &e) || !strings.Contains(err.Error(), "418") {
		t.Fatalf("a non-API answer: %#v", err)
	}
}

// TestTokenNeverGoesOverPlainHTTPToAnotherMachine: the bearer token and
// an enrollment token travel in clear only to this machine.
func TestTokenNeverGoesOverPlainHTTPToAnotherMachine(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		_, _ = w.Write([]byte(`{}`))
	}))
	defer srv.Close()
	ctx := context.Background()
	remote, _ := httpapi.New("http://192.0.2.1:8080", "secret", nil)
	if _, err := remote.Status(ctx); !errors.Is(err, httpapi.ErrPlainHTTP) {
		t.Fatalf("token over plain HTTP to another machine: %v", err)
	}
	anonymous, _ := httpapi.New("http://192.0.2.1:8080", "", nil)
	if _, err := anonymous.Enroll(ctx, httpapi.EnrollRequest{Device: "d", PublicKey: "U", Token: "enroll-secret"}); !errors.Is(err, httpapi.ErrPlainHTTP) {
		t.Fatalf("enrollment token over plain HTTP to another machine: %v", err)
	}
	local, _ := httpapi.New(srv.URL, "secret", nil) // 127.0.0.1
	if _, err := local.Status(ctx); err != nil || calls.Load() != 1 {
		t.Fatalf("token over plain HTTP to this machine: %v (%d calls)", err, calls.Load())
	}
}
