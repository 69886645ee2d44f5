package store

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// Lease is a named claim, held in one key of a bucket, on work that must be
// done by one process at a time (several servers each run the operator, but
// only one of them may collect orphans).
//
// No wall clock is compared across machines. The holder renews by
// compare-and-set on its own last revision every TTL/3. A contender takes
// the key over (compare-and-set on the revision it saw) only after that
// revision has stayed unchanged for a whole TTL on its own monotonic clock,
// counted from its first read of it. The holder counts its claim from the
// moment it sent the renewal that succeeded, before that contender's
// first read could happen, and gives the claim up a quarter of the TTL
// before the TTL runs out; so, as long as the two clocks' rates differ by
// less than that margin, the two never both believe they hold the lease.
// The work the lease guards is compare-and-set as well, so even then
// nothing is done twice.
type Lease struct {
	kv     KV
	key    string
	holder string
	ttl    time.Duration
	log    *slog.Logger
	now    func() time.Time
	ok     func() bool

	mu         sync.Mutex
	rev        uint64    // our revision while we hold the key
	validUntil time.Time // the end of our claim (monotonic reading)
	seenRev    uint64    // a contender's view: the revision of the key
	seenAt     time.Time // when seenRev was first read
}

// LeaseRecord is the value stored in the key (for people reading it: the
// decisions use revisions only).
type LeaseRecord struct {
	Holder    string    `json:"holder"`
	RenewedAt time.Time `json:"renewed_at"`
	TTL       string    `json:"ttl"`
}

// LeaseOptions tune a lease.
type LeaseOptions struct {
	// TTL is how long a claim lasts without renewal (default 6s).
	TTL time.Duration
	// Eligible, when set, says whether this process may hold the lease now
	// (a server whose view is still being rebuilt should not); while it
	// says no, the lease is not taken, and given up if held.
	Eligible func() bool
	Log      *slog.Logger
	// Now reads the clock (time.Now when nil; tests drive their own).
	Now func() time.Time
}

// NewLease returns a lease on key in kv for holder, which must be unique
// per process (a restarted process should use a new one).
func NewLease(kv KV, key, holder string, opts LeaseOptions) *Lease {
	if opts.TTL <= 0 {
		opts.TTL = 6 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Eligible == nil {
		opts.Eligible = func() bool { return true }
	}
	return &Lease{kv: kv, key: key, holder: holder, ttl: opts.TTL, log: opts.Log, now: opts.Now, ok: opts.Eligible}
}

// Held reports whether this process holds the lease now.
func (l *Lease) Held() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rev != 0 && l.now().Before(l.validUntil)
}

// Holder is this process's name in the lease.
func (l *Lease) Holder() string { return l.holder }

// Run tries to take and then keeps the lease until ctx ends, then gives it
// up so that another process can take it at once.
func (l *Lease) Run(ctx context.Context) error {
	tick := time.NewTicker(l.ttl / 3)
	defer tick.Stop()
	for {
		l.Step(ctx)
		select {
		case <-ctx.Done():
			l.release()
			return nil
		case <-tick.C:
		}
	}
}

// Step does one round: renew when held, else create or take over an expired
// claim. Errors only delay: the next round tries again. A round's store
// calls are bounded by a third of the TTL, so that one slow call cannot
// outlast the claim it renews.
func (l *Lease) Step(ctx context.Context) {
	if !l.ok() {
		l.release()
		return
	}
	ctx, cancel := context.WithTimeout(ctx, l.ttl/3)
	defer cancel()
	sent := l.now()
	l.mu.Lock()
	rev := l.rev
	l.mu.Unlock()
	value, _ := json.Marshal(LeaseRecord{Holder: l.holder, RenewedAt: time.Now().UTC(), TTL: l.ttl.String()})

	if rev != 0 {
		newRev, err := l.kv.Update(ctx, l.key, value, rev)
		switch {
		case err == nil:
			l.granted(newRev, sent)
		case errors.Is(err, ErrConflict) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrOutcomeUnknown):
			// Either another process took it, or an earlier renewal of
			// ours landed without its answer: the key says which.
			e, gerr := l.kv.Get(ctx, l.key)
			var rec LeaseRecord
			switch {
			case gerr == nil && json.Unmarshal(e.Value, &rec) == nil && rec.Holder == l.holder:
				// Ours, but from a renewal whose send time is not this
				// round's: renew again from it, counting from now.
				again := l.now()
				if newRev, err := l.kv.Update(ctx, l.key, value, e.Revision); err == nil {
					l.granted(newRev, again)
				}
			case gerr == nil || errors.Is(gerr, ErrNotFound):
				l.lost("another process took the lease")
			}
		}
		// Unavailable: keep the claim until it runs out; the next round retries.
		return
	}

	e, err := l.kv.Get(ctx, l.key)
	switch {
	case errors.Is(err, ErrNotFound):
		if newRev, err := l.kv.Create(ctx, l.key, value); err == nil {
			l.granted(newRev, sent)
		}
		return
	case err != nil:
		return
	}
	var rec LeaseRecord
	_ = json.Unmarshal(e.Value, &rec)
	if rec.Holder == l.holder {
		// Ours from an earlier round whose answer was lost: renew it.
		if newRev, err := l.kv.Update(ctx, l.key, value, e.Revision); err == nil {
			l.granted(newRev, sent)
		}
		return
	}
	l.mu.Lock()
	if e.Revision != l.seenRev {
		l.seenRev, l.seenAt = e.Revision, l.now()
	}
	expired := l.now().Sub(l.seenAt) >= l.ttl
	l.mu.Unlock()
	if !expired {
		return
	}
	if newRev, err := l.kv.Update(ctx, l.key, value, e.Revision); err == nil {
		l.log.Info("took over an expired lease", "lease", l.key, "from", rec.Holder)
		l.granted(newRev, sent)
	}
}

func (l *Lease) granted(rev uint64, sent time.Time) {
	l.mu.Lock()
	was := l.rev != 0
	l.rev, l.validUntil = rev, sent.Add(l.ttl-l.ttl/4)
	l.mu.Unlock()
	if !was {
		l.log.Info("holding lease", "lease", l.key, "holder", l.holder)
	}
}

func (l *Lease) lost(why string) {
	l.mu.Lock()
	was := l.rev != 0
	l.rev, l.validUntil, l.seenRev = 0, time.Time{}, 0
	l.mu.Unlock()
	if was {
		l.log.Warn("lease lost", "lease", l.key, "reason", why)
	}
}

// release deletes the key if this process still holds it.
func (l *Lease) release() {
	l.mu.Lock()
	rev := l.rev
	l.rev, l.validUntil = 0, time.Time{}
	l.mu.Unlock()
	if rev == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := l.kv.Delete(ctx, l.key, rev); err == nil {
		l.log.Info("lease released", "lease", l.key)
	}
}
