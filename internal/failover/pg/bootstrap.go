package pg

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// What a declared cluster's member does to its data directory
// (docs/adr/0026-declared-postgres-clusters.md): the first member
// initialises it, the others clone it from the primary; every member
// writes its own settings file before it starts.

// SettingsFile is the file of the data directory that holds the settings
// the agent manages (postgresql.conf includes it).
const SettingsFile = "harmony.conf"

// Initialized reports whether the data directory holds a cluster.
func (i *Instance) Initialized() (bool, error) {
	_, err := os.Stat(filepath.Join(i.DataDir, "PG_VERSION"))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	}
	return false, err
}

// Version is the major version of the cluster in the data directory.
func (i *Instance) Version() (int, error) {
	b, err := os.ReadFile(filepath.Join(i.DataDir, "PG_VERSION"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// SystemID is the data directory's database system identifier (the same
// on every member cloned from one initdb, different for any other).
func (i *Instance) SystemID(ctx context.Context) (string, error) {
	cmd := i.command(ctx, "pg_controldata", "-D", i.DataDir)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", &CommandError{Prog: "pg_controldata", Args: []string{"-D", i.DataDir}, Err: err, Output: tail(out.String())}
	}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "Database system identifier" {
			return strings.TrimSpace(v), nil
		}
	}
	return "", errors.New("pg_controldata: no database system identifier")
}

func tail(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 800 {
		s = s[len(s)-800:]
	}
	return s
}

// prepareDir makes dir (and its parents) and gives it to the OS user.
func (i *Instance) prepareDir(dir string, mode os.FileMode) error {
	if err := os.MkdirAll(dir, mode); err != nil {
		return err
	}
	if err := os.Chmod(dir, mode); err != nil {
		return err
	}
	return i.chown(dir)
}

func (i *Instance) chown(path string) error {
	if i.OSUser == "" || os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup(i.OSUser)
	if err != nil {
		return err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return os.Chown(path, uid, gid)
}

// WriteOwned writes a file owned by the OS user (mode 0600): a password
// file, say.
func (i *Instance) WriteOwned(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return i.writeAsOwner(path, data)
}

// Init runs initdb (with data checksums, which pg_rewind needs) with the
// superuser's password, and writes the access rules every member keeps:
// the agent (as root or the OS user) reaches the local server over its
// socket without a password; everything else, replication included,
// needs a password (scram-sha-256).
func (i *Instance) Init(ctx context.Context, password string) error {
	if err := i.prepareDir(filepath.Dir(i.DataDir), 0o755); err != nil {
		return err
	}
	if err := i.prepareDir(i.DataDir, 0o700); err != nil {
		return err
	}
	pw, err := os.CreateTemp("", "harmony-pw-*")
	if err != nil {
		return err
	}
	defer os.Remove(pw.Name())
	if _, err := pw.WriteString(password + "\n"); err != nil {
		pw.Close()
		return err
	}
	pw.Close()
	if err := i.chown(pw.Name()); err != nil {
		return err
	}
	if err := i.run(ctx, "initdb", "--data-checksums", "-D", i.DataDir, "-U", i.Superuser, "--pwfile", pw.Name(),
		"--auth-local", "scram-sha-256", "--auth-host", "scram-sha-256"); err != nil {
		return err
	}
	return i.writeAccess()
}

// writeAccess writes pg_hba.conf and pg_ident.conf.
func (i *Instance) writeAccess() error {
	agent := "root"
	if u, err := user.Current(); err == nil {
		agent = u.Username
	}
	ident := fmt.Sprintf("# Written by harmony: the OS users that may connect as %s over the local socket.\nharmony %s %s\nharmony %s %s\n",
		i.Superuser, agent, i.Superuser, i.OSUser, i.Superuser)
	hba := fmt.Sprintf(`# Written by harmony (docs/postgres.md). The agent connects over the local
# socket as %[1]s without a password; everything else needs one.
local   all          %[1]s                  peer map=harmony
local   all          all                  scram-sha-256
local   replication  %[1]s                  peer map=harmony
host    all          all        all       scram-sha-256
host    replication  %[1]s        all       scram-sha-256
`, i.Superuser)
	if err := i.writeAsOwner(filepath.Join(i.DataDir, "pg_ident.conf"), []byte(ident)); err != nil {
		return err
	}
	return i.writeAsOwner(filepath.Join(i.DataDir, "pg_hba.conf"), []byte(hba))
}

// WriteSettings writes the member's settings file (this member's port and
// socket, listening on every address, and the cluster's parameters) and
// makes postgresql.conf include it. Run before every start: a clone
// brings the primary's file.
func (i *Instance) WriteSettings(params map[string]string) error {
	_, err := i.writeSettings(params)
	return err
}

// TrySettings writes the settings file and asks PostgreSQL whether it
// takes every value (pg_file_settings); when it does not, the previous
// file is put back and the refusals are returned, so that a bad value is
// never reloaded nor met at the next start.
func (i *Instance) TrySettings(ctx context.Context, params map[string]string) ([]string, error) {
	old, err := i.writeSettings(params)
	if err != nil {
		return nil, err
	}
	c, err := i.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close(context.Background())
	// "setting could not be applied" is a good value that waits for a
	// restart; every other error is PostgreSQL refusing the value.
	rows, err := c.Query(ctx, `SELECT name || ': ' || error FROM pg_file_settings
		WHERE error IS NOT NULL AND error <> 'setting could not be applied' AND sourcefile LIKE $1 ORDER BY seqno`,
		"%/"+SettingsFile)
	if err != nil {
		return nil, err
	}
	var refused []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		refused = append(refused, s)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(refused) > 0 {
		if err := i.writeAsOwner(filepath.Join(i.DataDir, SettingsFile), old); err != nil {
			return refused, err
		}
	}
	return refused, nil
}

// Restart restarts the server (a clean, fast shutdown first).
func (i *Instance) Restart(ctx context.Context) error {
	return i.run(ctx, "pg_ctl", "restart", "-w", "-t", "60", "-m", "fast", "-D", i.DataDir, "-l", i.logFile(),
		"-o", fmt.Sprintf("-p %d -k %s", i.Port, i.SocketDir))
}

func (i *Instance) writeSettings(params map[string]string) ([]byte, error) {
	old, _ := os.ReadFile(filepath.Join(i.DataDir, SettingsFile))
	lines := []string{"# Written by harmony: the cluster's parameters (spec.parameters) and this member's own.",
		"listen_addresses = '*'", fmt.Sprintf("port = %d", i.Port), "unix_socket_directories = " + quoteLiteral(i.SocketDir)}
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		lines = append(lines, k+" = "+quoteLiteral(params[k]))
	}
	if err := i.writeAsOwner(filepath.Join(i.DataDir, SettingsFile), []byte(strings.Join(lines, "\n")+"\n")); err != nil {
		return old, err
	}
	conf := filepath.Join(i.DataDir, "postgresql.conf")
	b, err := os.ReadFile(conf)
	if err != nil {
		return old, err
	}
	include := "include_if_exists = '" + SettingsFile + "'"
	if bytes.Contains(b, []byte(include)) {
		return old, nil
	}
	b = append(b, []byte("\n# harmony's settings (last, so they win)\n"+include+"\n")...)
	return old, i.writeAsOwner(conf, b)
}

// Clone copies the primary's data directory (pg_basebackup, WAL streamed)
// into this member's, which must not hold a cluster, and marks it a
// standby of primary. What was there (a half-made copy) is replaced.
func (i *Instance) Clone(ctx context.Context, primary *Instance) error {
	if err := i.prepareDir(filepath.Dir(i.DataDir), 0o755); err != nil {
		return err
	}
	tmp := i.DataDir + ".clone"
	_ = os.RemoveAll(tmp)
	src := primary.ConnString("postgres") + " application_name=" + BaseBackupAppName
	if err := i.run(ctx, "pg_basebackup", "-D", tmp, "-d", src, "-X", "stream", "-c", "fast"); err != nil {
		_ = os.RemoveAll(tmp)
		return err
	}
	if err := os.RemoveAll(i.DataDir); err != nil {
		return err
	}
	if err := os.Rename(tmp, i.DataDir); err != nil {
		return err
	}
	return i.ConfigureStandby(primary)
}

// PrepareDirs makes the log file's directory and the socket directory
// (when missing), owned by the OS user.
func (i *Instance) PrepareDirs() error {
	if i.LogFile != "" {
		if err := i.prepareDir(filepath.Dir(i.LogFile), 0o750); err != nil {
			return err
		}
	}
	if _, err := os.Stat(i.SocketDir); errors.Is(err, os.ErrNotExist) {
		return i.prepareDir(i.SocketDir, 0o755)
	}
	return nil
}
