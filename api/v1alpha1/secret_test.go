package v1alpha1

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestSecretVersionFollowsTheValuesAndHidesThem(t *testing.T) {
	now := time.Now()
	a, err := NewSecret("db", map[string]string{"password": "pw"}, now)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewSecret("db", map[string]string{"password": "pw"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if a.Version == b.Version {
		t.Fatal("two secrets with the same values have the same version: the version is not salted")
	}
	raw, _ := Marshal(a)
	back, err := DecodeSecret(raw)
	if err != nil || back.Data["password"] != "pw" || back.Version != a.Version {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	// A record whose data was changed without its version is refused.
	tampered := strings.Replace(string(raw), `"pw"`, `"px"`, 1)
	if _, err := DecodeSecret([]byte(tampered)); err == nil || !strings.Contains(err.Error(), "version does not match") {
		t.Fatalf("tampered record: %v", err)
	}
}

func TestSecretValidationNamesTheField(t *testing.T) {
	for _, c := range []struct {
		name  string
		data  map[string]string
		field string
	}{
		{"DB", map[string]string{"k": "v"}, "name"},
		{"db", nil, "data"},
		{"db", map[string]string{"a b": "v"}, "data.a b"},
		{"db", map[string]string{"k": "\xff"}, "data.k"},
		{"db", map[string]string{"k": strings.Repeat("x", MaxSecretBytes)}, "data"},
	} {
		_, err := NewSecret(c.name, c.data, time.Now())
		fe, ok := First(err)
		if !ok || fe.Field != c.field {
			t.Errorf("NewSecret(%q, %d keys) = %v, want an error on %s", c.name, len(c.data), err, c.field)
		}
	}
}

func TestSecretReferencesAreValidatedAndListed(t *testing.T) {
	res := func(kind, spec string) Resource { return Resource{ID: "r", Kind: kind, Spec: json.RawMessage(spec)} }
	for _, c := range []struct {
		r     Resource
		field string
	}{
		{res(KindFile, `{"path":"/etc/a","content":"x","contentFrom":{"secret":"db","key":"k"}}`), "spec.contentFrom"},
		{res(KindFile, `{"path":"/etc/a","contentFrom":{"secret":"DB","key":"k"}}`), "spec.contentFrom.secret"},
		{res(KindFile, `{"path":"/etc/a","contentFrom":{"secret":"db"}}`), "spec.contentFrom.key"},
		{res(KindContainer, `{"image":"i","env":{"A":"1"},"secretEnv":{"A":{"secret":"db","key":"k"}}}`), "spec.secretEnv.A"},
		{res(KindContainer, `{"image":"i","secretEnv":{"1A":{"secret":"db","key":"k"}}}`), "spec.secretEnv.1A"},
		{res(KindShellJob, `{"command":["true"],"secretEnv":{"A":{"secret":"","key":"k"}}}`), "spec.secretEnv.A.secret"},
	} {
		_, err := DecodeSpec("", c.r)
		fe, ok := First(err)
		if !ok || strings.TrimPrefix(fe.Field, ".") != c.field {
			t.Errorf("%s %s: %v, want an error on %s", c.r.Kind, c.r.Spec, err, c.field)
		}
	}
	d := Deployment{Spec: DeploymentSpec{Resources: []Resource{
		res(KindFile, `{"path":"/etc/a","contentFrom":{"secret":"tls","key":"key"}}`),
		res(KindContainer, `{"image":"i","secretEnv":{"B":{"secret":"db","key":"pw"},"A":{"secret":"db","key":"user"}}}`),
		res(KindFile, `{"path":"/etc/b","content":"plain"}`),
	}}}
	var got []string
	for _, u := range d.SecretUses() {
		got = append(got, u.Field+"="+u.Ref.Secret+"/"+u.Ref.Key)
	}
	want := "spec.resources[0].spec.contentFrom=tls/key spec.resources[1].spec.secretEnv.A=db/user spec.resources[1].spec.secretEnv.B=db/pw"
	if strings.Join(got, " ") != want {
		t.Fatalf("uses:\n%s\nwant\n%s", strings.Join(got, " "), want)
	}
	if names := strings.Join(d.SecretNames(), ","); names != "db,tls" {
		t.Fatalf("names %s", names)
	}
	// A file from a secret is private unless its mode says otherwise.
	spec, err := DecodeSpec("", res(KindFile, `{"path":"/etc/a","contentFrom":{"secret":"tls","key":"key"}}`))
	if err != nil || spec.(*FileSpec).Mode != "0600" {
		t.Fatalf("default mode of a secret file: %+v %v", spec, err)
	}
}
