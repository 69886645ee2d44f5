package server_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/harmony-fleet/harmony/api/httpapi"
)

// A request under /api/ that no route takes gets the API's error envelope:
// 404 not_found for an unknown path, 405 method_not_allowed (with Allow)
// for a known path with another method; never the dashboard's HTML.
func TestUnknownAPIRequestsAnswerInTheEnvelope(t *testing.T) {
	r := start(t, testConfig(t, t.TempDir()))
	base := r.info.HTTPURL
	for _, c := range []struct {
		method, path string
		status       int
		code         httpapi.Code
		allow        string
	}{
		{"GET", "/api/v1/nosuch", 404, httpapi.CodeNotFound, ""},
		{"GET", "/api/v2/deployments", 404, httpapi.CodeNotFound, ""},
		{"PUT", "/api/v1/deployments", 405, httpapi.CodeMethodNotAllowed, "GET, POST"},
		{"DELETE", "/api/v1/deployments", 405, httpapi.CodeMethodNotAllowed, "GET, POST"},
		{"GET", "/api/v1/devices/dev-1/exec", 405, httpapi.CodeMethodNotAllowed, "POST"},
		{"POST", "/api/v1/devices/dev-1", 405, httpapi.CodeMethodNotAllowed, "GET"},
	} {
		req, _ := http.NewRequest(c.method, base+c.path, strings.NewReader("{}"))
		resp, err := api.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body httpapi.ErrorBody
		derr := json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if derr != nil || body.Error == nil || resp.StatusCode != c.status || body.Error.Code != c.code || resp.Header.Get("Allow") != c.allow {
			t.Errorf("%s %s: %d %+v (decode: %v), Allow %q; want %d %s, Allow %q",
				c.method, c.path, resp.StatusCode, body.Error, derr, resp.Header.Get("Allow"), c.status, c.code, c.allow)
		}
	}
}

// A request body with a value of the wrong kind is refused naming the
// field and what it takes, never Go's type names.
func TestBodyErrorsNameTheField(t *testing.T) {
	r := start(t, testConfig(t, t.TempDir()))
	base := r.info.HTTPURL
	for _, c := range []struct {
		method, path, body string
		field, want        string
	}{
		{"PATCH", "/api/v1/devices/dev-1/labels", `{"set":[1]}`, "set", "set: want an object of strings, got array"},
		{"POST", "/api/v1/devices/dev-1/exec", `{"command":"ls"}`, "command", "command: want a list of strings, got string"},
		{"POST", "/api/v1/devices/dev-1/exec", `{"command":`, "", "body: "},
	} {
		req, _ := http.NewRequest(c.method, base+c.path, strings.NewReader(c.body))
		resp, err := api.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body httpapi.ErrorBody
		derr := json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if derr != nil || body.Error == nil || resp.StatusCode != 400 || body.Error.Field != c.field || !strings.HasPrefix(body.Error.Message, c.want) ||
			strings.Contains(body.Error.Message, "Go ") || strings.Contains(body.Error.Message, "json:") {
			t.Errorf("%s %s %s: %d %+v (decode: %v); want 400 field %q, %q...", c.method, c.path, c.body, resp.StatusCode, body.Error, derr, c.field, c.want)
		}
	}
}
