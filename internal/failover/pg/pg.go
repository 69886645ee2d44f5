// Package pg drives one local PostgreSQL instance for the failover role:
// health, promotion, fencing with escalation, following a new primary
// (pg_rewind, else a fresh base backup) and synchronous-standby settings.
// It runs PostgreSQL's own programs as the instance's OS user and talks SQL
// through pgx; it never parses human-readable output.
package pg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Instance is one PostgreSQL data directory and how to reach it.
type Instance struct {
	// Name is the node name; it is the application_name of its replication
	// connection, which synchronous_standby_names refers to.
	Name    string
	BinDir  string // e.g. /usr/lib/postgresql/15/bin
	DataDir string
	Port    int
	// SocketDir is where the Unix socket lives (connections use it).
	SocketDir string
	// OSUser runs the server programs when the agent runs as root
	// (PostgreSQL refuses to run as root).
	OSUser string
	// Superuser connects for SQL.
	Superuser string
	// MaxSlotWALKeep (bytes) bounds the WAL replication slots may retain:
	// RetainRewindWAL sets max_slot_wal_keep_size to it when the server
	// leaves it unbounded (-1). 0: DefaultMaxSlotWALKeep.
	MaxSlotWALKeep int64
	// PassFile (a libpq password file readable by OSUser) gives the
	// passwords of connections to the other members ("": none needed).
	PassFile string
	// LogFile is where the server's own log goes (default: server.log in
	// the data directory).
	LogFile string

	// retain: the checkpoints RetainRewindWAL has seen.
	retain retention
}

// Role is what the instance is right now.
type Role string

const (
	RoleDown    Role = "down"
	RolePrimary Role = "primary" // accepts writes
	RoleReplica Role = "replica" // in recovery
)

// command builds a PostgreSQL program invocation as the instance's user.
func (i *Instance) command(ctx context.Context, prog string, args ...string) *exec.Cmd {
	path := filepath.Join(i.BinDir, prog)
	if i.OSUser != "" && os.Geteuid() == 0 {
		args = append([]string{"-u", i.OSUser, "--", path}, args...)
		return i.withPassFile(exec.CommandContext(ctx, "runuser", args...))
	}
	return i.withPassFile(exec.CommandContext(ctx, path, args...))
}

func (i *Instance) withPassFile(cmd *exec.Cmd) *exec.Cmd {
	if i.PassFile != "" {
		cmd.Env = append(os.Environ(), "PGPASSFILE="+i.PassFile)
	}
	return cmd
}

// CommandError is a PostgreSQL program that failed: its exit and the tail
// of what it printed (for people to read, never to decide on).
type CommandError struct {
	Prog   string
	Args   []string
	Err    error
	Output string // the last 800 bytes
}

func (e *CommandError) Error() string {
	return fmt.Sprintf("%s %s: %v: %s", e.Prog, strings.Join(e.Args, " "), e.Err, e.Output)
}

func (e *CommandError) Unwrap() error { return e.Err }

// Complaint is the program's last line of output that reports an error
// (else its last line): for people to read.
func (e *CommandError) Complaint() string {
	lines := strings.Split(strings.TrimSpace(e.Output), "\n")
	for k := len(lines) - 1; k >= 0; k-- {
		if strings.Contains(lines[k], "error:") || strings.Contains(lines[k], "FATAL:") {
			return strings.TrimSpace(lines[k])
		}
	}
	return strings.TrimSpace(lines[len(lines)-1])
}

func (i *Instance) run(ctx context.Context, prog string, args ...string) error {
	cmd := i.command(ctx, prog, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(out.String())
		if len(msg) > 800 {
			msg = msg[len(msg)-800:]
		}
		return &CommandError{Prog: prog, Args: args, Err: err, Output: msg}
	}
	return nil
}

// ConnString is a pgx connection string for database db.
func (i *Instance) ConnString(db string) string {
	s := fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable connect_timeout=2", i.SocketDir, i.Port, i.Superuser, db)
	if i.PassFile != "" {
		s += " passfile=" + i.PassFile
	}
	return s
}

func (i *Instance) connect(ctx context.Context) (*pgx.Conn, error) {
	return pgx.Connect(ctx, i.ConnString("postgres"))
}

// Start starts the server and waits until it accepts connections.
func (i *Instance) Start(ctx context.Context) error {
	return i.run(ctx, "pg_ctl", "start", "-w", "-t", "60", "-D", i.DataDir, "-l", i.logFile(),
		"-o", fmt.Sprintf("-p %d -k %s", i.Port, i.SocketDir))
}

func (i *Instance) logFile() string {
	if i.LogFile != "" {
		return i.LogFile
	}
	return filepath.Join(i.DataDir, "server.log")
}

// Role asks the server whether it is in recovery.
func (i *Instance) Role(ctx context.Context) (Role, error) {
	c, err := i.connect(ctx)
	if err != nil {
		return RoleDown, err
	}
	defer c.Close(context.Background())
	var inRecovery bool
	if err := c.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
		return RoleDown, err
	}
	if inRecovery {
		return RoleReplica, nil
	}
	return RolePrimary, nil
}

// Checkpoint forces a checkpoint.
func (i *Instance) Checkpoint(ctx context.Context) error {
	c, err := i.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, "CHECKPOINT")
	return err
}

// Position is where an instance's WAL stands.
type Position struct {
	// LSN: a primary's current write position; a replica's last received
	// (else replayed) position. In bytes.
	LSN uint64
	// Timeline: the primary's current timeline, or the one a replica
	// receives (0 when it receives nothing).
	Timeline uint32
	// NextXID is the next transaction id to be assigned (on a replica: as
	// far as it has replayed).
	// Replica: the instance is in recovery.
	Replica bool
	NextXID uint64
}

// WALPosition reads the instance's WAL position and timeline.
func (i *Instance) WALPosition(ctx context.Context) (Position, error) {
	c, err := i.connect(ctx)
	if err != nil {
		return Position{}, err
	}
	defer c.Close(context.Background())
	return walPosition(ctx, c)
}

func walPosition(ctx context.Context, c *pgx.Conn) (Position, error) {
	var p Position
	var err error
	var inRecovery bool
	var lsn, xid int64
	var tli int32
	if err := c.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
		return p, err
	}
	if inRecovery {
		err = c.QueryRow(ctx, `SELECT (COALESCE(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()) - '0/0')::bigint,
			COALESCE((SELECT received_tli FROM pg_stat_wal_receiver), 0),
			pg_snapshot_xmax(pg_current_snapshot())::text::bigint`).Scan(&lsn, &tli, &xid)
	} else {
		err = c.QueryRow(ctx, `SELECT (pg_current_wal_lsn() - '0/0')::bigint,
			('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int,
			pg_snapshot_xmax(pg_current_snapshot())::text::bigint`).Scan(&lsn, &tli, &xid)
	}
	p.LSN, p.Timeline, p.NextXID, p.Replica = uint64(lsn), uint32(tli), uint64(xid), inRecovery
	return p, err
}

// Observation is what one heartbeat needs to know of the instance.
type Observation struct {
	Position
	// Primary only: the replicas streaming from it and the synchronous
	// standby it is configured to wait for.
	Standbys []Standby
	Sync     string
	// Streaming (replica only): its WAL receiver is streaming from a
	// primary. A replica that is not is not following anyone right now.
	Streaming bool
}

// Observe reads, over one connection, the WAL position and, on a primary,
// its standbys and synchronous standby setting (on a replica: whether it
// streams). Only a failure to read the
// position is an error.
func (i *Instance) Observe(ctx context.Context) (Observation, error) {
	c, err := i.connect(ctx)
	if err != nil {
		return Observation{}, err
	}
	defer c.Close(context.Background())
	var o Observation
	if o.Position, err = walPosition(ctx, c); err != nil {
		return o, err
	}
	if o.Replica {
		// Informative too: an unread status says not streaming.
		_ = c.QueryRow(ctx, "SELECT COALESCE((SELECT status = 'streaming' FROM pg_stat_wal_receiver), false)").Scan(&o.Streaming)
		return o, nil
	}
	// Health is the position; these two only inform (unread: empty).
	o.Standbys, _ = standbys(ctx, c)
	o.Sync, _ = syncStandby(ctx, c)
	return o, nil
}

// Healthy runs a trivial query.
func (i *Instance) Healthy(ctx context.Context) error {
	c, err := i.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	var one int
	return c.QueryRow(ctx, "SELECT 1").Scan(&one)
}

// Promote turns a replica into a primary and waits until it accepts writes.
func (i *Instance) Promote(ctx context.Context) error {
	return i.run(ctx, "pg_ctl", "promote", "-w", "-t", "60", "-D", i.DataDir)
}

// Fence makes the instance stop accepting writes, harder with each level:
// 0 a fast shutdown, 1 an immediate shutdown, 2 SIGKILL of the postmaster
// and of every server process of its data directory.
// It returns nil only once the server is proven down (no postmaster).
func (i *Instance) Fence(ctx context.Context, level int) error {
	var err error
	switch level {
	case 0:
		err = i.run(ctx, "pg_ctl", "stop", "-w", "-t", "10", "-m", "fast", "-D", i.DataDir)
	case 1:
		err = i.run(ctx, "pg_ctl", "stop", "-w", "-t", "10", "-m", "immediate", "-D", i.DataDir)
	default:
		if pid, perr := i.postmasterPID(); perr == nil {
			err = syscall.Kill(pid, syscall.SIGKILL)
		}
		// Its children too: a backend left behind could still answer the
		// client it serves until it notices its postmaster is gone.
		for _, pid := range i.serverProcesses() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		// The kernel needs a moment to take the process down.
		deadline := time.Now().Add(5 * time.Second)
		for running, _ := i.Running(); running && time.Now().Before(deadline); running, _ = i.Running() {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if running, perr := i.Running(); perr != nil || running {
		return errors.Join(fmt.Errorf("fence level %d: postmaster still running", level), err, perr)
	}
	return nil
}

func (i *Instance) postmasterPID() (int, error) {
	b, err := os.ReadFile(filepath.Join(i.DataDir, "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	first, _, _ := strings.Cut(string(b), "\n")
	return strconv.Atoi(strings.TrimSpace(first))
}

// Running reports whether the postmaster of this data directory is alive.
func (i *Instance) Running() (bool, error) {
	pid, err := i.postmasterPID()
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := syscall.Kill(pid, 0); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return false, nil
		}
		if !errors.Is(err, syscall.EPERM) {
			return false, err
		}
	}
	// A killed postmaster nobody has reaped yet is a zombie: not running.
	if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		if j := strings.LastIndexByte(string(stat), ')'); j > 0 && j+2 < len(stat) && stat[j+2] == 'Z' {
			return false, nil
		}
	}
	return true, nil
}

// SetSyncStandby makes the primary wait for name (empty: for nobody) before
// acknowledging a commit.
func (i *Instance) SetSyncStandby(ctx context.Context, name string) error {
	c, err := i.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	value := ""
	if name != "" {
		value = `"` + name + `"`
	}
	if _, err := c.Exec(ctx, "ALTER SYSTEM SET synchronous_standby_names = "+quoteLiteral(value)); err != nil {
		return err
	}
	_, err = c.Exec(ctx, "SELECT pg_reload_conf()")
	return err
}

// SyncStandby reads the configured synchronous standby name.
func (i *Instance) SyncStandby(ctx context.Context) (string, error) {
	c, err := i.connect(ctx)
	if err != nil {
		return "", err
	}
	defer c.Close(context.Background())
	return syncStandby(ctx, c)
}

func syncStandby(ctx context.Context, c *pgx.Conn) (string, error) {
	var v string
	if err := c.QueryRow(ctx, "SHOW synchronous_standby_names").Scan(&v); err != nil {
		return "", err
	}
	return strings.Trim(v, `"`), nil
}

// Standby is one replica streaming from this primary.
type Standby struct {
	Name      string // application_name
	State     string // streaming, catchup, ...
	SyncState string // sync, async, potential, quorum
	// Flushed: the position (bytes) the standby has written durably.
	Flushed uint64
}

// Standbys lists the replicas streaming from this primary.
func (i *Instance) Standbys(ctx context.Context) ([]Standby, error) {
	c, err := i.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close(context.Background())
	return standbys(ctx, c)
}

func standbys(ctx context.Context, c *pgx.Conn) ([]Standby, error) {
	rows, err := c.Query(ctx, `SELECT application_name, state, sync_state, COALESCE((flush_lsn - '0/0')::bigint, 0)
		FROM pg_stat_replication ORDER BY application_name`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Standby, error) {
		var s Standby
		var flushed int64
		err := r.Scan(&s.Name, &s.State, &s.SyncState, &flushed)
		s.Flushed = uint64(flushed)
		return s, err
	})
}

// writeAsOwner writes a file in the data directory owned by the OS user.
func (i *Instance) writeAsOwner(path string, data []byte) error {
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return err
	}
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

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// WaitReady polls until the server answers or ctx ends.
func (i *Instance) WaitReady(ctx context.Context) error {
	for {
		if err := i.Healthy(ctx); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
