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

	"github.com/nats-io/nats.go"

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

// heartbeat says the device is alive every heartbeat interval. Through a
// relay it sends a beat, which the control plane answers from memory and
// records with the other devices' (docs/adr/0020-presence.md); straight to
// the store, or to a control plane that refuses beats, it writes a tiny
// record by CAS on its own last revision, and a conflict (another writer,
// or a restart that lost the revision) is resolved by reading the key
// again.
//
// Beats that go unanswered twice in a row make it check the link itself
// (probeLink): a blackholed link is noticed this way within about two
// store timeouts, without the pings every device would otherwise send
// every few seconds for it.
func (a *Agent) heartbeat(ctx context.Context, kv store.KV, nc *nats.Conn) error {
	var st beatState
	misses := 0
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
		err := a.beatOnce(ctx, kv, &st)
		switch {
		case err == nil:
			misses = 0
		case unanswered(err):
			misses++
		case !errors.Is(err, store.ErrUnavailable):
			misses = 0 // an answer, if not the one hoped for
		}
		if misses >= unansweredBeats {
			misses = 0
			a.probeLink(nc)
		}
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

// unansweredBeats in a row make the agent check its link.
const unansweredBeats = 2

// linkProbeTimeout bounds the round trip that checks the link.
const linkProbeTimeout = 5 * time.Second

// unanswered says whether a call got no answer at all (as opposed to an
// error answered by the control plane, or a circuit breaker's refusal).
func unanswered(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)
}

// probeLink asks the NATS server itself for a round trip: when it answers,
// only the control plane behind it is slow (the link stays, and a fleet
// is not sent reconnecting to an overloaded server); when it does not, the
// link is dead and the agent reconnects, to another server when there is
// one.
func (a *Agent) probeLink(nc *nats.Conn) {
	if nc == nil || !nc.IsConnected() {
		return
	}
	err := nc.FlushTimeout(linkProbeTimeout)
	if err == nil || !unanswered(err) {
		return
	}
	a.log.Warn("heartbeats and a round trip to NATS went unanswered; reconnecting", "url", nc.ConnectedUrlRedacted(), "err", err)
	_ = nc.ForceReconnect()
}

// beatState is what the heartbeat loop remembers between beats.
type beatState struct {
	seq, rev uint64
	known    bool // rev is the key's latest revision
	keys     bool // the store takes no beats: write the key
}

// beatOnce sends one beat, or writes one heartbeat by CAS on the last
// known revision (read again after any failure).
func (a *Agent) beatOnce(ctx context.Context, kv store.KV, st *beatState) error {
	key := a.cfg.ID
	st.seq++
	b, _ := v1.Marshal(v1.Heartbeat{V: v1.FormatVersion, Boot: a.boot, Seq: st.seq})
	if bt, ok := kv.(beater); ok && !st.keys {
		err := bt.Beat(ctx, key, b)
		if !errors.Is(err, errNoBeats) && !errors.Is(err, store.ErrRefused) {
			return err
		}
		// A store, or an older control plane, that takes no beats: from
		// now on write the key.
		if errors.Is(err, store.ErrRefused) {
			a.log.Info("the control plane takes no beats; writing the heartbeat key", "err", err)
		}
		st.keys = true
	}
	if !st.known {
		e, err := kv.Get(ctx, key)
		switch {
		case errors.Is(err, store.ErrNotFound):
			st.rev, st.known = 0, true
		case err == nil:
			st.rev, st.known = e.Revision, true
		default:
			return err
		}
	}
	var err error
	var newRev uint64
	if st.rev == 0 {
		newRev, err = kv.Create(ctx, key, b)
	} else {
		newRev, err = kv.Update(ctx, key, b, st.rev)
	}
	if err != nil {
		// Read the key again only when the revision is known to be wrong
		// (a conflict): after a mere outage the next beat tries the same
		// revision, so a fleet reconnecting after a restart does not
		// send the store ten thousand reads. A write whose outcome was
		// unknown and did land shows up as a conflict then.
		if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
			st.known = false
		}
		return err
	}
	st.rev = newRev
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
