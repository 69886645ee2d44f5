package fleetbench

import (
	"context"
	"fmt"
	"sync"
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/store"
)

// stateWatch follows the device-state bucket and records when each device
// reports each deployment succeeded at each generation.
type stateWatch struct {
	cancel  context.CancelFunc
	done    chan struct{}
	devices []string

	mu   sync.Mutex
	seen map[string]map[string]seenAt // device -> deployment -> latest success
	kick chan struct{}
}

type seenAt struct {
	gen int64
	at  time.Time
}

func newStateWatch(ctx context.Context, st store.Store, bucket string, devices []string) (*stateWatch, error) {
	kv, err := st.Open(ctx, bucket)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(ctx)
	w, err := kv.Watch(wctx, "", store.WatchOptions{})
	if err != nil {
		cancel()
		return nil, err
	}
	s := &stateWatch{cancel: cancel, done: make(chan struct{}), devices: devices, seen: map[string]map[string]seenAt{}, kick: make(chan struct{}, 1)}
	go func() {
		defer close(s.done)
		for ev := range w.Events() {
			if ev.Replayed || ev.Entry.Op != store.OpPut {
				continue
			}
			now := time.Now()
			ds, err := v1.DecodeDeviceState(ev.Entry.Value)
			if err != nil || ds.Phase != v1.PhaseReady {
				continue
			}
			s.mu.Lock()
			m := s.seen[ds.Device]
			if m == nil {
				m = map[string]seenAt{}
				s.seen[ds.Device] = m
			}
			if m[ds.Deployment].gen < ds.ObservedGeneration {
				m[ds.Deployment] = seenAt{gen: ds.ObservedGeneration, at: now}
			}
			s.mu.Unlock()
			select {
			case s.kick <- struct{}{}:
			default:
			}
		}
	}()
	return s, nil
}

func (s *stateWatch) stop() { s.cancel(); <-s.done }

// wait returns, per device, the time from t0 until it reported every
// deployment want gives it (deployment -> generation) succeeded.
func (s *stateWatch) wait(ctx context.Context, want func(device string) map[string]int64, t0 time.Time, timeout time.Duration) (Latencies, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		lat, missing := s.check(want, t0)
		if missing == 0 {
			return lat, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline.C:
			return nil, fmt.Errorf("%d of %d devices not succeeded after %s", missing, len(s.devices), timeout)
		case <-s.kick:
		}
	}
}

func (s *stateWatch) check(want func(string) map[string]int64, t0 time.Time) (Latencies, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	lat := make(Latencies, 0, len(s.devices))
	missing := 0
	for _, d := range s.devices {
		var last time.Time
		done := true
		for dep, gen := range want(d) {
			got := s.seen[d][dep]
			if got.gen < gen {
				done = false
				break
			}
			if got.at.After(last) {
				last = got.at
			}
		}
		if !done {
			missing++
			continue
		}
		lat = append(lat, last.Sub(t0))
	}
	return lat, missing
}
