package pg

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Replication slots the agent manages (ADR 17). Every name starts with
// "harmony_"; the agent touches no other slot.
//
//   - A member slot, SlotName(node), on the primary a node follows: the
//     follower streams through it, so the primary keeps the WAL the
//     follower has not flushed yet.
//   - The retention slot, RewindSlot, on every node: it holds the WAL since
//     the redo point of the checkpoint before the latest one, which is what
//     pg_rewind reads on the old primary and what the rewound node replays
//     from the new one.
//
// max_slot_wal_keep_size bounds both: a slot PostgreSQL invalidated for
// holding more is dropped and created again, and the node behind it is
// re-cloned rather than rewound.
const (
	slotPrefix = "harmony_"
	// RewindSlot is the local retention slot. A node name (an RFC 1123
	// subdomain: it starts with a letter or a digit) never maps to it.
	RewindSlot = "harmony__rewind"
	// BaseBackupAppName is the application_name of a re-clone's base
	// backup: never a node name (those have no underscore), so the primary
	// never takes the backup's WAL stream for a member.
	BaseBackupAppName = "harmony_basebackup"
	// DefaultMaxSlotWALKeep is the bound on the WAL slots may retain when
	// the instance does not set one: 1 GiB.
	DefaultMaxSlotWALKeep int64 = 1 << 30
)

// SlotName is the replication slot node streams through: "harmony_" and
// the node name, lowercase, with every character other than a letter or a
// digit as "_" (slot names allow nothing else), shortened with a hash to
// PostgreSQL's 63 bytes when longer.
func SlotName(node string) string {
	var b strings.Builder
	b.WriteString(slotPrefix)
	for _, r := range strings.ToLower(node) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	s := b.String()
	if len(s) > 63 {
		h := fnv.New32a()
		h.Write([]byte(node))
		s = fmt.Sprintf("%s_%08x", s[:54], h.Sum32())
	}
	return s
}

// retention remembers the redo points of the checkpoints seen, so that
// the retention slot can stay one checkpoint behind the latest.
type retention struct {
	mu   sync.Mutex
	last uint64 // the latest checkpoint's redo point seen
	prev uint64 // the one before it (0: none seen yet)
}

// slot is one row of pg_replication_slots.
type slot struct {
	name       string
	active     bool
	restartLSN uint64 // 0: none
	walStatus  string // reserved, extended, unreserved, lost ("" for none)
}

func readSlots(ctx context.Context, c *pgx.Conn) (map[string]slot, error) {
	rows, err := c.Query(ctx, `SELECT slot_name::text, active, COALESCE((restart_lsn - '0/0')::bigint, 0), COALESCE(wal_status, '')
		FROM pg_replication_slots WHERE slot_type = 'physical' AND starts_with(slot_name::text, $1)`, slotPrefix)
	if err != nil {
		return nil, err
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (slot, error) {
		var s slot
		var lsn int64
		err := r.Scan(&s.name, &s.active, &lsn, &s.walStatus)
		s.restartLSN = uint64(lsn)
		return s, err
	})
	out := make(map[string]slot, len(list))
	for _, s := range list {
		out[s.name] = s
	}
	return out, err
}

// createSlot creates a physical slot that reserves WAL at once; one that
// exists already (a concurrent creation) is not an error.
func createSlot(ctx context.Context, c *pgx.Conn, name string) error {
	_, err := c.Exec(ctx, "SELECT pg_create_physical_replication_slot($1, true)", name)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42710" { // duplicate_object
		return nil
	}
	return err
}

func dropSlot(ctx context.Context, c *pgx.Conn, name string) error {
	_, err := c.Exec(ctx, "SELECT pg_drop_replication_slot($1)", name)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42704" { // undefined_object
		return nil
	}
	return err
}

// ensureMemberSlot makes sure primary has a usable slot for this node. It
// reports lost when the slot was there but invalidated: the WAL this node
// still needed is gone from the primary.
func (i *Instance) ensureMemberSlot(ctx context.Context, primary *Instance) (lost bool, err error) {
	c, err := primary.connect(ctx)
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrSourceUnreachable, err)
	}
	defer c.Close(context.Background())
	name := SlotName(i.Name)
	slots, err := readSlots(ctx, c)
	if err != nil {
		return false, err
	}
	s, ok := slots[name]
	if ok && s.walStatus != "lost" {
		return false, nil
	}
	if ok {
		if err := dropSlot(ctx, c, name); err != nil {
			return true, fmt.Errorf("drop the invalidated slot %s on %s: %w", name, primary.Name, err)
		}
	}
	if err := createSlot(ctx, c, name); err != nil {
		return ok, fmt.Errorf("create slot %s on %s: %w", name, primary.Name, err)
	}
	return ok, nil
}

// RetainRewindWAL keeps, on this running instance (primary or replica),
// the WAL a later pg_rewind needs: it bounds max_slot_wal_keep_size when
// unbounded, (re)creates the retention slot when missing or invalidated,
// and advances it to the redo point of the checkpoint before the latest
// one this function has seen (never further; until it has seen two, it
// leaves the slot where it is). On a replica it also drops the member
// slots left from when it was a primary (inactive ones only). Cheap: one
// connection and a few catalog reads; meant to be called every few
// heartbeats. Idempotent; safe to call concurrently.
func (i *Instance) RetainRewindWAL(ctx context.Context) error {
	c, err := i.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	if err := i.boundSlotWAL(ctx, c); err != nil {
		return fmt.Errorf("bound max_slot_wal_keep_size: %w", err)
	}
	var inRecovery bool
	var redo int64
	if err := c.QueryRow(ctx, "SELECT pg_is_in_recovery(), (redo_lsn - '0/0')::bigint FROM pg_control_checkpoint()").Scan(&inRecovery, &redo); err != nil {
		return err
	}
	slots, err := readSlots(ctx, c)
	if err != nil {
		return err
	}
	if inRecovery {
		for name, s := range slots {
			if name != RewindSlot && !s.active {
				if err := dropSlot(ctx, c, name); err != nil {
					return fmt.Errorf("drop stale member slot %s: %w", name, err)
				}
			}
		}
	}
	s, ok := slots[RewindSlot]
	if ok && s.walStatus == "lost" {
		if err := dropSlot(ctx, c, RewindSlot); err != nil {
			return err
		}
		ok = false
	}
	if !ok {
		// Reserves from the latest checkpoint's redo point.
		if err := createSlot(ctx, c, RewindSlot); err != nil {
			return fmt.Errorf("create %s: %w", RewindSlot, err)
		}
		s = slot{name: RewindSlot}
		_ = c.QueryRow(ctx, "SELECT COALESCE((restart_lsn - '0/0')::bigint, 0) FROM pg_replication_slots WHERE slot_name = $1", RewindSlot).Scan(&s.restartLSN)
	}
	to := i.retain.seen(uint64(redo))
	if to == 0 || to <= s.restartLSN {
		return nil
	}
	_, err = c.Exec(ctx, "SELECT pg_replication_slot_advance($1, $2::pg_lsn)", RewindSlot, formatLSN(to))
	return err
}

// seen records the latest checkpoint's redo point and returns the one
// before it (0: not known yet).
func (r *retention) seen(redo uint64) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case redo < r.last: // another history (rewound, re-cloned): start again
		r.prev, r.last = 0, redo
	case redo > r.last:
		r.prev, r.last = r.last, redo
	}
	return r.prev
}

// boundSlotWAL sets max_slot_wal_keep_size when it is unbounded.
func (i *Instance) boundSlotWAL(ctx context.Context, c *pgx.Conn) error {
	var v string
	if err := c.QueryRow(ctx, "SELECT setting FROM pg_settings WHERE name = 'max_slot_wal_keep_size'").Scan(&v); err != nil {
		return err
	}
	if v != "-1" {
		return nil
	}
	bound := i.MaxSlotWALKeep
	if bound <= 0 {
		bound = DefaultMaxSlotWALKeep
	}
	mb := max(bound>>20, 1)
	if _, err := c.Exec(ctx, fmt.Sprintf("ALTER SYSTEM SET max_slot_wal_keep_size = '%dMB'", mb)); err != nil {
		return err
	}
	_, err := c.Exec(ctx, "SELECT pg_reload_conf()")
	return err
}

func formatLSN(lsn uint64) string { return fmt.Sprintf("%X/%X", lsn>>32, uint32(lsn)) }

// DropSlotsExcept drops the inactive member slots of nodes not in members
// (a member that left the cluster), never the rewind slot: a slot nobody
// streams through would hold WAL back until its bound. It returns the
// slots dropped.
func (i *Instance) DropSlotsExcept(ctx context.Context, members []string) ([]string, error) {
	c, err := i.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close(context.Background())
	slots, err := readSlots(ctx, c)
	if err != nil {
		return nil, err
	}
	keep := map[string]bool{RewindSlot: true}
	for _, m := range members {
		keep[SlotName(m)] = true
	}
	var dropped []string
	for name, s := range slots {
		if keep[name] || s.active {
			continue
		}
		if err := dropSlot(ctx, c, name); err != nil {
			return dropped, err
		}
		dropped = append(dropped, name)
	}
	return dropped, nil
}
