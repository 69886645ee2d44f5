package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// getRaw returns an API answer's status and body as sent.
func getRaw(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := api.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// TestOneDeploymentAndOneDevice checks the API's answers about one
// deployment and one device (read from the operator's read model) against
// the JSON they have always had and against the device list (computed from
// the whole view), with an offline device, a device no deployment
// matches, a deleted deployment and a status left from before a relabel.
func TestOneDeploymentAndOneDevice(t *testing.T) {
	srv := start(t, testConfig(t, t.TempDir()))
	base := srv.info.HTTPURL
	waitReady(t, base)
	ctx := context.Background()
	st := openStore(t, srv.info.NATSURL)
	open := func(name string) store.KV {
		kv, err := st.Open(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return kv
	}
	put := func(kv store.KV, key string, v any) {
		t.Helper()
		b, err := v1.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Create(ctx, key, b); err != nil {
			t.Fatal(err)
		}
	}
	deps, info, beats, states := open("deployments"), open("device-info"), open("device-heartbeat"), open("device-state")
	deployment := func(name string, sel map[string]string) v1.StoredDeployment {
		var d v1.Deployment
		d.APIVersion, d.Kind = v1.APIVersion, "Deployment"
		d.Metadata.Name, d.Metadata.Generation = name, 1
		d.Spec.Selector.MatchLabels = sel
		d.Spec.Resources = []v1.Resource{{ID: "motd", Kind: "File", Spec: []byte(`{"path":"/etc/motd","content":"hi"}`)}}
		return v1.StoredDeployment{V: v1.FormatVersion, Deployment: d}
	}
	put(deps, "web", deployment("web", map[string]string{"site": "home"}))
	put(deps, "db", deployment("db", nil))
	for id, site := range map[string]string{"a": "home", "b": "home", "c": "office"} {
		put(info, id, v1.DeviceInfo{V: v1.FormatVersion, ID: id, Labels: map[string]string{"site": site},
			Inventory: v1.Inventory{Hostname: id, OS: "linux", Arch: "arm64", CPUs: 2}})
	}
	put(beats, "a", v1.Heartbeat{V: v1.FormatVersion, Boot: "x", Seq: 1}) // b never beats: offline
	put(beats, "c", v1.Heartbeat{V: v1.FormatVersion, Boot: "x", Seq: 1})
	state := func(dev, dep, phase, msg string) v1.DeviceState {
		return v1.DeviceState{V: v1.FormatVersion, Device: dev, Deployment: dep, ObservedGeneration: 1, Phase: phase, Message: msg}
	}
	put(states, "a.web", state("a", "web", v1.PhaseReady, ""))
	put(states, "b.web", state("b", "web", v1.PhaseFailed, "boom"))
	put(states, "c.web", state("c", "web", v1.PhaseReady, "")) // from when c was at home
	put(states, "a.db", state("a", "db", v1.PhaseReady, ""))
	dbKV, err := deps.Get(ctx, "db")
	if err != nil {
		t.Fatal(err)
	}
	if err := deps.Delete(ctx, "db", dbKV.Revision); err != nil {
		t.Fatal(err)
	}

	const wantWeb = `{"name":"web","generation":1,"matched":2,"succeeded":1,"failed":0,"pending":0,"offline":1,"devices":[` +
		`{"device":"a","online":true,"phase":"Ready","observedGeneration":1},` +
		`{"device":"b","online":false,"phase":"Offline","observedGeneration":1,"message":"boom"}]}`
	retry.Until(t, 30*time.Second, func() error {
		code, body := getRaw(t, base+"/api/v1/deployments/web")
		var view struct{ Status json.RawMessage }
		if err := json.Unmarshal([]byte(body), &view); err != nil || code != http.StatusOK {
			return fmt.Errorf("%d %s", code, body)
		}
		if string(view.Status) != wantWeb {
			return fmt.Errorf("status %s, want %s", view.Status, wantWeb)
		}
		if code, _ := getRaw(t, base+"/api/v1/deployments/db"); code != http.StatusNotFound {
			return fmt.Errorf("the deleted deployment answers %d", code)
		}
		return nil
	})

	// Each device as the list (the whole view aggregated) has it, with its
	// statuses for the deployments that exist.
	_, list := getRaw(t, base+"/api/v1/devices")
	var lines struct{ Items []map[string]any }
	if err := json.Unmarshal([]byte(list), &lines); err != nil || len(lines.Items) != 3 {
		t.Fatalf("device list: %v %s", err, list)
	}
	wantStates := map[string][]string{"a": {"web"}, "b": {"web"}, "c": {"web"}} // a.db: deployment deleted
	for _, line := range lines.Items {
		id := line["id"].(string)
		code, body := getRaw(t, base+"/api/v1/devices/"+id)
		var got map[string]any
		if err := json.Unmarshal([]byte(body), &got); err != nil || code != http.StatusOK {
			t.Fatalf("device %s: %d %s", id, code, body)
		}
		var deps []string
		for _, s := range got["states"].([]any) {
			deps = append(deps, s.(map[string]any)["deployment"].(string))
		}
		if fmt.Sprint(deps) != fmt.Sprint(wantStates[id]) {
			t.Errorf("device %s: statuses of %v, want %v", id, deps, wantStates[id])
		}
		delete(got, "states")
		// The heartbeat's age grows between the two reads.
		if (got["heartbeatAgeSeconds"].(float64) < 0) != (line["heartbeatAgeSeconds"].(float64) < 0) {
			t.Errorf("device %s: heartbeat age %v, the list says %v", id, got["heartbeatAgeSeconds"], line["heartbeatAgeSeconds"])
		}
		delete(got, "heartbeatAgeSeconds")
		delete(line, "heartbeatAgeSeconds")
		if jsonString(got) != jsonString(line) {
			t.Errorf("device %s:\n got %s\nlist %s", id, jsonString(got), jsonString(line))
		}
	}

	// A device with no status at all lists none (an empty list, not null).
	put(info, "d", v1.DeviceInfo{V: v1.FormatVersion, ID: "d", Labels: map[string]string{"site": "moon"}})
	retry.Until(t, 30*time.Second, func() error {
		code, body := getRaw(t, base+"/api/v1/devices/d")
		want := `{"id":"d","labels":{"site":"moon"},"inventory":{"hostname":"","os":"","arch":"","cpus":0,"memoryBytes":0,"agentVersion":""},` +
			`"online":false,"heartbeatAgeSeconds":-1,"deployments":{},"states":[]}`
		if code != http.StatusOK || body != want+"\n" {
			return fmt.Errorf("%d %q, want %q", code, body, want)
		}
		return nil
	})

	for _, c := range []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", "/api/v1/devices/nobody", http.StatusNotFound, "not_found"},
		{"GET", "/api/v1/devices/nobody/logs", http.StatusNotFound, "not_found"},
		{"GET", "/api/v1/devices/b/logs", http.StatusServiceUnavailable, "device_offline"},
		{"POST", "/api/v1/devices/b/exec", http.StatusServiceUnavailable, "device_offline"},
		{"GET", "/api/v1/deployments/nothing", http.StatusNotFound, "not_found"},
		// Labels only for a device that has reported.
		{"PATCH", "/api/v1/devices/nobody/labels", http.StatusNotFound, "not_found"},
		{"PATCH", "/api/v1/devices/c/labels", http.StatusOK, ""},
	} {
		body := ""
		switch c.method {
		case "POST":
			body = `{"command":["id"]}`
		case "PATCH":
			body = `{"set":{"tier":"edge"}}`
		}
		if st, out, code := apiCall(t, base, adminToken, c.method, c.path, body); st != c.status || code != c.code {
			t.Errorf("%s %s: %d %s (%v), want %d %s", c.method, c.path, st, code, out, c.status, c.code)
		}
	}
}
