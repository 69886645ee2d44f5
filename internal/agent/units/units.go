// Package units manages SystemdUnit resources through systemd's D-Bus API:
// the unit file (written atomically, daemon-reload when it changed), whether
// it is enabled, and whether it runs. Nothing here reads systemctl's text.
package units

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	sd "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"

	"github.com/harmony-fleet/harmony/internal/agent/localstate"
)

// Unit is one desired unit.
type Unit struct {
	Name string
	// Content is the unit file Harmony installs in the unit directory. Empty
	// means the unit is already installed on the device: its file is never
	// written or removed, only whether it is enabled and active is managed.
	Content string
	Enabled bool
	Active  bool
}

// InstallsFile reports whether the unit brings its own unit file (and so
// whatever commands that file makes systemd run as root).
func (u Unit) InstallsFile() bool { return u.Content != "" }

// ErrNotInstalled: a unit without content that systemd does not know.
var ErrNotInstalled = errors.New("unit is not installed on this device")

// UnavailableError: systemd cannot be reached at all on this machine: no
// bus socket at the address, or no systemd on the bus. Installing or
// starting systemd is what changes it, not a retry.
type UnavailableError struct {
	Address string // the D-Bus address looked at
	Reason  string // "no system bus at unix:path=...", ...
}

func (e *UnavailableError) Error() string { return "systemd unavailable: " + e.Reason }

// SystemBusAddress is the address of the system bus when none is given:
// $DBUS_SYSTEM_BUS_ADDRESS, else the well-known socket.
func SystemBusAddress() string {
	if a := os.Getenv("DBUS_SYSTEM_BUS_ADDRESS"); a != "" {
		return a
	}
	return "unix:path=/var/run/dbus/system_bus_socket"
}

// busSockets are the socket files of the unix:path= entries of a D-Bus
// address (entries of other transports have none).
func busSockets(address string) []string {
	var out []string
	for _, entry := range strings.Split(address, ";") {
		transport, params, ok := strings.Cut(entry, ":")
		if !ok || transport != "unix" {
			continue
		}
		for _, kv := range strings.Split(params, ",") {
			if k, v, ok := strings.Cut(kv, "="); ok && k == "path" {
				out = append(out, v)
			}
		}
	}
	return out
}

// CheckBus returns an *UnavailableError when the D-Bus address ("": the
// system bus) names only unix sockets and none of them exists.
func CheckBus(address string) error {
	if address == "" {
		address = SystemBusAddress()
	}
	socks := busSockets(address)
	if len(socks) == 0 || len(socks) != len(strings.Split(address, ";")) {
		return nil // another transport: let the dial tell
	}
	for _, s := range socks {
		if _, err := os.Stat(s); err == nil {
			return nil
		}
	}
	return &UnavailableError{Address: address, Reason: "no system bus at " + address}
}

// Status is what systemd reports about a unit.
type Status struct {
	Name          string
	LoadState     string
	ActiveState   string
	SubState      string
	UnitFileState string
	MainPID       uint32
	FileExists    bool
	FileMatches   bool
}

var nameRe = regexp.MustCompile(`^[A-Za-z0-9:_.@\\-]+\.(service|timer|socket|path|target|mount)$`)

// ValidateName checks a unit name.
func ValidateName(name string) error {
	if !nameRe.MatchString(name) || len(name) > 255 {
		return fmt.Errorf("unit name %q: want letters, digits, ':_.@-' and a .service, .timer, .socket, .path, .target or .mount suffix", name)
	}
	return nil
}

// Manager talks to one systemd. It connects lazily and reconnects after
// systemd or the bus went away.
type Manager struct {
	unitDir string
	bus     string

	mu   sync.Mutex
	conn *sd.Conn
}

// New returns a manager for unit files in unitDir and systemd at the D-Bus
// address bus ("" means the system bus).
func New(unitDir, bus string) *Manager { return &Manager{unitDir: unitDir, bus: bus} }

// Close drops the D-Bus connection.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.conn != nil {
		m.conn.Close()
		m.conn = nil
	}
}

func (m *Manager) connection(ctx context.Context) (*sd.Conn, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.conn != nil && m.conn.Connected() {
		return m.conn, nil
	}
	address := m.bus
	if address == "" {
		address = SystemBusAddress()
	}
	if err := CheckBus(address); err != nil {
		return nil, err
	}
	var c *sd.Conn
	var err error
	if m.bus == "" {
		c, err = sd.NewSystemConnectionContext(ctx)
	} else {
		c, err = sd.NewConnection(func() (*godbus.Conn, error) {
			conn, err := godbus.Dial(m.bus, godbus.WithContext(ctx))
			if err != nil {
				return nil, err
			}
			if err := conn.Auth(nil); err != nil {
				conn.Close()
				return nil, err
			}
			if err := conn.Hello(); err != nil {
				conn.Close()
				return nil, err
			}
			return conn, nil
		})
	}
	if err != nil {
		return nil, fmt.Errorf("connect to systemd: %w", err)
	}
	m.conn = c
	return c, nil
}

func (m *Manager) path(name string) string { return filepath.Join(m.unitDir, name) }

// unavailable turns the bus's answer that no systemd is on it (a D-Bus
// daemon without systemd, as in many containers) into an *UnavailableError.
func (m *Manager) unavailable(err error) error {
	var de godbus.Error
	var dep *godbus.Error
	name := ""
	switch {
	case errors.As(err, &de):
		name = de.Name
	case errors.As(err, &dep):
		name = dep.Name
	}
	if name != "org.freedesktop.DBus.Error.ServiceUnknown" {
		return err
	}
	address := m.bus
	if address == "" {
		address = SystemBusAddress()
	}
	return &UnavailableError{Address: address, Reason: "no systemd on the bus at " + address}
}

// Observe reports the unit's state and whether its file matches content.
func (m *Manager) Observe(ctx context.Context, u Unit) (Status, error) {
	if err := ValidateName(u.Name); err != nil {
		return Status{}, err
	}
	c, err := m.connection(ctx)
	if err != nil {
		return Status{}, err
	}
	st := Status{Name: u.Name}
	data, err := os.ReadFile(m.path(u.Name))
	switch {
	case err == nil:
		st.FileExists = true
		st.FileMatches = bytes.Equal(data, []byte(u.Content))
	case !errors.Is(err, fs.ErrNotExist):
		return Status{}, err
	}
	if !u.InstallsFile() {
		st.FileMatches = true // whatever is installed is the unit's file
	}
	props, err := c.GetUnitPropertiesContext(ctx, u.Name)
	if err != nil {
		return Status{}, m.unavailable(fmt.Errorf("unit %s: %w", u.Name, err))
	}
	st.LoadState, _ = props["LoadState"].(string)
	st.ActiveState, _ = props["ActiveState"].(string)
	st.SubState, _ = props["SubState"].(string)
	st.UnitFileState, _ = props["UnitFileState"].(string)
	if !u.InstallsFile() && st.LoadState == "not-found" {
		return st, fmt.Errorf("unit %s: %w", u.Name, ErrNotInstalled)
	}
	if strings.HasSuffix(u.Name, ".service") && st.LoadState == "loaded" {
		sp, err := c.GetUnitTypePropertiesContext(ctx, u.Name, "Service")
		if err != nil {
			return Status{}, fmt.Errorf("unit %s: %w", u.Name, err)
		}
		st.MainPID, _ = sp["MainPID"].(uint32)
	}
	return st, nil
}

// Apply makes the unit match u and says what it changed.
func (m *Manager) Apply(ctx context.Context, u Unit) (changes []string, err error) {
	before, err := m.Observe(ctx, u)
	if err != nil {
		return nil, err
	}
	c, err := m.connection(ctx)
	if err != nil {
		return nil, err
	}
	fileChanged := !before.FileMatches
	if fileChanged {
		if err := os.MkdirAll(m.unitDir, 0o755); err != nil {
			return nil, err
		}
		if err := localstate.WriteFileAtomic(m.path(u.Name), []byte(u.Content), 0o644); err != nil {
			return nil, err
		}
		if err := c.ReloadContext(ctx); err != nil {
			return nil, fmt.Errorf("daemon-reload: %w", err)
		}
		changes = append(changes, "file written, daemon reloaded")
	}
	enabled := before.UnitFileState == "enabled"
	switch {
	case u.Enabled && !enabled:
		if _, _, err := c.EnableUnitFilesContext(ctx, []string{u.Name}, false, true); err != nil {
			return changes, fmt.Errorf("enable %s: %w", u.Name, err)
		}
		changes = append(changes, "enabled")
	case !u.Enabled && enabled:
		if _, err := c.DisableUnitFilesContext(ctx, []string{u.Name}, false); err != nil {
			return changes, fmt.Errorf("disable %s: %w", u.Name, err)
		}
		changes = append(changes, "disabled")
	}
	if (u.Enabled && !enabled) || (!u.Enabled && enabled) {
		if err := c.ReloadContext(ctx); err != nil {
			return changes, fmt.Errorf("daemon-reload: %w", err)
		}
	}
	active := before.ActiveState == "active" || before.ActiveState == "activating" || before.ActiveState == "reloading"
	switch {
	case u.Active && active && fileChanged:
		if err := m.job(ctx, u.Name, c.RestartUnitContext); err != nil {
			return changes, err
		}
		changes = append(changes, "restarted")
	case u.Active && !active:
		if before.ActiveState == "failed" {
			_ = c.ResetFailedUnitContext(ctx, u.Name)
		}
		if err := m.job(ctx, u.Name, c.StartUnitContext); err != nil {
			return changes, err
		}
		changes = append(changes, "started")
	case !u.Active && active:
		if err := m.job(ctx, u.Name, c.StopUnitContext); err != nil {
			return changes, err
		}
		changes = append(changes, "stopped")
	}
	return changes, nil
}

type jobFunc func(ctx context.Context, name, mode string, ch chan<- string) (int, error)

// job runs a start/stop/restart job and waits for its result.
func (m *Manager) job(ctx context.Context, name string, f jobFunc) error {
	ch := make(chan string, 1)
	if _, err := f(ctx, name, "replace", ch); err != nil {
		return fmt.Errorf("unit %s: %w", name, err)
	}
	select {
	case res := <-ch:
		if res != "done" {
			return fmt.Errorf("unit %s: job %s", name, res)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("unit %s: %w", name, ctx.Err())
	case <-time.After(2 * time.Minute):
		return fmt.Errorf("unit %s: job did not finish within 2m", name)
	}
}

// Delete stops and disables the unit, removes its file and reloads. It is
// for units whose file Harmony installed; a unit without content is left as
// it is (the caller does not call Delete for it).
func (m *Manager) Delete(ctx context.Context, name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if _, err := os.Stat(m.path(name)); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	c, err := m.connection(ctx)
	if err != nil {
		return err
	}
	st, err := m.Observe(ctx, Unit{Name: name})
	if err != nil && !errors.Is(err, ErrNotInstalled) { // a file systemd has not loaded yet
		return err
	}
	if st.ActiveState == "active" || st.ActiveState == "activating" {
		if err := m.job(ctx, name, c.StopUnitContext); err != nil {
			return err
		}
	}
	if st.UnitFileState == "enabled" {
		if _, err := c.DisableUnitFilesContext(ctx, []string{name}, false); err != nil {
			return fmt.Errorf("disable %s: %w", name, err)
		}
	}
	if err := os.Remove(m.path(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return c.ReloadContext(ctx)
}
