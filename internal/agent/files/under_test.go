package files

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// Under a base directory a File is written where the path as written lies
// below it, the roots are checked against the path as written, and no
// symlink below the base leads out of it, not even one standing in for a
// root.
func TestUnderBaseDirectory(t *testing.T) {
	base := t.TempDir()
	outside := t.TempDir()
	m := NewUnder(base, []string{"/etc/harmony", "/srv/harmony"})

	s := Spec{Path: "/etc/harmony/motd", Content: []byte("hello\n"), Mode: 0o644}
	if changed, err := m.Apply(s); err != nil || !changed {
		t.Fatalf("apply: changed=%v err=%v", changed, err)
	}
	if b, err := os.ReadFile(filepath.Join(base, "etc/harmony/motd")); err != nil || string(b) != "hello\n" {
		t.Fatalf("file under the base: %q %v", b, err)
	}
	if o, err := m.Observe(s); err != nil || !o.InSync {
		t.Fatalf("observe: %+v %v", o, err)
	}

	if err := os.MkdirAll(filepath.Join(base, "etc/harmony"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(base, "etc/harmony/link")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(base, "srv"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A root itself made a symlink out of the base.
	if err := os.Symlink(outside, filepath.Join(base, "srv/harmony")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{
		"/etc/passwd",            // outside the roots as written
		"/etc/harmony",           // a root itself
		"/etc/harmony/../passwd", // not clean
		"etc/harmony/x",          // not absolute
		"/etc/harmony/link/pwn",  // a symlink out of the base
		"/srv/harmony/pwn",       // a root that leads out of the base
		base + "/etc/harmony/x",  // the real path is not a path as written
	} {
		if err := m.Check(p); err == nil {
			t.Errorf("Check(%q) allowed", p)
		}
		if _, err := m.Apply(Spec{Path: p, Content: []byte("x"), Mode: 0o644}); err == nil {
			t.Errorf("Apply(%q) allowed", p)
		}
		if err := m.CheckMount(p); err == nil {
			t.Errorf("CheckMount(%q) allowed", p)
		}
	}
	if err := m.Check("/srv/harmony/pwn"); !errors.Is(err, ErrOutsideRoots) {
		t.Errorf("Check through the symlinked root: %v, want ErrOutsideRoots", err)
	}
	if _, err := os.Lstat(filepath.Join(outside, "pwn")); err == nil {
		t.Fatal("a file was written outside the base")
	}

	if err := m.Delete(s.Path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(base, "etc/harmony/motd")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("not deleted: %v", err)
	}
}
