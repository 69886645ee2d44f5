package store

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// A bucket made with BucketConfig.Republish has every write published
// again, once stored, on <prefix>.<key> (a plain subject, with the stream's
// sequence in the Nats-Sequence header). A watch of such a bucket, on a
// store opened with NATSOptions.WatchRepublished, follows those subjects
// with an ordinary subscription after reading the current values once
// (List), instead of holding a JetStream consumer for its whole life:
// ten thousand devices each watching their keys otherwise keep ten
// thousand consumers, each woken (and scanning the stream) at every write
// to the bucket (docs/adr/0012-fleet-scale.md).
//
// Core NATS delivers at most once: the watch ends with ErrUnavailable when
// the connection drops or the subscription overflows, and the caller
// watches again (reading the values again). And in a cluster a write can
// slip between the two reads: committed (and republished) before the
// subscription's interest reached the stream's leader, and not yet applied
// on the replica that serves the first read. So the watch reads its keys
// again every NATSOptions.RepublishRecheck (jittered), delivering what it
// missed.

// Reader reads the keys a republished watch follows: its first read and
// its periodic re-reads.
type Reader interface {
	Get(ctx context.Context, key string) (Entry, error)
	List(ctx context.Context, filter string) ([]Entry, error)
}

// Republished names the subjects a bucket republishes its writes on.
type Republished struct {
	Bucket string
	// Prefix: writes come on <Prefix>.<key>.
	Prefix string
	// Recheck is how often the keys are read again (0: never).
	Recheck time.Duration
	// Timeout bounds the flush that makes the subscription's interest known.
	Timeout time.Duration
}

// republishWatch is Watch over the republished subjects.
func (k *natsKV) republishWatch(ctx context.Context, filter string) (Watcher, error) {
	return WatchRepublished(ctx, k.s.nc, Republished{Bucket: k.bucket, Prefix: k.republish,
		Recheck: k.s.republishRecheck, Timeout: k.s.timeout}, directReader{k}, filter)
}

// directReader reads a watch's keys with one batched direct get (no
// consumer made and deleted on the server per read: ten thousand agents
// re-reading their keys after a restart would otherwise each make one),
// and with a consumer when they do not fit one answer. A direct get may
// lag a replicated bucket's leader by a moment, which the watch's
// re-reads cover.
type directReader struct{ k *natsKV }

func (r directReader) Get(ctx context.Context, key string) (Entry, error) { return r.k.Get(ctx, key) }

func (r directReader) List(ctx context.Context, filter string) ([]Entry, error) {
	es, err := r.k.ListDirect(ctx, filter)
	if errors.Is(err, ErrTooManyToList) {
		return r.k.List(ctx, filter)
	}
	return es, err
}

// WatchRepublished follows the keys matching filter of a bucket that
// republishes its writes (BucketConfig.Republish): a plain subscription to
// the republished subjects, the first values and the periodic re-reads
// read with r. Only what the bucket's stream republished is taken (see
// republished), so a client that may publish on those subjects, or a
// consumer delivering to them, cannot forge a write.
func WatchRepublished(ctx context.Context, nc *nats.Conn, rp Republished, r Reader, filter string) (Watcher, error) {
	if !ValidFilter(filter) {
		return nil, opError("watch", rp.Bucket, filter, ErrInvalidKey, nil)
	}
	if rp.Timeout <= 0 {
		rp.Timeout = DefaultTimeout
	}
	k := republishedKeys{bucket: rp.Bucket, stream: "KV_" + rp.Bucket, prefix: "$KV." + rp.Bucket + ".", republish: rp.Prefix}
	status := nc.StatusChanged(nats.DISCONNECTED, nats.RECONNECTING, nats.CLOSED)
	live := make(chan *nats.Msg, 256)
	// Subscribe first, then read the values: a write between the two is
	// seen twice (and dropped by revision), never missed.
	sub, err := nc.ChanSubscribe(k.republish+"."+filter, live)
	if err != nil {
		nc.RemoveStatusListener(status)
		return nil, opError("watch", k.bucket, filter, classify(err, false), err)
	}
	cleanup := func() { _ = sub.Unsubscribe(); nc.RemoveStatusListener(status) }
	if err := nc.FlushTimeout(rp.Timeout); err != nil {
		cleanup()
		return nil, opError("watch", k.bucket, filter, ErrUnavailable, err)
	}
	current, err := r.List(ctx, filter)
	if err != nil {
		cleanup()
		return nil, err
	}
	w := &natsWatcher{events: make(chan Event, 64)}
	go func() {
		defer close(w.events)
		defer cleanup()
		seen := map[string]uint64{} // key -> revision delivered
		send := func(ev Event) bool {
			select {
			case w.events <- ev:
				return true
			case <-ctx.Done():
				return false
			}
		}
		for _, e := range current {
			seen[e.Key] = e.Revision
			if !send(Event{Entry: e}) {
				return
			}
		}
		if !send(Event{Replayed: true}) {
			return
		}
		fail := func(why string) {
			w.err = opError("watch", k.bucket, filter, ErrUnavailable, errors.New(why))
		}
		var recheck <-chan time.Time
		if every := rp.Recheck; every > 0 {
			t := time.NewTicker(every + time.Duration(rand.Int64N(int64(every)/5+1)))
			defer t.Stop()
			recheck = t.C
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-recheck:
				again, err := r.List(ctx, filter)
				if err != nil {
					fail("reading the keys again: " + err.Error())
					return
				}
				now := map[string]bool{}
				for _, e := range again {
					now[e.Key] = true
					if e.Revision > seen[e.Key] {
						seen[e.Key] = e.Revision
						if !send(Event{Entry: e}) {
							return
						}
					}
				}
				for key := range seen {
					if !now[key] { // deleted, and the delete was missed?
						// A re-read may come from a lagging replica: only a
						// key the store says is gone is reported deleted.
						if _, err := r.Get(ctx, key); !errors.Is(err, ErrNotFound) {
							continue
						}
						delete(seen, key)
						if !send(Event{Entry: Entry{Key: key, Op: OpDelete}}) {
							return
						}
					}
				}
			case <-status:
				fail("the connection dropped: republished writes may have been missed")
				return
			case m := <-live:
				if n, _ := sub.Dropped(); n > 0 {
					fail("the subscription overflowed: republished writes were dropped")
					return
				}
				e, ok := k.republished(m)
				if !ok || e.Revision <= seen[e.Key] {
					continue
				}
				seen[e.Key] = e.Revision
				if !send(Event{Entry: e}) {
					return
				}
			}
		}
	}()
	return w, nil
}

// republishedKeys says where a bucket's keys live and are republished.
type republishedKeys struct{ bucket, stream, prefix, republish string }

// republished reads a republished write as an entry. Only what the
// bucket's stream republished is taken: no reply subject (a consumer's
// delivery has one), and exactly one stream and original-subject header,
// naming this bucket's stream and the key (a message published with such
// headers of its own would carry them twice).
func (k republishedKeys) republished(m *nats.Msg) (Entry, bool) {
	key, ok := strings.CutPrefix(m.Subject, k.republish+".")
	if !ok || m.Reply != "" || !ValidKey(key) {
		return Entry{}, false
	}
	if v := m.Header.Values(nats.JSStream); len(v) != 1 || v[0] != k.stream {
		return Entry{}, false
	}
	if v := m.Header.Values(nats.JSSubject); len(v) != 1 || v[0] != k.prefix+key {
		return Entry{}, false
	}
	if len(m.Header.Values(nats.JSSequence)) != 1 {
		return Entry{}, false
	}
	rev, err := strconv.ParseUint(m.Header.Get(nats.JSSequence), 10, 64)
	if err != nil || rev == 0 {
		return Entry{}, false
	}
	e := Entry{Key: key, Value: m.Data, Revision: rev, Op: OpPut}
	if t, err := time.Parse(time.RFC3339Nano, m.Header.Get(nats.JSTimeStamp)); err == nil {
		e.Created = t
	}
	switch m.Header.Get("KV-Operation") {
	case "DEL", "PURGE":
		e.Op, e.Value = OpDelete, nil
	}
	return e, true
}
