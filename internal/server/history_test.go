package server_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// A deployment's kept generations, and undo: to the one before (by
// default) or to a named one, each stored as a new generation with that
// generation's spec; what cannot be undone is refused naming the field,
// and a deployment deleted and created again starts a new history.
func TestHistoryAndUndo(t *testing.T) {
	srv := start(t, testConfig(t, t.TempDir()))
	base := srv.info.HTTPURL
	waitReady(t, base)
	apply := func(content string) {
		t.Helper()
		doc := fmt.Sprintf("apiVersion: harmony/v1alpha1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  resources:\n  - id: motd\n    kind: File\n    spec: {path: /tmp/motd, content: %q}\n", content)
		if code, out, _ := apiCall(t, base, adminToken, "POST", "/api/v1/deployments", doc); code != http.StatusOK {
			t.Fatalf("apply %s: %d %v", content, code, out)
		}
	}
	type record struct {
		gen     float64
		hash    string
		current bool
	}
	history := func() (float64, []record) {
		t.Helper()
		code, out, _ := apiCall(t, base, viewerToken, "GET", "/api/v1/deployments/web/history", "")
		if code != http.StatusOK {
			t.Fatalf("history: %d %v", code, out)
		}
		var rs []record
		for _, g := range out["generations"].([]any) {
			m := g.(map[string]any)
			cur, _ := m["current"].(bool)
			rs = append(rs, record{m["generation"].(float64), m["specHash"].(string), cur})
		}
		return out["generation"].(float64), rs
	}
	hashOf := func(rs []record, gen float64) string {
		for _, r := range rs {
			if r.gen == gen {
				return r.hash
			}
		}
		t.Fatalf("generation %v not in %v", gen, rs)
		return ""
	}
	undo := func(body string) (int, map[string]any, string) {
		return apiCall(t, base, adminToken, "POST", "/api/v1/deployments/web/undo", body)
	}

	apply("one")
	apply("two")
	apply("three")
	now, rs := history()
	if now != 3 || len(rs) != 3 || rs[0].gen != 3 || !rs[0].current || rs[2].gen != 1 {
		t.Fatalf("history after three applies: %v %v", now, rs)
	}
	if code, _, c := apiCall(t, base, viewerToken, "POST", "/api/v1/deployments/web/undo", ""); code != http.StatusForbidden || c != "forbidden" {
		t.Fatalf("undo as a viewer: %d %s", code, c)
	}

	// Undo: the spec of generation 2, as generation 4.
	if code, out, _ := undo(""); code != http.StatusOK || out["generation"] != float64(4) || out["result"] != "configured" {
		t.Fatalf("undo: %d %v", code, out)
	}
	_, rs = history()
	if hashOf(rs, 4) != hashOf(rs, 2) || hashOf(rs, 4) == hashOf(rs, 3) {
		t.Fatalf("generation 4 is not generation 2's spec: %v", rs)
	}
	// To a named generation.
	if code, out, _ := undo(`{"toGeneration": 1}`); code != http.StatusOK || out["generation"] != float64(5) {
		t.Fatalf("undo to 1: %d %v", code, out)
	}
	_, rs = history()
	if hashOf(rs, 5) != hashOf(rs, 1) {
		t.Fatalf("generation 5 is not generation 1's spec: %v", rs)
	}

	// What cannot be undone names the field and changes nothing.
	for _, c := range []struct{ body, want string }{
		{`{"toGeneration": 5}`, "toGeneration: 5 is the current generation"},
		{`{"toGeneration": 9}`, "toGeneration: 9: the deployment is at generation 5"},
		{`{"toGeneration": -1}`, "toGeneration: -1: want a generation"},
		{`{"toGeneration": "two"}`, "toGeneration: want a whole number"},
	} {
		code, out, _ := undo(c.body)
		e, _ := out["error"].(map[string]any)
		if code != http.StatusBadRequest || e["field"] != "toGeneration" || !strings.Contains(fmt.Sprint(e["message"]), c.want) {
			t.Errorf("undo %s: %d %v, want %q", c.body, code, out, c.want)
		}
	}
	for i := range 9 {
		apply(fmt.Sprintf("change %d", i))
	}
	now, rs = history()
	if now != 14 || len(rs) == 0 || len(rs) > 8 {
		t.Fatalf("history after 14 generations: %v %v", now, rs)
	}
	code, out, _ := undo(`{"toGeneration": 1}`)
	if e, _ := out["error"].(map[string]any); code != http.StatusBadRequest || e["field"] != "toGeneration" ||
		!strings.Contains(fmt.Sprint(e["message"]), "generation 1 is no longer kept (kept: 14, 13,") {
		t.Fatalf("undo to a generation no longer kept: %d %v", code, out)
	}
	if after, _ := history(); after != 14 {
		t.Fatalf("a refused undo moved the generation to %v", after)
	}

	// Deleted and created again: a new history.
	if code, out, _ := apiCall(t, base, adminToken, "DELETE", "/api/v1/deployments/web", ""); code != http.StatusOK {
		t.Fatalf("delete: %d %v", code, out)
	}
	apply("new")
	if now, rs = history(); now != 1 || len(rs) != 1 {
		t.Fatalf("history of the deployment created again: %v %v", now, rs)
	}
	code, out, _ = undo("")
	if e, _ := out["error"].(map[string]any); code != http.StatusBadRequest || !strings.Contains(fmt.Sprint(e["message"]), "no earlier generation with another spec is kept (kept: 1)") {
		t.Fatalf("undo of a deployment created again: %d %v", code, out)
	}
	if code, out, c := apiCall(t, base, adminToken, "POST", "/api/v1/deployments/nosuch/undo", ""); code != http.StatusNotFound || c != "not_found" {
		t.Fatalf("undo of no deployment: %d %v", code, out)
	}
}
