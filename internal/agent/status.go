package agent

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/store"
)

// statusWriter writes one device-state value per deployment with CAS, only
// when it changed. It holds at most one pending value per deployment (the
// latest wins), so an outage cannot make it grow.
type statusWriter struct {
	device string
	log    *slog.Logger
	wakeCh chan struct{}
	retry  retryPolicy

	mu      sync.Mutex
	want    map[string][]byte // canonical value; nil: delete the key
	written map[string][]byte // what the store holds, as far as we know
	rev     map[string]uint64
}

func newStatusWriter(device string, log *slog.Logger, retry retryPolicy) *statusWriter {
	return &statusWriter{device: device, log: log, wakeCh: make(chan struct{}, 1), retry: retry,
		want: map[string][]byte{}, written: map[string][]byte{}, rev: map[string]uint64{}}
}

func (w *statusWriter) wake() {
	select {
	case w.wakeCh <- struct{}{}:
	default:
	}
}

func (w *statusWriter) set(dep string, s v1.DeviceState) {
	b, err := encodeStatus(s)
	if err != nil {
		w.log.Error("encode status", "err", err)
		return
	}
	w.mu.Lock()
	changed := !bytes.Equal(w.want[dep], b)
	w.want[dep] = b
	w.mu.Unlock()
	if changed {
		w.wake()
	}
}

// encodeStatus encodes s within v1.MaxDeviceStateBytes, which the server's
// decoder enforces. A status too large (hundreds of resources with long
// messages) first loses its conditions' messages, which repeat the
// resources', then has every message cut short; phases, conditions and
// counters always stay.
func encodeStatus(s v1.DeviceState) ([]byte, error) {
	b, err := v1.Marshal(s)
	if err != nil || len(b) <= v1.MaxDeviceStateBytes {
		return b, err
	}
	s.Resources = slices.Clone(s.Resources)
	for i := range s.Resources {
		r := &s.Resources[i]
		r.Conditions = slices.Clone(r.Conditions)
		for j := range r.Conditions {
			r.Conditions[j].Message = ""
		}
	}
	if b, err = v1.Marshal(s); err != nil || len(b) <= v1.MaxDeviceStateBytes {
		return b, err
	}
	for i := range s.Resources {
		s.Resources[i].Message = shorten(s.Resources[i].Message, shortMessageMax)
	}
	return v1.Marshal(s)
}

// shortMessageMax is a resource's message in a status that would be too
// large with the whole messages.
const shortMessageMax = 120

func (w *statusWriter) remove(dep string) {
	w.mu.Lock()
	_, had := w.want[dep]
	if had {
		w.want[dep] = nil
	}
	w.mu.Unlock()
	if had {
		w.wake()
	}
}

// pending returns what differs from the store.
func (w *statusWriter) pending() map[string][]byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string][]byte{}
	for dep, b := range w.want {
		if cur, ok := w.written[dep]; !ok || !bytes.Equal(cur, b) || (b == nil && ok) {
			out[dep] = b
		}
	}
	return out
}

func (w *statusWriter) run(ctx context.Context, kv store.KV) error {
	bo := w.retry.backoff()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	w.wake()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.wakeCh:
		case <-retry.C:
		}
		failed := false
		for dep, b := range w.pending() {
			if err := w.write(ctx, kv, dep, b); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				w.log.Debug("status write failed; will retry", "deployment", dep, "err", err)
				w.retry.retried("status")
				failed = true
			}
		}
		if failed {
			retry.Reset(bo.NextBackOff())
		} else {
			bo.Reset()
		}
	}
}

// write brings one key to b (nil: deleted). A conflict or an unknown outcome
// is resolved by reading the key again, never by writing blindly.
func (w *statusWriter) write(ctx context.Context, kv store.KV, dep string, b []byte) error {
	key := v1.DeviceKey(w.device, dep)
	w.mu.Lock()
	rev, known := w.rev[dep]
	w.mu.Unlock()
	if !known {
		e, err := kv.Get(ctx, key)
		switch {
		case errors.Is(err, store.ErrNotFound):
			rev = 0
		case err != nil:
			return err
		default:
			rev = e.Revision
			if bytes.Equal(e.Value, b) {
				w.done(dep, b, rev)
				return nil
			}
		}
	}
	var err error
	var newRev uint64
	switch {
	case b == nil && rev == 0:
		w.done(dep, nil, 0)
		return nil
	case b == nil:
		err = kv.Delete(ctx, key, rev)
	case rev == 0:
		newRev, err = kv.Create(ctx, key, b)
	default:
		newRev, err = kv.Update(ctx, key, b, rev)
	}
	if err == nil {
		w.done(dep, b, newRev)
		return nil
	}
	if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrOutcomeUnknown) {
		// Forget the revision: the next attempt reads the key first.
		w.mu.Lock()
		delete(w.rev, dep)
		w.mu.Unlock()
	}
	return err
}

func (w *statusWriter) done(dep string, b []byte, rev uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if b == nil {
		delete(w.written, dep)
		delete(w.rev, dep)
		if w.want[dep] == nil {
			delete(w.want, dep)
		}
		return
	}
	w.written[dep] = b
	w.rev[dep] = rev
}

// forgetExcept schedules deletion of status keys of deployments no longer
// desired.
func (w *statusWriter) forgetExcept(keep map[string]bool) {
	w.mu.Lock()
	var drop []string
	for dep := range w.want {
		if !keep[dep] && w.want[dep] != nil {
			drop = append(drop, dep)
		}
	}
	w.mu.Unlock()
	for _, dep := range drop {
		w.remove(dep)
	}
}
