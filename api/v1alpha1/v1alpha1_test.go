package v1alpha1

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
)

func TestNames(t *testing.T) {
	long := strings.Repeat("a", 63)
	id253 := strings.Join([]string{long, long, long, strings.Repeat("b", 61)}, ".")
	for _, ok := range []string{"pi-1", "kitchen.home.example", "a", id253} {
		if err := ValidateDeviceID(ok); err != nil {
			t.Errorf("device %q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "Pi", "-a", "a-", "a..b", "a_b", id253 + "b", strings.Repeat("a", 64)} {
		if ValidateDeviceID(bad) == nil {
			t.Errorf("device %q accepted", bad)
		}
	}
	if ValidateDeploymentName("web.v2") == nil {
		t.Error("deployment names are one label: dots refused")
	}
	dev, dep, err := SplitDeviceKey("kitchen.home.web")
	if err != nil || dev != "kitchen.home" || dep != "web" {
		t.Fatalf("split = %q %q %v", dev, dep, err)
	}
	if _, _, err := SplitDeviceKey("nodot"); err == nil {
		t.Fatal("key without a dot accepted")
	}
	if k := DeviceKey("kitchen.home", "web"); k != "kitchen.home.web" {
		t.Fatal(k)
	}
}

func TestSelector(t *testing.T) {
	labels := map[string]string{"site": "home", "arch": "arm64"}
	cases := []struct {
		s    Selector
		want bool
	}{
		{Selector{}, true},
		{Selector{MatchLabels: map[string]string{"site": "home"}}, true},
		{Selector{MatchLabels: map[string]string{"site": "office"}}, false},
		{Selector{MatchExpressions: []Requirement{{Key: "arch", Operator: "In", Values: []string{"arm64", "arm"}}}}, true},
		{Selector{MatchExpressions: []Requirement{{Key: "arch", Operator: "NotIn", Values: []string{"arm64"}}}}, false},
		{Selector{MatchExpressions: []Requirement{{Key: "gpu", Operator: "NotIn", Values: []string{"x"}}}}, true},
		{Selector{MatchExpressions: []Requirement{{Key: "gpu", Operator: "Exists"}}}, false},
		{Selector{MatchExpressions: []Requirement{{Key: "gpu", Operator: "DoesNotExist"}}}, true},
	}
	for i, c := range cases {
		if got := c.s.Matches(labels); got != c.want {
			t.Errorf("case %d: %v, want %v", i, got, c.want)
		}
	}
}

const goodYAML = `apiVersion: harmony/v1alpha1
kind: Deployment
metadata:
  name: web
  labels: {team: edge}
spec:
  selector:
    matchLabels: {site: home}
  resources:
  - id: motd
    kind: File
    spec: {path: /etc/harmony/motd, content: "hello\n", mode: "0640"}
  - id: app
    kind: Container
    spec:
      image: localhost/app:1
      env: {B: "2", A: "1"}
      ports: [{containerPort: 80, hostPort: 8080}]
  - id: timer
    kind: SystemdUnit
    spec: {name: app.service, content: "[Service]\nExecStart=/bin/true\n"}
  - id: migrate
    kind: ShellJob
    spec: {command: [echo, hi]}
`

func TestParseAndValidate(t *testing.T) {
	ds, err := ParseDeployments([]byte(goodYAML + "---\n# a comment only\n---\n" + strings.Replace(goodYAML, "name: web", "name: db", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2 || ds[1].Metadata.Name != "db" {
		t.Fatalf("parsed %d documents", len(ds))
	}
	for _, d := range ds {
		if err := d.Validate(); err != nil {
			t.Fatalf("%s: %v", d.Metadata.Name, err)
		}
	}
	spec, err := DecodeSpec("r", ds[0].Spec.Resources[1])
	if err != nil {
		t.Fatal(err)
	}
	c := spec.(*ContainerSpec)
	if c.RestartPolicy != "always" || *c.StopTimeoutSeconds != 30 || c.StopSignal != "SIGTERM" || c.Ports[0].Protocol != "tcp" {
		t.Fatalf("defaults not applied: %+v", c)
	}
}

func TestParseErrorsSayWhere(t *testing.T) {
	_, err := ParseDeployments([]byte(goodYAML + "---\napiVersion: harmony/v1alpha1\nkind: Deployment\nmetadata:\n  name: [unclosed\n"))
	if err == nil || !strings.Contains(err.Error(), "document 2") || !strings.Contains(err.Error(), "line") {
		t.Fatalf("syntax error = %v, want the document and line", err)
	}
	_, err = ParseDeployments([]byte(strings.Replace(goodYAML, "  selector:", "  selektor: {}\n  selector:", 1)))
	if err == nil || !strings.Contains(err.Error(), "selektor") {
		t.Fatalf("unknown field error = %v, want it named", err)
	}
}

func TestValidationNamesFields(t *testing.T) {
	cases := map[string]string{
		`mode: "0640"`:                 "spec.resources[0].spec.mode",
		`path: /etc/harmony/motd`:      "spec.resources[0].spec.path",
		`image: localhost/app:1`:       "spec.resources[1].spec.image",
		`containerPort: 80`:            "spec.resources[1].spec.ports[0].containerPort",
		`name: app.service`:            "spec.resources[2].spec.name",
		`command: [echo, hi]`:          "spec.resources[3].spec.command",
		`kind: ShellJob`:               "spec.resources[3].kind",
		`  name: web`:                  "metadata.name",
		`matchLabels: {site: home}`:    "spec.selector.matchExpressions[0].operator",
		`- id: app`:                    "spec.resources[1].id",
		`apiVersion: harmony/v1alpha1`: "apiVersion",
	}
	repl := map[string]string{
		`mode: "0640"`:                 `mode: "0999"`,
		`path: /etc/harmony/motd`:      `path: etc/../motd`,
		`image: localhost/app:1`:       `image: ""`,
		`containerPort: 80`:            `containerPort: 70000`,
		`name: app.service`:            `name: app`,
		`command: [echo, hi]`:          `command: []`,
		`kind: ShellJob`:               `kind: Teleporter`,
		`  name: web`:                  `  name: Web_1`,
		`matchLabels: {site: home}`:    `matchExpressions: [{key: a, operator: Near}]`,
		`- id: app`:                    `- id: motd`,
		`apiVersion: harmony/v1alpha1`: `apiVersion: v2`,
	}
	for from, field := range cases {
		ds, err := ParseDeployments([]byte(strings.Replace(goodYAML, from, repl[from], 1)))
		if err != nil {
			t.Fatalf("%s: parse: %v", from, err)
		}
		err = ds[0].Validate()
		fe, ok := First(err)
		if !ok || fe.Field != field {
			t.Errorf("replacing %q: error %v, want field %s", from, err, field)
		}
	}
}

func TestCanonicalBytes(t *testing.T) {
	a := Resource{ID: "x", Kind: KindContainer, Spec: json.RawMessage(`{"image":"i","env":{"B":"2","A":"1"}}`)}
	b := Resource{ID: "x", Kind: KindContainer, Spec: json.RawMessage("{ \"env\": {\"A\":\"1\", \"B\":\"2\"},\n \"image\": \"i\", \"restartPolicy\": \"always\" }")}
	ca, err := CanonicalResource("r", a)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := CanonicalResource("r", b)
	if err != nil {
		t.Fatal(err)
	}
	ba, _ := Marshal(ca)
	bb, _ := Marshal(cb)
	if !bytes.Equal(ba, bb) {
		t.Fatalf("same meaning, different bytes:\n%s\n%s", ba, bb)
	}
	m1 := map[string]string{}
	m2 := map[string]string{}
	for i := 0; i < 50; i++ {
		m1[string(rune('a'+i%26))+strings.Repeat("x", i)] = "v"
	}
	for k, v := range m1 {
		m2[k] = v
	}
	x, _ := Marshal(DeviceInfo{V: 1, ID: "d", Labels: m1})
	y, _ := Marshal(DeviceInfo{V: 1, ID: "d", Labels: m2})
	if !bytes.Equal(x, y) {
		t.Fatal("maps built differently give different bytes")
	}
	d1, _ := ParseDeployments([]byte(goodYAML))
	d2, _ := ParseDeployments([]byte(strings.Replace(goodYAML, `env: {B: "2", A: "1"}`, `env: {A: "1", B: "2"}`, 1)))
	h1, _ := d1[0].SpecHash()
	h2, _ := d2[0].SpecHash()
	if h1 != h2 || h1 == "" {
		t.Fatalf("spec hashes differ for the same spec: %s %s", h1, h2)
	}
}

func TestHeartbeatIsSmall(t *testing.T) {
	b, err := Marshal(Heartbeat{V: FormatVersion, Boot: "0123456789abcdef", Seq: math.MaxUint64})
	if err != nil {
		t.Fatal(err)
	}
	if len(b) >= 100 {
		t.Fatalf("heartbeat of %d bytes: %s", len(b), b)
	}
	h, err := DecodeHeartbeat(b)
	if err != nil || h.Seq != math.MaxUint64 {
		t.Fatalf("round trip: %+v %v", h, err)
	}
}

func TestHostileInput(t *testing.T) {
	deep := strings.Repeat("[", 100) + strings.Repeat("]", 100)
	cases := map[string][]byte{
		"format version": []byte(`{"v":2,"device":"d","deployment":"w","generation":1,"resources":[]}`),
		"invalid utf-8":  []byte("{\"v\":1,\"device\":\"\xff\"}"),
		"deep nesting":   []byte(`{"v":1,"device":"d","deployment":"w","generation":1,"resources":[{"id":"a","kind":"File","spec":` + deep + `}]}`),
		"oversize":       bytes.Repeat([]byte(" "), MaxDesiredStateBytes+1),
		"unknown field":  []byte(`{"v":1,"device":"d","deployment":"w","generation":1,"resources":[],"extra":1}`),
		"bad device":     []byte(`{"v":1,"device":"D!","deployment":"w","generation":1,"resources":[]}`),
	}
	for name, data := range cases {
		if _, err := DecodeDesiredState(data); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	var fv *FormatVersionError
	if _, err := DecodeDesiredState(cases["format version"]); !errors.As(err, &fv) || fv.Got != 2 {
		t.Errorf("format version error = %v", err)
	}
	// An unknown kind is not an envelope error: the agent reports it per resource.
	ds, err := DecodeDesiredState([]byte(`{"v":1,"device":"d","deployment":"w","generation":1,"resources":[{"id":"a","kind":"Teleporter","spec":{}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	var unk *UnknownKindError
	if _, err := DecodeSpec("resources[0]", ds.Resources[0]); !errors.As(err, &unk) || unk.Kind != "Teleporter" {
		t.Fatalf("unknown kind error = %v", err)
	}
}

func FuzzParseDeployments(f *testing.F) {
	f.Add([]byte(goodYAML))
	f.Add([]byte("---\n---\n"))
	f.Add([]byte("apiVersion: [\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ds, err := ParseDeployments(data)
		if err != nil {
			return
		}
		for _, d := range ds {
			if d.Validate() != nil {
				continue
			}
			c, err := d.Canonical()
			if err != nil {
				t.Fatalf("valid deployment does not canonicalize: %v", err)
			}
			b1, _ := Marshal(c)
			var back Deployment
			if err := json.Unmarshal(b1, &back); err != nil {
				t.Fatal(err)
			}
			if err := back.Validate(); err != nil {
				t.Fatalf("canonical form no longer valid: %v", err)
			}
			c2, _ := back.Canonical()
			b2, _ := Marshal(c2)
			if !bytes.Equal(b1, b2) {
				t.Fatalf("canonical form not stable:\n%s\n%s", b1, b2)
			}
		}
	})
}

func FuzzDecodeDesiredState(f *testing.F) {
	f.Add([]byte(`{"v":1,"device":"d","deployment":"w","generation":1,"resources":[{"id":"a","kind":"File","spec":{"path":"/a","content":"x"}}]}`))
	f.Add([]byte(`{"v":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ds, err := DecodeDesiredState(data)
		if err != nil {
			return
		}
		for i, r := range ds.Resources {
			_, _ = DecodeSpec("resources["+string(rune('0'+i%10))+"]", r)
		}
		b, err := Marshal(ds)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeDesiredState(b); err != nil {
			t.Fatalf("re-encoded value no longer decodes: %v\n%s", err, b)
		}
	})
}
