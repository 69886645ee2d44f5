package files

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestApplyObserveDelete(t *testing.T) {
	root := t.TempDir()
	m := New([]string{root})
	s := Spec{Path: filepath.Join(root, "app", "conf.ini"), Content: []byte("a=1\n"), Mode: 0o640, Owner: "0", Group: "root"}
	changed, err := m.Apply(s)
	if err != nil || !changed {
		t.Fatalf("first apply: changed=%v err=%v", changed, err)
	}
	o, err := m.Observe(s)
	if err != nil || !o.InSync {
		t.Fatalf("observe after apply: %+v %v", o, err)
	}
	if changed, err := m.Apply(s); err != nil || changed {
		t.Fatalf("second apply must change nothing: changed=%v err=%v", changed, err)
	}
	// Drift: edited by hand and chmodded; both are noticed and undone.
	if err := os.WriteFile(s.Path, []byte("a=2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(s.Path, 0o666); err != nil {
		t.Fatal(err)
	}
	o, _ = m.Observe(s)
	if o.InSync || len(o.Diff) != 2 {
		t.Fatalf("drift not seen: %+v", o)
	}
	if changed, err := m.Apply(s); err != nil || !changed {
		t.Fatalf("repair: changed=%v err=%v", changed, err)
	}
	b, _ := os.ReadFile(s.Path)
	fi, _ := os.Stat(s.Path)
	if string(b) != "a=1\n" || fi.Mode().Perm() != 0o640 {
		t.Fatalf("after repair: %q %v", b, fi.Mode())
	}
	if err := m.Delete(s.Path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.Path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("file still there: %v", err)
	}
	if err := m.Delete(s.Path); err != nil {
		t.Fatalf("deleting a missing file: %v", err)
	}
}

func TestSetgidModeKept(t *testing.T) {
	root := t.TempDir()
	m := New([]string{root})
	s := Spec{Path: filepath.Join(root, "x"), Content: []byte("x"), Mode: 0o2755 & 0o777, Group: "0"}
	s.Mode |= fs.ModeSetgid
	if _, err := m.Apply(s); err != nil {
		t.Fatal(err)
	}
	if o, _ := m.Observe(s); !o.InSync {
		t.Fatalf("setgid file not in sync after apply: %+v", o)
	}
}

func TestRefusesOutsideRoots(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	// A symlink inside the root that points outside it.
	if err := os.Symlink(outside, filepath.Join(root, "escape")); err != nil {
		t.Fatal(err)
	}
	m := New([]string{root})
	for _, p := range []string{
		filepath.Join(outside, "f"),
		filepath.Join(root, "escape", "f"),
		filepath.Join(root, "escape", "new", "dir", "f"),
		root + "/../etc/passwd",
		"relative/path",
		root,
	} {
		_, err := m.Apply(Spec{Path: p, Content: []byte("x"), Mode: 0o644})
		if err == nil {
			t.Errorf("%s: written, want refused", p)
			continue
		}
		if !strings.Contains(err.Error(), "path") {
			t.Errorf("%s: error %v does not name the path", p, err)
		}
	}
	entries, _ := os.ReadDir(outside)
	if len(entries) != 0 {
		t.Fatalf("something was written outside the roots: %v", entries)
	}
	if err := m.Delete(filepath.Join(outside, "f")); !errors.Is(err, ErrOutsideRoots) {
		t.Fatalf("delete outside roots: %v", err)
	}
}

func TestUnknownOwner(t *testing.T) {
	root := t.TempDir()
	m := New([]string{root})
	_, err := m.Apply(Spec{Path: filepath.Join(root, "f"), Content: []byte("x"), Mode: 0o644, Owner: "no-such-user-harmony"})
	if err == nil || !strings.Contains(err.Error(), "owner") {
		t.Fatalf("err = %v, want one naming the owner", err)
	}
}
