package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"maps"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/buildinfo"
	"github.com/harmony-fleet/harmony/internal/store"
)

// publishInfo writes the device's labels and inventory once the mesh is
// reachable (and again whenever it changes), with CAS.
func (a *Agent) publishInfo(ctx context.Context, kv store.KV) error {
	host, _ := os.Hostname()
	info := v1.DeviceInfo{V: v1.FormatVersion, ID: a.cfg.ID, Labels: a.cfg.Labels, Inventory: v1.Inventory{
		Hostname: host, OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU(),
		MemoryBytes: memTotal(), AgentVersion: buildinfo.Version,
	}}
	info.Capabilities = a.cfg.Allowed().Names()
	return a.retry.retryForever(ctx, a.log, "publish device info", func() error {
		e, err := kv.Get(ctx, a.cfg.ID)
		var rev uint64
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return err
		default:
			rev = e.Revision
			if cur, err := v1.DecodeDeviceInfo(e.Value); err == nil {
				info.UpdatedAt = cur.UpdatedAt
				if b, _ := v1.Marshal(info); bytes.Equal(b, e.Value) {
					return nil // unchanged
				}
			}
		}
		info.UpdatedAt = time.Now().UTC().Truncate(time.Second)
		b, err := v1.Marshal(info)
		if err != nil {
			return err
		}
		if rev == 0 {
			_, err = kv.Create(ctx, a.cfg.ID, b)
		} else {
			_, err = kv.Update(ctx, a.cfg.ID, b, rev)
		}
		if err == nil {
			a.log.Info("device info published", "labels", info.Labels)
		}
		if errors.Is(err, store.ErrRefused) && rev != 0 {
			// Under a device identity the labels are those the device
			// registered with (the relay refuses others): publish the rest
			// of the record with them.
			if cur, derr := v1.DecodeDeviceInfo(e.Value); derr == nil && !maps.Equal(cur.Labels, info.Labels) {
				a.log.Warn("the control plane keeps the labels this device registered with; change them with harmony label",
					"configured", a.cfg.Labels, "registered", cur.Labels, "err", err)
				info.Labels = cur.Labels
			}
		}
		return err
	})
}

// heartbeat writes a tiny record every heartbeat interval, by CAS on its own
// last revision. A conflict (another writer, or a restart that lost the
// revision) is resolved by reading the key again.
func (a *Agent) heartbeat(ctx context.Context, kv store.KV) error {
	key := a.cfg.ID
	var seq, rev uint64
	known := false
	interval := a.cfg.HeartbeatInterval.Std()
	bo := a.retry.backoff()
	next := time.NewTimer(0)
	defer next.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-next.C:
		case <-a.health.reconnect:
			// Back on the mesh: say so at once, and flush queued status.
			a.status.wake()
			bo.Reset()
		}
		err := a.beatOnce(ctx, kv, key, &seq, &rev, &known)
		wait := interval
		if err != nil {
			// Failed: try again soon (by the retry policy), not a whole
			// interval later, so recovery after an outage is quick.
			a.retry.retried("heartbeat")
			a.log.Debug("heartbeat failed", "err", err)
			wait = min(bo.NextBackOff(), interval)
		} else {
			bo.Reset()
			a.health.beat()
		}
		if !next.Stop() {
			select {
			case <-next.C:
			default:
			}
		}
		next.Reset(wait)
	}
}

// beatOnce writes one heartbeat by CAS on the last known revision (read
// again after any failure).
func (a *Agent) beatOnce(ctx context.Context, kv store.KV, key string, seq, rev *uint64, known *bool) error {
	if !*known {
		e, err := kv.Get(ctx, key)
		switch {
		case errors.Is(err, store.ErrNotFound):
			*rev, *known = 0, true
		case err == nil:
			*rev, *known = e.Revision, true
		default:
			return err
		}
	}
	*seq++
	b, _ := v1.Marshal(v1.Heartbeat{V: v1.FormatVersion, Boot: a.boot, Seq: *seq})
	var err error
	var newRev uint64
	if *rev == 0 {
		newRev, err = kv.Create(ctx, key, b)
	} else {
		newRev, err = kv.Update(ctx, key, b, *rev)
	}
	if err != nil {
		// Read the key again only when the revision is known to be wrong
		// (a conflict): after a mere outage the next beat tries the same
		// revision, so a fleet reconnecting after a restart does not
		// send the store ten thousand reads. A write whose outcome was
		// unknown and did land shows up as a conflict then.
		if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
			*known = false
		}
		return err
	}
	*rev = newRev
	return nil
}

func memTotal() uint64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			fields := strings.Fields(rest)
			if len(fields) > 0 {
				kb, _ := strconv.ParseUint(fields[0], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}
