package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/harmony-fleet/harmony/internal/store"
)

// ClientOptions tune a device's relay client.
type ClientOptions struct {
	// Device is the device's id: requests go to Subject(Device).
	Device string
	// Timeout bounds each call whose context has no deadline
	// (store.DefaultTimeout when zero).
	Timeout time.Duration
	// Republish says, per bucket, where the bucket republishes its writes
	// (a watch follows those subjects); a bucket not named cannot be watched.
	Republish map[string]string
	// RepublishOf, when set, is asked about a bucket Republish does not
	// name (the failover bucket of a cluster declared later).
	RepublishOf func(bucket string) (string, bool)
	// Recheck is how often a watch reads its keys again (0: never).
	Recheck time.Duration
	// OnSpread, when set, hears the reconnection window the control
	// plane advertises (HdrSpread).
	OnSpread func(time.Duration)
}

// maxSpread bounds the reconnection window a device takes from the
// control plane.
const maxSpread = time.Minute

// Client is a store.Store whose every call is a relay request.
type Client struct {
	nc   *nats.Conn
	opts ClientOptions
}

var _ store.Store = (*Client)(nil)

// NewClient returns a relay client over nc, which the caller owns.
func NewClient(nc *nats.Conn, opts ClientOptions) *Client {
	if opts.Timeout <= 0 {
		opts.Timeout = store.DefaultTimeout
	}
	return &Client{nc: nc, opts: opts}
}

// Ensure is not for devices: the control plane makes the buckets.
func (c *Client) Ensure(ctx context.Context, cfg store.BucketConfig) (store.KV, error) {
	return nil, fmt.Errorf("relay: ensure %s: %w: a device cannot make buckets", cfg.Name, store.ErrRefused)
}

// Open asks the control plane whether the bucket is there and the device
// may use it.
func (c *Client) Open(ctx context.Context, bucket string) (store.KV, error) {
	k := &clientKV{c: c, bucket: bucket}
	if _, err := k.call(ctx, OpOpen, "", 0, nil, false); err != nil {
		return nil, err
	}
	return k, nil
}

type clientKV struct {
	c      *Client
	bucket string
}

var _ store.KV = (*clientKV)(nil)

func (k *clientKV) Bucket() string { return k.bucket }

// call sends one request; write says whether a lost answer leaves the
// outcome unknown.
func (k *clientKV) call(ctx context.Context, op, key string, rev uint64, value []byte, write bool) (*nats.Msg, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, k.c.opts.Timeout)
		defer cancel()
	}
	m := nats.NewMsg(Subject(k.c.opts.Device))
	m.Header.Set(HdrOp, op)
	m.Header.Set(HdrBucket, k.bucket)
	m.Header.Set(HdrKey, key)
	if rev > 0 {
		m.Header.Set(HdrRevision, strconv.FormatUint(rev, 10))
	}
	m.Data = value
	ans, err := k.c.nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		class := store.ErrUnavailable
		if write && !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, nats.ErrMaxPayload) {
			class = store.ErrOutcomeUnknown
		}
		if errors.Is(err, nats.ErrMaxPayload) {
			class = store.ErrValueTooLarge
		}
		return nil, fmt.Errorf("store: %s %s/%s (relayed): %w: %w", op, k.bucket, key, class, err)
	}
	if code := ans.Header.Get(HdrError); code != "" {
		return nil, fmt.Errorf("store: %s %s/%s (relayed): %w: %s", op, k.bucket, key, classOf(code), ans.Header.Get(HdrMessage))
	}
	if v := ans.Header.Get(HdrSpread); v != "" && k.c.opts.OnSpread != nil {
		if ms, err := strconv.ParseInt(v, 10, 64); err == nil && ms >= 0 {
			k.c.opts.OnSpread(time.Duration(min(ms, maxSpread.Milliseconds())) * time.Millisecond)
		}
	}
	return ans, nil
}

func revisionOf(m *nats.Msg) (uint64, error) {
	rev, err := strconv.ParseUint(m.Header.Get(HdrRevision), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("store: relay answer without a revision: %w", store.ErrUnavailable)
	}
	return rev, nil
}

// Beat sends a heartbeat on key (the device's own heartbeat key): the
// control plane answers it from memory and records it in its presence
// records (OpBeat). A control plane that keeps heartbeats as keys refuses
// it with store.ErrRefused; write the key then.
func (k *clientKV) Beat(ctx context.Context, key string, value []byte) error {
	_, err := k.call(ctx, OpBeat, key, 0, value, false)
	return err
}

func (k *clientKV) Get(ctx context.Context, key string) (store.Entry, error) {
	ans, err := k.call(ctx, OpGet, key, 0, nil, false)
	if err != nil {
		return store.Entry{}, err
	}
	rev, err := revisionOf(ans)
	if err != nil {
		return store.Entry{}, err
	}
	created, _ := time.Parse(time.RFC3339Nano, ans.Header.Get(HdrCreated))
	return store.Entry{Key: key, Value: ans.Data, Revision: rev, Created: created, Op: store.OpPut}, nil
}

func (k *clientKV) Create(ctx context.Context, key string, value []byte) (uint64, error) {
	ans, err := k.call(ctx, OpCreate, key, 0, value, true)
	if err != nil {
		return 0, err
	}
	return revisionOf(ans)
}

func (k *clientKV) Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	if revision == 0 {
		return 0, fmt.Errorf("store: update %s/%s: %w: update needs the revision it replaces", k.bucket, key, store.ErrConflict)
	}
	ans, err := k.call(ctx, OpUpdate, key, revision, value, true)
	if err != nil {
		return 0, err
	}
	return revisionOf(ans)
}

func (k *clientKV) Delete(ctx context.Context, key string, revision uint64) error {
	_, err := k.call(ctx, OpDelete, key, revision, nil, true)
	return err
}

func (k *clientKV) List(ctx context.Context, filter string) ([]store.Entry, error) {
	return k.entries(ctx, OpList, filter)
}

func (k *clientKV) History(ctx context.Context, key string) ([]store.Entry, error) {
	return k.entries(ctx, OpHistory, key)
}

// entries asks for a list or a history, then reads one by one the values
// the answer had no room for.
func (k *clientKV) entries(ctx context.Context, op, key string) ([]store.Entry, error) {
	ans, err := k.call(ctx, op, key, 0, nil, false)
	if err != nil {
		return nil, err
	}
	var la listAnswer
	if err := json.Unmarshal(ans.Data, &la); err != nil {
		return nil, fmt.Errorf("store: %s %s/%s (relayed): %w: unreadable answer: %w", op, k.bucket, key, store.ErrUnavailable, err)
	}
	out := make([]store.Entry, 0, len(la.Entries))
	for _, w := range la.Entries {
		e := store.Entry{Key: w.Key, Value: w.Value, Revision: w.Revision, Created: w.Created, Op: store.OpPut}
		if w.Deleted {
			e.Op, e.Value = store.OpDelete, nil
		}
		if w.Omitted {
			got, err := k.Get(ctx, w.Key)
			if errors.Is(err, store.ErrNotFound) {
				continue // deleted meanwhile
			}
			if err != nil {
				return nil, err
			}
			if op == OpHistory && got.Revision != w.Revision {
				return nil, fmt.Errorf("store: history %s/%s (relayed): %w: a value too large to list changed meanwhile", k.bucket, key, store.ErrUnavailable)
			}
			e = got
		}
		out = append(out, e)
	}
	return out, nil
}

// Watch follows the bucket's republished writes (store.WatchRepublished),
// reading its keys through the relay. Resuming from a revision and
// updates-only watches need a consumer, which a device may not make.
func (k *clientKV) Watch(ctx context.Context, filter string, opts store.WatchOptions) (store.Watcher, error) {
	prefix, ok := k.c.opts.Republish[k.bucket]
	if !ok && k.c.opts.RepublishOf != nil {
		prefix, ok = k.c.opts.RepublishOf(k.bucket)
	}
	if !ok || opts.ResumeFrom > 0 || opts.UpdatesOnly {
		return nil, fmt.Errorf("store: watch %s/%s (relayed): %w: only a republished bucket can be watched, from its current values", k.bucket, filter, store.ErrRefused)
	}
	if filter == "" {
		filter = ">"
	}
	return store.WatchRepublished(ctx, k.c.nc, store.Republished{Bucket: k.bucket, Prefix: prefix,
		Recheck: k.c.opts.Recheck, Timeout: k.c.opts.Timeout}, k, filter)
}
