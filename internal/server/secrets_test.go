package server_test

import (
	"net/http"
	"strings"
	"testing"
)

// A secret value of several lines may be a File's content, but never an
// environment variable or a password: refused at apply and at replace,
// naming the field, with nothing stored.
func TestSecretValueOfSeveralLinesWhereOneIsNeeded(t *testing.T) {
	srv := start(t, testConfig(t, t.TempDir()))
	base := srv.info.HTTPURL
	waitReady(t, base)
	if code, out, _ := apiCall(t, base, adminToken, "POST", "/api/v1/secrets", `{"name":"db","data":{"pem":"line 1\nline 2\n","token":"abc","bad":"a\nEVIL=1"}}`); code != http.StatusCreated {
		t.Fatalf("create: %d %v", code, out)
	}
	doc := func(env, file string) string {
		return "apiVersion: harmony/v1alpha1\nkind: Deployment\nmetadata:\n  name: app\nspec:\n  resources:\n" +
			"  - id: key\n    kind: File\n    spec: {path: /tmp/key.pem, contentFrom: {secret: db, key: " + file + "}}\n" +
			"  - id: app\n    kind: Container\n    spec: {name: app, image: busybox, secretEnv: {TOKEN: {secret: db, key: " + env + "}}}\n"
	}
	code, out, _ := apiCall(t, base, adminToken, "POST", "/api/v1/deployments", doc("bad", "pem"))
	e, _ := out["error"].(map[string]any)
	if code != http.StatusBadRequest || e["field"] != "spec.resources[1].spec.secretEnv.TOKEN.key" || !strings.Contains(e["message"].(string), "must be one line") {
		t.Fatalf("a value of several lines as an environment variable: %d %v", code, out)
	}
	if code, out, _ := apiCall(t, base, adminToken, "POST", "/api/v1/deployments", doc("token", "pem")); code != http.StatusOK {
		t.Fatalf("one line in the environment, several in a file: %d %v", code, out)
	}
	version := func() string {
		_, list, _ := apiCall(t, base, viewerToken, "GET", "/api/v1/secrets", "")
		items, _ := list["items"].([]any)
		if len(items) != 1 {
			t.Fatalf("secrets: %v", list)
		}
		v, _ := items[0].(map[string]any)["version"].(string)
		return v
	}
	before := version()
	code, out, _ = apiCall(t, base, adminToken, "PUT", "/api/v1/secrets/db", `{"data":{"pem":"x","token":"a\nb","bad":"c"}}`)
	e, _ = out["error"].(map[string]any)
	if code != http.StatusBadRequest || e["field"] != "data.token" || !strings.Contains(e["message"].(string), `deployment "app", spec.resources[1].spec.secretEnv.TOKEN`) {
		t.Fatalf("replacing the token with a value of several lines: %d %v", code, out)
	}
	if after := version(); before == "" || after != before {
		t.Fatalf("the refused replace changed the secret's version: %q -> %q", before, after)
	}
}
