package localstate

import (
	"os"
	"path/filepath"
	"testing"
)

func TestDesiredSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	d, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.SaveDesired("web", []byte(`{"v":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := d.SaveDesired("db", []byte(`{"v":1,"x":2}`)); err != nil {
		t.Fatal(err)
	}
	if err := d.DropDesired("db"); err != nil {
		t.Fatal(err)
	}
	if err := d.DropDesired("never"); err != nil {
		t.Fatalf("dropping a missing deployment: %v", err)
	}
	d2, _ := Open(dir)
	got, err := d2.LoadDesired()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || string(got["web"]) != `{"v":1}` {
		t.Fatalf("LoadDesired = %q", got)
	}
	// No temporary files are left behind.
	entries, _ := os.ReadDir(filepath.Join(dir, "desired"))
	if len(entries) != 1 {
		t.Fatalf("desired dir holds %d files, want 1", len(entries))
	}
}

func TestLedgerPersists(t *testing.T) {
	dir := t.TempDir()
	d, _ := Open(dir)
	l, err := d.Ledger()
	if err != nil {
		t.Fatal(err)
	}
	a := Owned{Kind: "File", Claim: "/srv/a", Deployment: "web", ResourceID: "a"}
	b := Owned{Kind: "Container", Claim: "web", Deployment: "web", ResourceID: "c"}
	if err := l.Put(a); err != nil {
		t.Fatal(err)
	}
	if err := l.Put(b); err != nil {
		t.Fatal(err)
	}
	if err := l.Remove("File", "/srv/a"); err != nil {
		t.Fatal(err)
	}
	l2, err := d.Ledger()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := l2.Get("File", "/srv/a"); ok {
		t.Fatal("removed entry came back")
	}
	if got, ok := l2.Get("Container", "web"); !ok || got.ResourceID != "c" {
		t.Fatalf("Get = %+v, %v", got, ok)
	}
	if n := len(l2.All()); n != 1 {
		t.Fatalf("All has %d entries", n)
	}
}

func TestJobRecords(t *testing.T) {
	d, _ := Open(t.TempDir())
	if _, ok, err := d.Job("web", "U1", 3, "migrate"); ok || err != nil {
		t.Fatalf("missing job: ok=%v err=%v", ok, err)
	}
	r := JobRecord{Deployment: "web", UID: "U1", Generation: 3, JobID: "migrate", ExitCode: 0, OutputTail: "done"}
	if err := d.RecordJob(r); err != nil {
		t.Fatal(err)
	}
	got, ok, err := d.Job("web", "U1", 3, "migrate")
	if !ok || err != nil || got.OutputTail != "done" {
		t.Fatalf("Job = %+v %v %v", got, ok, err)
	}
	if _, ok, _ := d.Job("web", "U1", 4, "migrate"); ok {
		t.Fatal("a new generation must run again")
	}
	// The deployment deleted and created again: generation 3 of another
	// UID is another run.
	if _, ok, _ := d.Job("web", "U2", 3, "migrate"); ok {
		t.Fatal("a re-created deployment's generation matched the old one's record")
	}
	// Records from before UIDs are still found by deployments without one.
	old := JobRecord{Deployment: "api", Generation: 2, JobID: "seed", OutputTail: "old"}
	if err := d.RecordJob(old); err != nil {
		t.Fatal(err)
	}
	if got, ok, _ := d.Job("api", "", 2, "seed"); !ok || got.OutputTail != "old" {
		t.Fatalf("legacy record: %+v %v", got, ok)
	}
	if _, err := os.Stat(filepath.Join(d.path, "jobs", "api.2.seed.json")); err != nil {
		t.Fatalf("a record without UID must keep the old file name: %v", err)
	}
}
