package v1alpha1

import (
	"strings"
	"testing"
)

// Errors say what the user wrote and what is expected, in the YAML's
// terms: the document, the line where known, the field path as written;
// never the decoder's "json:" or Go type names.
func TestErrorsSpeakYAML(t *testing.T) {
	for _, tc := range []struct {
		name, from, to string
		want           string // the whole message of parsing or validating
	}{
		{"unknown field", "  selector:", "  selektor: {}\n  selector:",
			"document 1 line 7: spec.selektor: unknown field (known: resources, rollout, selector)"},
		{"unknown resource field", "kind: File", "kind: File\n    foo: 1",
			"document 1 line 12: spec.resources[0].foo: unknown field (known: id, kind, spec)"},
		{"list for a mapping", "labels: {team: edge}", "labels: [team]",
			"document 1 line 5: metadata.labels: want a mapping of strings, got a list"},
		{"syntax", "  name: web", "  name: [web", "document 1 line 4: not valid YAML: did not find expected ',' or ']'"},
		{"missing name", "  name: web\n", "", "metadata.name: required"},
		{"unknown spec field", `mode: "0640"`, `mode: "0640", foo: 1`,
			"spec.resources[0].spec.foo: unknown field (known: content, contentFrom, group, mode, owner, path)"},
		{"string for a list", "command: [echo, hi]", "command: echo hi",
			`spec.resources[3].spec.command: want a list of strings, got a string ("echo hi"); write a list: ["echo hi"]`},
		{"text for a number", "containerPort: 80", "containerPort: eighty",
			`spec.resources[1].spec.ports[0].containerPort: want a whole number, got a string ("eighty")`},
		{"a number for a string in a spec", `mode: "0640"`, `mode: 644`,
			`spec.resources[0].spec.mode: want a string, got a number (644); in YAML, quote it: a bare number, yes, no, on or off is not text`},
		{"a YAML boolean for a string in a spec", "{path: /etc/harmony/motd, content:", "{path: /etc/harmony/motd, content: yes, owner:",
			`spec.resources[0].spec.content: want a string, got a boolean (true); in YAML, quote it: a bare number, yes, no, on or off is not text`},
		{"a number in a map of strings in a spec", `env: {B: "2", A: "1"}`, `env: {PORT: 8080}`,
			`spec.resources[1].spec.env.PORT: want a string, got a number (8080); in YAML, quote it: a bare number, yes, no, on or off is not text`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := strings.Replace(goodYAML, tc.from, tc.to, 1)
			if in == goodYAML {
				t.Fatalf("%q is not in the example", tc.from)
			}
			ds, err := ParseDeployments([]byte(in))
			if err == nil {
				err = ds[0].Validate()
			}
			if err == nil || err.Error() != tc.want {
				t.Fatalf("got  %v\nwant %s", err, tc.want)
			}
			if s := err.Error(); strings.Contains(s, "json") || strings.Contains(s, "Go ") || strings.Contains(s, "struct") {
				t.Errorf("%q speaks of the decoder", s)
			}
		})
	}
	// In a later document, lines count from the top of the file.
	_, err := ParseDeployments([]byte(goodYAML + "---\nkind: Deployment\nfoo: 1\n"))
	if want := "document 2 line 27: foo: unknown field (known: apiVersion, kind, metadata, spec)"; err == nil || err.Error() != want {
		t.Fatalf("got  %v\nwant %s", err, want)
	}
	// The field of a spec error is the one at fault, for the API's field.
	d := mustParse(t, strings.Replace(goodYAML, `mode: "0640"`, `mode: "0640", foo: 1`, 1))
	if fe, ok := First(d.Validate()); !ok || fe.Field != "spec.resources[0].spec.foo" {
		t.Fatalf("First = %+v", fe)
	}
}

// Outside resource specs a string field keeps the text as written, where
// YAML 1.1 would read it as a boolean or a number: `name: y` is the
// deployment "y" (it was "true", and `name: yes` then overwrote it).
func TestStringFieldsKeepTheirText(t *testing.T) {
	d := mustParse(t, strings.NewReplacer("name: web", "name: y", "{team: edge}", "{enabled: on, tier: 1.0}",
		"{site: home}", "{site: no}").Replace(goodYAML))
	if d.Metadata.Name != "y" || d.Metadata.Labels["enabled"] != "on" || d.Metadata.Labels["tier"] != "1.0" ||
		d.Spec.Selector.MatchLabels["site"] != "no" {
		t.Fatalf("metadata %+v, selector %+v", d.Metadata, d.Spec.Selector)
	}
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
}

func mustParse(t *testing.T, in string) Deployment {
	t.Helper()
	ds, err := ParseDeployments([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	return ds[0]
}
