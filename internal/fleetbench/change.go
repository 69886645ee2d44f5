package fleetbench

// The change step: deployment 0 (every device's) gets a new generation,
// at once or, with Config.RolloutBatches, batch by batch
// (docs/operator.md "Rolling out in batches"); the bench then times each
// batch from the rollout status the API answers.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/harmony-fleet/harmony/api/httpapi"
	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
)

const (
	// rolloutPoll is how often the bench asks for the rollout status
	// during a batched change: a batch's time is known to this much.
	rolloutPoll = 150 * time.Millisecond
	// pollProbe is how many status requests, back to back after the
	// change, measure what one costs the server.
	pollProbe = 50
	// changeGen is the generation the change gives deployment 0.
	changeGen = 2
)

// rolloutPercents are the batches of a rollout in n batches: n-1 of
// ⌈100/n⌉ percent, then 100 (the rest).
func rolloutPercents(n int) []int {
	if n < 1 {
		return nil
	}
	p := make([]int, n)
	for i := range p {
		p[i] = (100 + n - 1) / n
	}
	p[n-1] = 100
	return p
}

// rolloutYAML is deployment 0's spec.rollout for n batches ("" when n is
// 0), indented under spec; the gate passes a device as soon as it reports
// the new generation Ready.
func rolloutYAML(n int) string {
	if n < 1 {
		return ""
	}
	var bs []string
	for _, p := range rolloutPercents(n) {
		bs = append(bs, fmt.Sprintf("{percent: %d}", p))
	}
	return "  rollout:\n    batches: [" + strings.Join(bs, ", ") + "]\n    gate: {readyForSeconds: 0}\n"
}

// batchClock is what the bench saw of one rollout, poll by poll: when
// each batch was first seen Done.
type batchClock struct {
	start   time.Time   // the apply
	done    []time.Time // per batch; zero: not seen Done yet
	devices []int       // per batch
	polls   int
}

// errRolloutStopped: the rollout paused or rolled back (a batch failed its
// gate, or a person paused it); the run fails with the reason.
var errRolloutStopped = errors.New("rollout stopped")

// observe records status s, seen at t, of the rollout to generation gen,
// and reports whether it has succeeded. Statuses of an earlier generation
// (the operator has not seen the change yet) and Pending ones say nothing.
func (c *batchClock) observe(s v1.RolloutStatus, gen int64, t time.Time) (bool, error) {
	c.polls++
	switch {
	case s.Generation > gen:
		return false, fmt.Errorf("deployment %s is at generation %d, past %d: changed by someone else", s.Name, s.Generation, gen)
	case s.Generation < gen || s.To != gen || s.Phase == v1.RolloutPending || s.Phase == "":
		return false, nil
	case s.Phase == v1.RolloutPaused || s.Phase == v1.RolloutRolledBack:
		return false, fmt.Errorf("%w: %s at batch %d of %d: %s", errRolloutStopped, s.Phase, s.Batch, len(s.Batches), s.Reason)
	}
	if c.done == nil {
		c.done = make([]time.Time, len(s.Batches))
		c.devices = make([]int, len(s.Batches))
	}
	if len(s.Batches) != len(c.done) {
		return false, fmt.Errorf("rollout of %s: %d batches, then %d", s.Name, len(c.done), len(s.Batches))
	}
	for i, b := range s.Batches {
		c.devices[i] = b.Devices
		if (b.State == v1.BatchDone || s.Phase == v1.RolloutSucceeded) && c.done[i].IsZero() {
			c.done[i] = t
		}
	}
	return s.Phase == v1.RolloutSucceeded, nil
}

// durations is each batch's time, up to the last seen Done in order: the
// first from the apply, each next from the previous one's Done.
func (c *batchClock) durations() []time.Duration {
	var out []time.Duration
	prev := c.start
	for _, t := range c.done {
		if t.IsZero() {
			break
		}
		out = append(out, t.Sub(prev))
		prev = t
	}
	return out
}

// seenDone is how many batches, in order, have been seen Done.
func (c *batchClock) seenDone() int { return len(c.durations()) }

// change gives deployment 0 generation 2 and waits until every device
// reports it succeeded and the roll-up counts them; with batches, also
// until the rollout status says Succeeded, timing each batch.
func (b *bench) change(ctx context.Context, states *stateWatch) error {
	cpu0 := b.serverCPU()
	t0 := time.Now()
	if err := b.applyOne(0, "two"); err != nil {
		return err
	}
	var lat Latencies
	wait := func(ctx context.Context) error {
		var err error
		lat, err = states.wait(ctx, func(string) map[string]int64 { return map[string]int64{depName(0): changeGen} }, t0, b.cfg.Timeout)
		if err != nil {
			return err
		}
		return b.waitRollup(ctx, []*member{b.api}, b.rolledOut(1, changeGen))
	}
	if b.cfg.RolloutBatches == 0 {
		if err := wait(ctx); err != nil {
			return err
		}
	} else {
		api, err := b.client()
		if err != nil {
			return err
		}
		clock := &batchClock{start: t0}
		g, gctx := errgroup.WithContext(ctx)
		g.Go(func() error { return b.watchRollout(gctx, api, clock) })
		g.Go(func() error { return wait(gctx) })
		err = g.Wait()
		b.res.Batches, b.res.BatchDevices, b.res.StatusPolls = clock.durations(), clock.devices, clock.polls
		if err != nil {
			return err
		}
	}
	b.res.ChangeTotal, b.res.Change = time.Since(t0), lat
	b.res.ChangeCPU = b.serverCPU() - cpu0
	b.say("change one deployment: the roll-up counts every device succeeded after %s (per device p50 %s, p99 %s); server CPU %s",
		b.res.ChangeTotal.Round(time.Millisecond), lat.Quantile(0.5).Round(time.Millisecond), lat.Quantile(0.99).Round(time.Millisecond),
		b.res.ChangeCPU.Round(time.Millisecond))
	if b.cfg.RolloutBatches > 0 {
		return b.probePolls(ctx)
	}
	return nil
}

// watchRollout polls deployment 0's rollout status every rolloutPoll until
// it has succeeded, saying when each batch is seen Done.
func (b *bench) watchRollout(ctx context.Context, api *httpapi.Client, clock *batchClock) error {
	deadline := clock.start.Add(b.cfg.Timeout)
	var lastErr error
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		s, err := api.Rollout(cctx, depName(0))
		cancel()
		if err == nil {
			before := clock.seenDone()
			succeeded, err := clock.observe(s, changeGen, time.Now())
			if err != nil {
				return err
			}
			d := clock.durations()
			for i := before; i < len(d); i++ {
				b.say("rollout batch %d of %d (%d devices) done after %s", i+1, len(clock.done), clock.devices[i], d[i].Round(time.Millisecond))
			}
			if succeeded {
				return nil
			}
			lastErr = fmt.Errorf("phase %s, batch %d of %d", s.Phase, s.Batch, len(s.Batches))
		} else if ctx.Err() == nil {
			lastErr = err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("rollout not succeeded after %s: %v", b.cfg.Timeout, lastErr)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(rolloutPoll):
		}
	}
}

// probePolls measures what one rollout status request costs the server:
// pollProbe of them back to back, after the change. A status of a
// finished rollout judges every device, one in progress only those
// released: this is the most one costs.
func (b *bench) probePolls(ctx context.Context) error {
	api, err := b.client()
	if err != nil {
		return err
	}
	cpu0 := b.serverCPU()
	for range pollProbe {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := api.Rollout(cctx, depName(0))
		cancel()
		if err != nil {
			return fmt.Errorf("rollout status: %w", err)
		}
	}
	b.res.StatusPollCPU = (b.serverCPU() - cpu0) / pollProbe
	b.say("%d rollout status requests during the change; one costs the server %.2f ms of CPU (%d back to back after it)",
		b.res.StatusPolls, float64(b.res.StatusPollCPU)/float64(time.Millisecond), pollProbe)
	return nil
}

// client is the typed API client of the server the bench asks, trusting
// the servers' CA.
func (b *bench) client() (*httpapi.Client, error) {
	var tc *tls.Config
	if t, ok := b.http.Transport.(*http.Transport); ok {
		tc = t.TLSClientConfig
	}
	return httpapi.New(b.scheme+"://"+b.api.http, b.token, tc)
}
