package v1alpha1

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestHealthCheckDefaults(t *testing.T) {
	spec, err := DecodeSpec("spec.resources[0]", Resource{ID: "web", Kind: KindContainer,
		Spec: json.RawMessage(`{"image":"i","healthCheck":{"command":["test","-f","/ok"]}}`)})
	if err != nil {
		t.Fatal(err)
	}
	h := spec.(*ContainerSpec).HealthCheck
	if h.IntervalSeconds != 10 || h.TimeoutSeconds != 5 || h.Retries != 3 || h.StartPeriodSeconds != 0 || h.Shell {
		t.Fatalf("defaults not applied: %+v", h)
	}

	// Written out or left to the defaults, the same check gives the same
	// canonical bytes (and so the same container); another check does not.
	canon := func(spec string) []byte {
		t.Helper()
		r, err := CanonicalResource("r", Resource{ID: "web", Kind: KindContainer, Spec: json.RawMessage(spec)})
		if err != nil {
			t.Fatal(err)
		}
		return r.Spec
	}
	a := canon(`{"image":"i","healthCheck":{"command":["test","-f","/ok"]}}`)
	b := canon(`{"image":"i","healthCheck":{"command":["test","-f","/ok"],"intervalSeconds":10,"timeoutSeconds":5,"retries":3,"startPeriodSeconds":0}}`)
	c := canon(`{"image":"i","healthCheck":{"command":["test","-f","/ok"],"retries":4}}`)
	none := canon(`{"image":"i"}`)
	if !bytes.Equal(a, b) || bytes.Equal(a, c) || bytes.Equal(a, none) {
		t.Fatalf("canonical forms:\n%s\n%s\n%s\n%s", a, b, c, none)
	}
	if bytes.Contains(none, []byte("healthCheck")) {
		t.Fatalf("a container without a check has a healthCheck in its canonical form (existing containers would be recreated): %s", none)
	}
}

func TestHealthCheckValidationNamesFields(t *testing.T) {
	cases := []struct{ check, field, reason string }{
		{`{}`, "healthCheck.command", "required"},
		{`{"command":[]}`, "healthCheck.command", "required"},
		{`{"command":[""]}`, "healthCheck.command", "required"},
		{`{"command":["a","b"],"shell":true}`, "healthCheck.command", "one string"},
		{`{"command":["CMD","true"]}`, "healthCheck.command", "keyword"},
		{`{"command":["cmd-shell","true"]}`, "healthCheck.command", "keyword"},
		{`{"command":["true","a\u0000b"]}`, "healthCheck.command[1]", "NUL"},
		{`{"command":["true"],"intervalSeconds":-1}`, "healthCheck.intervalSeconds", "1 to 86400"},
		{`{"command":["true"],"timeoutSeconds":3601}`, "healthCheck.timeoutSeconds", "1 to 3600"},
		{`{"command":["true"],"retries":-3}`, "healthCheck.retries", "1 to 100"},
		{`{"command":["true"],"startPeriodSeconds":-1}`, "healthCheck.startPeriodSeconds", "0 to 86400"},
		{`{"command":["true"],"period":3}`, "healthCheck", "period"},
	}
	for _, c := range cases {
		_, err := DecodeSpec("spec.resources[0]", Resource{ID: "web", Kind: KindContainer,
			Spec: json.RawMessage(`{"image":"i","healthCheck":` + c.check + `}`)})
		fe, ok := First(err)
		if !ok || !strings.HasPrefix(fe.Field, "spec.resources[0].spec."+c.field) || !strings.Contains(err.Error(), c.reason) {
			t.Errorf("%s: error %v, want field spec.resources[0].spec.%s and %q", c.check, err, c.field, c.reason)
		}
	}
	for _, ok := range []string{`{"command":["false"]}`, `{"command":["test -f /ok || exit 1"],"shell":true}`,
		`{"command":["wget","-q","http://127.0.0.1/"],"intervalSeconds":1,"timeoutSeconds":1,"retries":1,"startPeriodSeconds":30}`} {
		if _, err := DecodeSpec("r", Resource{ID: "web", Kind: KindContainer, Spec: json.RawMessage(`{"image":"i","healthCheck":` + ok + `}`)}); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
}
