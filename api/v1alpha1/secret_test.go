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

func TestPostgresParametersAreCheckedAgainstTheCatalogue(t *testing.T) {
	spec := func(params string) Resource {
		return Resource{ID: "pg", Kind: KindPostgresCluster, Spec: json.RawMessage(`{"cluster":"orders","superuserPassword":{"secret":"pg","key":"su"},"parameters":` + params + `}`)}
	}
	for _, c := range []struct {
		params, field, reason string
	}{
		{`{"max_conections":"50"}`, "spec.parameters.max_conections", "is not a PostgreSQL 15 parameter (did you mean max_connections?)"},
		{`{"max_connections":"lots"}`, "spec.parameters.max_connections", `"lots": want a number`},
		{`{"max_connections":"0"}`, "spec.parameters.max_connections", `"0" is outside 1 to 262143`},
		{`{"shared_buffers":"128XB"}`, "spec.parameters.shared_buffers", `unit "XB" does not fit`},
		{`{"shared_buffers":"64kB"}`, "spec.parameters.shared_buffers", `"64kB" is outside 16 to 1073741823 (8kB)`},
		{`{"wal_compression":"maybe"}`, "spec.parameters.wal_compression", `want one of`},
		{`{"port":"5433"}`, "spec.parameters.port", "is set by the agent: use spec.port"},
		{`{"block_size":"16384"}`, "spec.parameters.block_size", "cannot be set"},
	} {
		_, err := DecodeSpec("", spec(c.params))
		fe, ok := First(err)
		if !ok || strings.TrimPrefix(fe.Field, ".") != c.field || !strings.Contains(fe.Reason, c.reason) {
			t.Errorf("%s: %v, want %s: ...%s...", c.params, err, c.field, c.reason)
		}
	}
	for _, good := range []string{`{"max_connections":"50","shared_buffers":"128MB","work_mem":"4MB","checkpoint_timeout":"5min","log_min_duration_statement":"250ms","synchronous_commit":"on","DateStyle":"ISO, DMY","my_ext.setting":"x"}`} {
		if _, err := DecodeSpec("", spec(good)); err != nil {
			t.Errorf("%s: %v", good, err)
		}
	}
}

func TestPostgresClusterSpecNamesTheField(t *testing.T) {
	for _, c := range []struct {
		spec, field string
	}{
		{`{"cluster":"orders"}`, "spec.superuserPassword"},
		{`{"cluster":"Orders","superuserPassword":{"secret":"pg","key":"su"}}`, "spec.cluster"},
		{`{"cluster":"orders","superuserPassword":{"secret":"pg","key":"su"},"dataDir":"/srv/pg","logDir":"/srv/pg/log"}`, "spec.logDir"},
		{`{"cluster":"orders","superuserPassword":{"secret":"pg","key":"su"},"databases":[{"name":"orders","owner":"nobody"}]}`, "spec.databases[0].owner"},
		{`{"cluster":"orders","superuserPassword":{"secret":"pg","key":"su"},"roles":[{"name":"app","options":["SUPERPOWERS"]}]}`, "spec.roles[0].options[0]"},
		{`{"cluster":"orders","superuserPassword":{"secret":"pg","key":"su"},"members":{"db-1":{"port":70000}}}`, "spec.members.db-1.port"},
		{`{"cluster":"orders","superuserPassword":{"secret":"pg","key":"su"},"peer":"nowhere"}`, "spec.peer"},
		{`{"cluster":"orders","superuserPassword":{"secret":"pg","key":"su"},"strategy":"Optimistic"}`, "spec.strategy"},
	} {
		_, err := DecodeSpec("", Resource{ID: "pg", Kind: KindPostgresCluster, Spec: json.RawMessage(c.spec)})
		fe, ok := First(err)
		if !ok || strings.TrimPrefix(fe.Field, ".") != c.field {
			t.Errorf("%s: %v, want an error on %s", c.spec, err, c.field)
		}
	}
	spec, err := DecodeSpec("", Resource{ID: "pg", Kind: KindPostgresCluster, Spec: json.RawMessage(
		`{"cluster":"orders","superuserPassword":{"secret":"pg","key":"su"},"members":{"db-2":{"port":5433,"dataDir":"/disk2/pg"}}}`)})
	if err != nil {
		t.Fatal(err)
	}
	s := spec.(*PostgresClusterSpec)
	if s.DataDir != "/var/lib/postgresql/15/orders" || s.LogDir != "/var/log/postgresql/orders" || s.BinDir != "/usr/lib/postgresql/15/bin" {
		t.Fatalf("defaults: %+v", s)
	}
	if m := s.Member("db-2"); m.Port != 5433 || m.DataDir != "/disk2/pg" || m.LogDir != s.LogDir {
		t.Fatalf("db-2's member: %+v", m)
	}
	if m := s.Member("db-1"); m.Port != 5432 {
		t.Fatalf("db-1's member: %+v", m)
	}
}
