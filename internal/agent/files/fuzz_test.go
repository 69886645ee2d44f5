package files

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fuzzTree makes a root with symlinks that lead out of it, next to a
// directory outside it and a sibling whose name has the root's as prefix:
//
//	base/root/sub/uplink -> ../..        (base)
//	base/root/link       -> base/outside
//	base/root/loop       -> loop
//	base/outside/secret
//	base/rootx/
func fuzzTree(tb testing.TB) (root, outside string) {
	tb.Helper()
	base, err := filepath.EvalSymlinks(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	root, outside = filepath.Join(base, "root"), filepath.Join(base, "outside")
	for _, d := range []string{filepath.Join(root, "sub"), outside, filepath.Join(base, "rootx")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o600); err != nil {
		tb.Fatal(err)
	}
	for link, target := range map[string]string{"sub/uplink": "../..", "link": outside, "loop": "loop"} {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			tb.Fatal(err)
		}
	}
	return root, outside
}

// resolveAll resolves the symlinks of the longest existing prefix of p.
func resolveAll(p string) (string, bool) {
	rest := []string{}
	for {
		r, err := filepath.EvalSymlinks(p)
		if err == nil {
			return filepath.Join(append([]string{r}, rest...)...), true
		}
		if !errors.Is(err, fs.ErrNotExist) || filepath.Dir(p) == p {
			return "", false
		}
		rest = append([]string{filepath.Base(p)}, rest...)
		p = filepath.Dir(p)
	}
}

// FuzzCheck checks the allowed-roots rule for File paths (and container
// volumes), which come from deployments over the network. "/ROOT" in an
// input stands for the root, so the corpus does not depend on the temporary
// directory. An accepted path is absolute and clean, and its directory,
// symlinks resolved, is inside the root; the only symlink it may end in is
// the file itself, which writes replace and never follow.
func FuzzCheck(f *testing.F) {
	for _, p := range []string{"/ROOT/app/conf.ini", "/ROOT/sub/x", "/ROOT/link", "/ROOT", "/ROOT/", "/ROOT/../outside/secret",
		"/ROOT/link/secret", "/ROOT/link/new/file", "/ROOT/sub/uplink/outside/secret", "/ROOT/sub/uplink/root/x", "/ROOT/loop/x",
		"/ROOT/sub/../link/x", "/ROOT/./x", "//ROOT/x", "/ROOTx/y", "/ROOT/a\x00b", "/etc/passwd", "../../etc/passwd", "ROOT/x",
		"/proc/self/root/ROOT/x", "/", ""} {
		f.Add(p)
	}
	root, outside := fuzzTree(f)
	m := New([]string{root})
	f.Fuzz(func(t *testing.T, in string) {
		p := strings.ReplaceAll(in, "/ROOT", root)
		if m.Check(p) != nil {
			return
		}
		if !filepath.IsAbs(p) || filepath.Clean(p) != p {
			t.Fatalf("accepted %q: not a clean absolute path", p)
		}
		for _, part := range strings.Split(p, "/") {
			if part == ".." || part == "." {
				t.Fatalf("accepted %q", p)
			}
		}
		dir, ok := resolveAll(filepath.Dir(p))
		if !ok {
			t.Fatalf("accepted %q whose directory does not resolve", p)
		}
		full := filepath.Join(dir, filepath.Base(p))
		if full == root || !strings.HasPrefix(full, root+"/") {
			t.Fatalf("accepted %q, which is %q: not inside %s", p, full, root)
		}
		if strings.HasPrefix(dir+"/", outside+"/") {
			t.Fatalf("accepted %q through a symlink out of the root", p)
		}
	})
}
