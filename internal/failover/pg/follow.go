package pg

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

var (
	// ErrSourceUnreachable: the primary to follow does not answer.
	ErrSourceUnreachable = errors.New("the primary to follow does not answer")
	// ErrSourceNotPrimary: the primary to follow is still in recovery (not
	// promoted yet, or not a primary at all). Rewinding against it would
	// find one timeline and change nothing, and the node would then never
	// stream from it.
	ErrSourceNotPrimary = errors.New("the primary to follow is still in recovery")
)

// How long following waits for a standby's WAL receiver to reach
// 'streaming' before deciding it does not follow.
const streamingWait = 2 * time.Second

// source is what Follow learns of the primary before touching anything.
type source struct {
	timeline uint32 // its current timeline
	// ctlTimeline: the timeline its control file records (a just-promoted
	// server updates it only at its next checkpoint).
	ctlTimeline uint32
}

func probeSource(ctx context.Context, primary *Instance) (source, error) {
	c, err := primary.connect(ctx)
	if err != nil {
		return source{}, fmt.Errorf("%w: %s: %w", ErrSourceUnreachable, primary.Name, err)
	}
	defer c.Close(context.Background())
	var inRecovery bool
	if err := c.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
		return source{}, fmt.Errorf("%w: %s: %w", ErrSourceUnreachable, primary.Name, err)
	}
	if inRecovery {
		return source{}, fmt.Errorf("%w: %s", ErrSourceNotPrimary, primary.Name)
	}
	var s source
	var tli, ctl int32
	err = c.QueryRow(ctx, `SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int,
		(SELECT timeline_id FROM pg_control_checkpoint())`).Scan(&tli, &ctl)
	if err != nil {
		return source{}, fmt.Errorf("%w: %s: %w", ErrSourceUnreachable, primary.Name, err)
	}
	s.timeline, s.ctlTimeline = uint32(tli), uint32(ctl)
	return s, nil
}

// receiver is the local server's recovery state and WAL receiver.
type receiver struct {
	inRecovery bool
	status     string // pg_stat_wal_receiver.status, "" without a receiver
	host       string
	port       int
	slot       string
	timeline   uint32
	appName    string
}

func (i *Instance) readReceiver(ctx context.Context) (receiver, error) {
	c, err := i.connect(ctx)
	if err != nil {
		return receiver{}, err
	}
	defer c.Close(context.Background())
	var r receiver
	var port, tli int32
	var conninfo string
	err = c.QueryRow(ctx, `SELECT pg_is_in_recovery(), COALESCE(w.status, ''), COALESCE(w.sender_host, ''), COALESCE(w.sender_port, 0),
		COALESCE(w.slot_name, ''), COALESCE(w.received_tli, 0), COALESCE(w.conninfo, '')
		FROM (SELECT 1) AS one LEFT JOIN pg_stat_wal_receiver AS w ON true`).Scan(&r.inRecovery, &r.status, &r.host, &port, &r.slot, &tli, &conninfo)
	r.port, r.timeline = int(port), uint32(tli)
	r.appName = conninfoValue(conninfo, "application_name")
	return r, err
}

// streamsFrom: the receiver streams the primary's current timeline from it
// (under whatever name and slot).
func (r receiver) streamsFrom(primary *Instance, src source) bool {
	return r.inRecovery && r.status == "streaming" && r.host == primary.SocketDir && r.port == primary.Port && r.timeline == src.timeline
}

// named: it streams under this node's name and through its slot.
func (r receiver) named(i *Instance) bool {
	return r.appName == i.Name && r.slot == SlotName(i.Name)
}

// watchReceiver reads the receiver until it streams, for at most wait (a
// server that is down or not in recovery is returned at once).
func (i *Instance) watchReceiver(ctx context.Context, wait time.Duration, done func(receiver) bool) (receiver, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		r, err := i.readReceiver(ctx)
		if err != nil || !r.inRecovery || done(r) {
			return r, err
		}
		select {
		case <-ctx.Done():
			return r, nil
		case <-tick.C:
		}
	}
}

// Follow makes this instance a replica of primary and reports how:
//
//   - "already following": it streams primary's current timeline under its
//     node name through its slot (waiting up to 2 s for a receiver that is
//     reconnecting); nothing is touched;
//   - "renamed": it streams from primary but under another
//     application_name or slot (a replica made with pg_basebackup -R
//     streams as "walreceiver"): primary_conninfo and primary_slot_name
//     are rewritten and reloaded, without a restart;
//   - "rewind": stopped (fast shutdown, else immediate), rewound with
//     pg_rewind, configured and started;
//   - "basebackup (why)": the same with a fresh base backup, and why
//     rewinding was not possible (pg_rewind's last line, or the slot that
//     PostgreSQL invalidated).
//
// Before anything else the primary must answer and be out of recovery; if
// not, Follow returns ErrSourceUnreachable or ErrSourceNotPrimary and
// touches nothing (a running local server keeps running). The node's slot
// on the primary is created (or, invalidated, re-created) before the local
// server is stopped.
func (i *Instance) Follow(ctx context.Context, primary *Instance) (string, error) {
	src, err := probeSource(ctx, primary)
	if err != nil {
		return "", err
	}
	rx, err := i.watchReceiver(ctx, streamingWait, func(r receiver) bool { return r.status == "streaming" })
	if err == nil && rx.streamsFrom(primary, src) {
		if rx.named(i) {
			return "already following", nil
		}
		if err := i.rename(ctx, primary, src); err == nil {
			return "renamed", nil
		}
		// Not renamed in time: restart it the long way.
	}
	lost, err := i.ensureMemberSlot(ctx, primary)
	if err != nil {
		return "", err
	}
	if running, _ := i.Running(); running {
		if err := i.Fence(ctx, 0); err != nil {
			if err := i.Fence(ctx, 1); err != nil {
				return "", err
			}
		}
	}
	i.reapOrphans(ctx, 5*time.Second)
	// A connection of ours that the primary has not noticed is gone yet
	// would hold the slot.
	if err := primary.releaseSlot(ctx, SlotName(i.Name)); err != nil {
		return "", err
	}
	// A just-promoted primary records its new timeline in its control file
	// only at its next checkpoint; without one pg_rewind sees one timeline
	// and declares that nothing needs rewinding.
	if src.ctlTimeline != src.timeline {
		if err := primary.Checkpoint(ctx); err != nil {
			return "", fmt.Errorf("checkpoint on the new primary: %w", err)
		}
	}
	why := ""
	if lost {
		why = "slot " + SlotName(i.Name) + " was invalidated: the WAL this node needed is gone"
	} else if err := i.run(ctx, "pg_rewind", "--target-pgdata", i.DataDir, "--source-server", primary.ConnString("postgres")); err != nil {
		if ctx.Err() != nil {
			return "", err
		}
		why = err.Error()
		var ce *CommandError
		if errors.As(err, &ce) {
			why = ce.Complaint()
		}
	}
	how := "rewind"
	if why != "" {
		how = "basebackup (" + why + ")"
		if err := i.rebuild(ctx, primary); err != nil {
			return "", fmt.Errorf("%s, and so did a base backup: %w", why, err)
		}
	}
	if err := i.ConfigureStandby(primary); err != nil {
		return "", err
	}
	return how, i.Start(ctx)
}

// rename points a running standby's receiver at primary under its node name
// and slot: PostgreSQL 15 reloads primary_conninfo and primary_slot_name on
// SIGHUP and restarts the receiver. It waits (10 s at most) until the
// receiver streams that way.
func (i *Instance) rename(ctx context.Context, primary *Instance, src source) error {
	if _, err := i.ensureMemberSlot(ctx, primary); err != nil {
		return err
	}
	c, err := i.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	for _, stmt := range []string{
		"ALTER SYSTEM SET primary_conninfo = " + quoteLiteral(i.conninfo(primary)),
		"ALTER SYSTEM SET primary_slot_name = " + quoteLiteral(SlotName(i.Name)),
		"SELECT pg_reload_conf()",
	} {
		if _, err := c.Exec(ctx, stmt); err != nil {
			return err
		}
	}
	rx, err := i.watchReceiver(ctx, 10*time.Second, func(r receiver) bool { return r.streamsFrom(primary, src) && r.named(i) })
	if err != nil {
		return err
	}
	if !rx.streamsFrom(primary, src) || !rx.named(i) {
		return fmt.Errorf("the WAL receiver does not stream as %s yet (%s as %q through %q)", i.Name, rx.status, rx.appName, rx.slot)
	}
	return nil
}

// releaseSlot ends the connection (if any) that holds slot name.
func (i *Instance) releaseSlot(ctx context.Context, name string) error {
	c, err := i.connect(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrSourceUnreachable, err)
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active", name)
	return err
}

func (i *Instance) rebuild(ctx context.Context, primary *Instance) error {
	tmp := i.DataDir + ".rebuild"
	_ = os.RemoveAll(tmp)
	src := primary.ConnString("postgres") + " application_name=" + BaseBackupAppName
	if err := i.run(ctx, "pg_basebackup", "-D", tmp, "-d", src, "-X", "stream", "-c", "fast", "-S", SlotName(i.Name)); err != nil {
		return err
	}
	if err := os.RemoveAll(i.DataDir); err != nil {
		return err
	}
	return os.Rename(tmp, i.DataDir)
}

// conninfo is how this node connects to primary for streaming: under its
// node name, which synchronous_standby_names refers to.
func (i *Instance) conninfo(primary *Instance) string {
	s := fmt.Sprintf("host=%s port=%d user=%s application_name=%s", primary.SocketDir, primary.Port, primary.Superuser, i.Name)
	if i.PassFile != "" {
		s += " passfile=" + i.PassFile
	}
	return s
}

// ConfigureStandby points the (stopped) instance at primary, under its own
// application_name and through its slot, and marks it a standby.
func (i *Instance) ConfigureStandby(primary *Instance) error {
	auto := filepath.Join(i.DataDir, "postgresql.auto.conf")
	old, _ := os.ReadFile(auto)
	var keep []string
	for _, line := range strings.Split(string(old), "\n") {
		key, _, _ := strings.Cut(line, "=")
		switch strings.TrimSpace(key) {
		case "primary_conninfo", "primary_slot_name", "synchronous_standby_names", "":
			continue
		}
		keep = append(keep, line)
	}
	keep = append(keep, "primary_conninfo = "+quoteLiteral(i.conninfo(primary)),
		"primary_slot_name = "+quoteLiteral(SlotName(i.Name)),
		"synchronous_standby_names = ''")
	if err := i.writeAsOwner(auto, []byte(strings.Join(keep, "\n")+"\n")); err != nil {
		return err
	}
	return i.writeAsOwner(filepath.Join(i.DataDir, "standby.signal"), nil)
}

// conninfoValue reads keyword's value from a libpq keyword=value string.
func conninfoValue(conninfo, keyword string) string {
	s := conninfo
	for {
		s = strings.TrimLeft(s, " \t\n")
		if s == "" {
			return ""
		}
		k, rest, ok := strings.Cut(s, "=")
		if !ok {
			return ""
		}
		k = strings.TrimSpace(k)
		rest = strings.TrimLeft(rest, " ")
		var v strings.Builder
		if strings.HasPrefix(rest, "'") {
			rest = rest[1:]
			for len(rest) > 0 && rest[0] != '\'' {
				if rest[0] == '\\' && len(rest) > 1 {
					rest = rest[1:]
				}
				v.WriteByte(rest[0])
				rest = rest[1:]
			}
			if len(rest) > 0 {
				rest = rest[1:]
			}
		} else {
			end := strings.IndexAny(rest, " \t\n")
			if end < 0 {
				end = len(rest)
			}
			v.WriteString(rest[:end])
			rest = rest[end:]
		}
		if k == keyword {
			return v.String()
		}
		s = rest
	}
}
