// Package files manages File resources: a whole file with exact content,
// mode and ownership, written atomically and only under the agent's allowed
// roots (checked after cleaning the path and resolving symlinks), all of
// them optionally under one base directory (the agent's root_dir).
package files

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/harmony-fleet/harmony/internal/agent/localstate"
)

// Spec is one desired file.
type Spec struct {
	Path    string
	Content []byte
	Mode    fs.FileMode // permission bits (plus setuid/setgid/sticky)
	Owner   string      // user name or numeric id; "" keeps the agent's
	Group   string      // group name or numeric id; "" keeps the agent's
}

// SpecialBits are the mode bits beyond the permissions. A setuid or setgid
// file runs with its owner's or group's rights whoever starts it (root's,
// for a file the agent writes), so the agent writes them only when its
// config allows capability special_file_modes; sticky goes with them.
const SpecialBits = fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky

// Special names the special bits set in m ("setuid", "setgid", "sticky");
// nil when there are none.
func Special(m fs.FileMode) []string {
	var out []string
	for _, b := range []struct {
		bit  fs.FileMode
		name string
	}{{fs.ModeSetuid, "setuid"}, {fs.ModeSetgid, "setgid"}, {fs.ModeSticky, "sticky"}} {
		if m&b.bit != 0 {
			out = append(out, b.name)
		}
	}
	return out
}

// ErrOutsideRoots: the path is not under an allowed root.
var ErrOutsideRoots = errors.New("path is outside the allowed roots")

// Observed is what is on disk.
type Observed struct {
	Exists bool
	InSync bool
	// Diff says what differs, for status messages ("content", "mode 0600", ...).
	Diff   []string
	SHA256 string
}

// Manager writes files under a set of roots, optionally all of them under
// one directory (NewUnder).
type Manager struct {
	base  string   // every path is resolved under it ("": none), symlinks resolved
	roots []string // the allowed roots as configured, cleaned
	real  []string // where they are on disk: symlinks resolved where they exist
}

// New returns a manager for the given allowed roots (absolute paths).
func New(roots []string) *Manager { return NewUnder("", roots) }

// NewUnder returns a manager that resolves every path under base (a test
// and development aid, the agent's root_dir): /etc/harmony/motd is the file
// <base>/etc/harmony/motd. Roots are checked against the path as written,
// and nothing may resolve outside <base>/<root>: a symlink below base that
// leads elsewhere, even from a root itself, is refused.
func NewUnder(base string, roots []string) *Manager {
	m := &Manager{}
	if base != "" {
		m.base = resolved(filepath.Clean(base))
	}
	for _, r := range roots {
		r = filepath.Clean(r)
		m.roots = append(m.roots, r)
		if m.base != "" {
			m.real = append(m.real, filepath.Join(m.base, r))
		} else {
			m.real = append(m.real, resolved(r))
		}
	}
	return m
}

// resolved is path with the symlinks of its longest existing prefix
// resolved (path itself when that fails).
func resolved(path string) string {
	if r, err := resolveExisting(path); err == nil {
		return r
	}
	return path
}

// Real is where path (as a resource gives it) is on disk: under the base
// directory when there is one. Check it first.
func (m *Manager) Real(path string) string {
	if m.base == "" {
		return path
	}
	return filepath.Join(m.base, path)
}

// Check verifies that path may be managed: absolute, clean, not a root
// itself, and, after resolving every symlink of its existing ancestors,
// inside an allowed root. The file itself may be a symlink only if it is
// replaced (writes rename over it, never follow it). Under a base
// directory, the path as written must also lie in an allowed root.
func (m *Manager) Check(path string) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("path %q: must be absolute", path)
	}
	if filepath.Clean(path) != path {
		return fmt.Errorf("path %q: must be clean (no '..', '.', '//' or trailing '/')", path)
	}
	if m.base != "" && !inside(path, m.roots) {
		return fmt.Errorf("path %q: %w %v", path, ErrOutsideRoots, m.roots)
	}
	real := m.Real(path)
	resolvedDir, err := resolveExisting(filepath.Dir(real))
	if err != nil {
		return fmt.Errorf("path %q: %w", path, err)
	}
	full := filepath.Join(resolvedDir, filepath.Base(real))
	if inside(full, m.real) {
		return nil
	}
	if full != path {
		return fmt.Errorf("path %q (resolves to %q): %w %v", path, full, ErrOutsideRoots, m.roots)
	}
	return fmt.Errorf("path %q: %w %v", path, ErrOutsideRoots, m.roots)
}

// inside reports whether path lies under one of roots (not a root itself).
func inside(path string, roots []string) bool {
	for _, r := range roots {
		if path != r && strings.HasPrefix(path, r+string(filepath.Separator)) {
			return true
		}
	}
	return false
}

// CheckMount verifies a path that will be bind-mounted (a container volume):
// as Check, and the path itself, when it exists, must resolve inside an
// allowed root too, since a mount follows a final symlink where a file
// write replaces it.
func (m *Manager) CheckMount(path string) error {
	if err := m.Check(path); err != nil {
		return err
	}
	resolved, err := filepath.EvalSymlinks(m.Real(path))
	if errors.Is(err, fs.ErrNotExist) {
		return nil // podman creates it, inside the root Check allowed
	}
	if err != nil {
		return fmt.Errorf("path %q: %w", path, err)
	}
	if inside(resolved, m.real) {
		return nil
	}
	return fmt.Errorf("path %q (a symlink to %q): %w %v", path, resolved, ErrOutsideRoots, m.roots)
}

// resolveExisting resolves symlinks in the longest existing prefix of dir and
// appends the rest.
func resolveExisting(dir string) (string, error) {
	rest := ""
	for {
		resolved, err := filepath.EvalSymlinks(dir)
		if err == nil {
			return filepath.Join(resolved, rest), nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", err
		}
		rest = filepath.Join(filepath.Base(dir), rest)
		dir = parent
	}
}

// Observe compares the file on disk with spec.
func (m *Manager) Observe(s Spec) (Observed, error) {
	if err := m.Check(s.Path); err != nil {
		return Observed{}, err
	}
	path := m.Real(s.Path)
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Observed{Diff: []string{"missing"}}, nil
	}
	if err != nil {
		return Observed{}, err
	}
	o := Observed{Exists: true}
	if !fi.Mode().IsRegular() {
		o.Diff = append(o.Diff, "not a regular file ("+fi.Mode().Type().String()+")")
		return o, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return Observed{}, err
	}
	sum := sha256.Sum256(data)
	o.SHA256 = hex.EncodeToString(sum[:])
	if !bytes.Equal(data, s.Content) {
		o.Diff = append(o.Diff, "content")
	}
	if got := fi.Mode() & (fs.ModePerm | SpecialBits); got != s.Mode {
		o.Diff = append(o.Diff, fmt.Sprintf("mode %#o, want %#o", unixMode(got), unixMode(s.Mode)))
	}
	uid, gid, err := ids(s)
	if err != nil {
		return Observed{}, err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if uid >= 0 && int(st.Uid) != uid {
			o.Diff = append(o.Diff, fmt.Sprintf("owner %d, want %d", st.Uid, uid))
		}
		if gid >= 0 && int(st.Gid) != gid {
			o.Diff = append(o.Diff, fmt.Sprintf("group %d, want %d", st.Gid, gid))
		}
	}
	o.InSync = len(o.Diff) == 0
	return o, nil
}

func unixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		u |= 0o1000
	}
	return u
}

// Apply writes the file when it differs: parents created (0755), content
// written to a temporary file, fsynced, renamed into place, then mode and
// ownership set.
func (m *Manager) Apply(s Spec) (changed bool, err error) {
	o, err := m.Observe(s)
	if err != nil {
		return false, err
	}
	if o.InSync {
		return false, nil
	}
	uid, gid, err := ids(s)
	if err != nil {
		return false, err
	}
	path := m.Real(s.Path)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return false, err
	}
	// Check again: creating parents must not have opened a way out.
	if err := m.Check(s.Path); err != nil {
		return false, err
	}
	if err := localstate.WriteFileAtomic(path, s.Content, s.Mode.Perm()); err != nil {
		return false, err
	}
	if uid >= 0 || gid >= 0 {
		if err := os.Lchown(path, uid, gid); err != nil {
			return true, err
		}
	}
	// Chmod after chown: chown clears setuid/setgid bits.
	if err := os.Chmod(path, s.Mode); err != nil {
		return true, err
	}
	return true, nil
}

// Delete removes the file if it exists and is inside the roots.
func (m *Manager) Delete(path string) error {
	if err := m.Check(path); err != nil {
		return err
	}
	err := os.Remove(m.Real(path))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// ids resolves owner and group to numeric ids; -1 means "leave as is".
func ids(s Spec) (uid, gid int, err error) {
	uid, gid = -1, -1
	if s.Owner != "" {
		if uid, err = lookupID(s.Owner, func(n string) (string, error) {
			u, err := user.Lookup(n)
			if err != nil {
				return "", err
			}
			return u.Uid, nil
		}); err != nil {
			return 0, 0, fmt.Errorf("owner %q: %w", s.Owner, err)
		}
	}
	if s.Group != "" {
		if gid, err = lookupID(s.Group, func(n string) (string, error) {
			g, err := user.LookupGroup(n)
			if err != nil {
				return "", err
			}
			return g.Gid, nil
		}); err != nil {
			return 0, 0, fmt.Errorf("group %q: %w", s.Group, err)
		}
	}
	return uid, gid, nil
}

func lookupID(name string, lookup func(string) (string, error)) (int, error) {
	if n, err := strconv.Atoi(name); err == nil && n >= 0 {
		return n, nil
	}
	id, err := lookup(name)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(id)
}
