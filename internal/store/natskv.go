package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultTimeout bounds every call whose context has no deadline of its own.
const DefaultTimeout = 5 * time.Second

// NATSOptions tune the NATS-backed store.
type NATSOptions struct {
	// Timeout bounds each call whose context has no deadline (DefaultTimeout
	// when zero).
	Timeout time.Duration
	// DirectGet makes Get ask with the key in the request subject
	// ($JS.API.DIRECT.GET.<stream>.<subject>), which NATS permissions can
	// limit to a client's own keys (a device identity), instead of the
	// stream leader's message get, whose subject is in the body. Any
	// replica may answer: in a replicated bucket the answer can lag the
	// leader by a moment, so this relaxes Get's contract for such clients,
	// who decide with compare-and-set anyway (a stale read is a conflict
	// and a re-read).
	DirectGet bool
	// WatchRepublished makes watches of buckets that republish their
	// writes (BucketConfig.Republish) follow the republished subjects
	// instead of holding a JetStream consumer (republish.go). For clients
	// that watch a few keys each and are many (agents).
	WatchRepublished bool
	// RepublishRecheck is how often such a watch reads its keys again, to
	// deliver a write it may have missed (0: never).
	RepublishRecheck time.Duration
}

// NATS is the Store backed by JetStream key-value buckets.
type NATS struct {
	nc        *nats.Conn
	js        jetstream.JetStream
	timeout   time.Duration
	directGet bool
	// watchRepublished, republishRecheck: see NATSOptions.
	watchRepublished bool
	republishRecheck time.Duration

	mu  sync.Mutex
	kvs map[string]*natsKV
}

var _ Store = (*NATS)(nil)

// NewNATS returns a store using the connection nc, which the caller owns and
// closes after it is done with the store.
func NewNATS(nc *nats.Conn, opts NATSOptions) (*NATS, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("store: jetstream: %w", err)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	return &NATS{nc: nc, js: js, timeout: opts.Timeout, directGet: opts.DirectGet, watchRepublished: opts.WatchRepublished, republishRecheck: opts.RepublishRecheck, kvs: map[string]*natsKV{}}, nil
}

func (s *NATS) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, s.timeout)
}

// Ensure implements Store.
func (s *NATS) Ensure(ctx context.Context, cfg BucketConfig) (KV, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	want := streamConfig(cfg)
	st, err := s.js.Stream(ctx, want.Name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		if _, err := s.js.CreateStream(ctx, want); err != nil {
			if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				return nil, fmt.Errorf("store: create bucket %s: %w: %w", cfg.Name, classify(err, false), err)
			}
			// Someone else created it meanwhile: check theirs.
			if st, err = s.js.Stream(ctx, want.Name); err != nil {
				return nil, fmt.Errorf("store: bucket %s: %w: %w", cfg.Name, classify(err, false), err)
			}
			if err := compareStream(cfg, st.CachedInfo().Config); err != nil {
				return nil, err
			}
		}
	case err != nil:
		return nil, fmt.Errorf("store: bucket %s: %w: %w", cfg.Name, classify(err, false), err)
	default:
		got := st.CachedInfo().Config
		if err := compareStream(cfg, got); err != nil {
			return nil, err
		}
		update := false
		if fmt.Sprint(got.RePublish) != fmt.Sprint(want.RePublish) && want.RePublish != nil {
			// Made before republishing: add it.
			got.RePublish, update = want.RePublish, true
		}
		if want.MaxBytes > 0 && got.MaxBytes != want.MaxBytes {
			got.MaxBytes, update = want.MaxBytes, true
		}
		if got.AllowRollup || !got.DenyPurge {
			// Made when buckets took rollups (nats.go's default): refuse
			// them from now on.
			got.AllowRollup, got.DenyPurge, update = false, true, true
		}
		if update {
			if _, err := s.js.UpdateStream(ctx, got); err != nil {
				return nil, fmt.Errorf("store: bucket %s: update its stream: %w: %w", cfg.Name, classify(err, false), err)
			}
		}
	}
	kv, err := s.bind(ctx, cfg.Name)
	if errors.Is(err, ErrBucketNotFound) {
		// It was there (or made) a moment ago: in a cluster that is still
		// forming, the member asked may not know it yet. Try again later.
		return nil, fmt.Errorf("store: bucket %s: %w: %w", cfg.Name, ErrUnavailable, err)
	}
	return kv, err
}

// Open implements Store.
func (s *NATS) Open(ctx context.Context, bucket string) (KV, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	return s.bind(ctx, bucket)
}

func (s *NATS) bind(ctx context.Context, bucket string) (*natsKV, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if kv, ok := s.kvs[bucket]; ok {
		return kv, nil
	}
	kv, err := s.js.KeyValue(ctx, bucket)
	if err != nil {
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, fmt.Errorf("store: open %s: %w", bucket, ErrBucketNotFound)
		}
		return nil, fmt.Errorf("store: open %s: %w: %w", bucket, classify(err, false), err)
	}
	k := &natsKV{s: s, kv: kv, bucket: bucket, stream: "KV_" + bucket, prefix: "$KV." + bucket + "."}
	if s.watchRepublished {
		if st, err := kv.Status(ctx); err == nil {
			if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok && bs.StreamInfo() != nil {
				if rp := bs.StreamInfo().Config.RePublish; rp != nil && rp.Source == "$KV."+bucket+".>" && strings.HasSuffix(rp.Destination, ".>") {
					k.republish = strings.TrimSuffix(rp.Destination, ".>")
				}
			}
		}
	}
	s.kvs[bucket] = k
	return k, nil
}

func (c BucketConfig) validate() error {
	var problems []string
	if !validBucket(c.Name) {
		problems = append(problems, fmt.Sprintf("name %q: only letters, digits, '-' and '_'", c.Name))
	}
	if c.History < 1 || c.History > 64 {
		problems = append(problems, fmt.Sprintf("history %d: must be 1..64", c.History))
	}
	if c.Replicas != 1 && c.Replicas != 3 && c.Replicas != 5 {
		problems = append(problems, fmt.Sprintf("replicas %d: must be 1, 3 or 5", c.Replicas))
	}
	if len(problems) > 0 {
		return fmt.Errorf("store: bucket config: %s", strings.Join(problems, "; "))
	}
	return nil
}

// streamConfig is the stream behind a KV bucket, as nats.go's KV layer lays it
// out (so the bucket binds as a normal KV), plus Harmony's persistence choice,
// which the KV API cannot express.
func streamConfig(c BucketConfig) jetstream.StreamConfig {
	maxMsg := int32(-1)
	if c.MaxValueSize > 0 {
		maxMsg = c.MaxValueSize
	}
	sc := jetstream.StreamConfig{
		Name:              "KV_" + c.Name,
		Description:       c.Description,
		Subjects:          []string{"$KV." + c.Name + ".>"},
		MaxMsgsPerSubject: int64(c.History),
		MaxBytes:          -1,
		MaxMsgSize:        maxMsg,
		Storage:           jetstream.FileStorage,
		Replicas:          c.Replicas,
		// No rollups and no purges: a rollup header (Nats-Rollup: all) on
		// one key's write, or a purge request, would erase every key of the
		// bucket without a per-key event. Harmony deletes with markers.
		AllowRollup:  false,
		DenyPurge:    true,
		DenyDelete:   true,
		Duplicates:   2 * time.Minute,
		MaxMsgs:      -1,
		MaxConsumers: -1,
		AllowDirect:  true,
		Discard:      jetstream.DiscardNew,
	}
	if c.MaxWatchers > 0 {
		sc.MaxConsumers = c.MaxWatchers
	}
	if c.MaxBytes > 0 {
		sc.MaxBytes = c.MaxBytes
	}
	if c.AsyncPersist && c.Replicas == 1 {
		sc.PersistMode = jetstream.AsyncPersistMode
	}
	if c.Republish != "" {
		sc.RePublish = &jetstream.RePublish{Source: "$KV." + c.Name + ".>", Destination: c.Republish + ".>"}
	}
	return sc
}

// compareStream lists how an existing bucket differs from what cfg needs.
func compareStream(cfg BucketConfig, got jetstream.StreamConfig) error {
	want := streamConfig(cfg)
	var d []string
	diff := func(what string, want, got any) {
		if fmt.Sprint(want) != fmt.Sprint(got) {
			d = append(d, fmt.Sprintf("%s is %v, want %v", what, got, want))
		}
	}
	diff("history", want.MaxMsgsPerSubject, got.MaxMsgsPerSubject)
	diff("replicas", want.Replicas, got.Replicas)
	diff("storage", want.Storage, got.Storage)
	diff("max value size", want.MaxMsgSize, got.MaxMsgSize)
	diff("subjects", want.Subjects, got.Subjects)
	// Asynchronous persistence is asked for data that can be rebuilt; a
	// bucket made before that keeps syncing every write (nats-server cannot
	// change a stream's persist mode), which is only slower.
	if !(cfg.AsyncPersist && got.PersistMode == jetstream.DefaultPersistMode) {
		diff("persist mode", want.PersistMode, got.PersistMode)
	}
	diff("max age (TTL)", want.MaxAge, got.MaxAge)
	diff("discard policy", want.Discard, got.Discard)
	if len(d) > 0 {
		return &IncompatibleBucketError{Bucket: cfg.Name, Differences: d}
	}
	return nil
}

type natsKV struct {
	s      *NATS
	kv     jetstream.KeyValue
	bucket string
	stream string
	prefix string
	// republish is the subject prefix the bucket republishes its writes
	// on, when the store follows those ("" otherwise).
	republish string
}

var _ KV = (*natsKV)(nil)

func (k *natsKV) Bucket() string { return k.bucket }

// msgGetResponse is the answer of the stream leader's message-get API.
type msgGetResponse struct {
	Error *struct {
		Code        int    `json:"code"`
		ErrCode     uint16 `json:"err_code"`
		Description string `json:"description"`
	} `json:"error,omitempty"`
	Message *struct {
		Subject  string    `json:"subject"`
		Sequence uint64    `json:"seq"`
		Header   []byte    `json:"hdrs,omitempty"`
		Data     []byte    `json:"data,omitempty"`
		Time     time.Time `json:"time"`
	} `json:"message,omitempty"`
}

const jsErrMessageNotFound = 10037

// Get asks the stream leader, not the direct-get API (which any replica may
// answer with stale data), so a decision never rests on a lagging copy.
func (k *natsKV) Get(ctx context.Context, key string) (Entry, error) {
	if !ValidKey(key) {
		return Entry{}, opError("get", k.bucket, key, ErrInvalidKey, nil)
	}
	ctx, cancel := k.s.withTimeout(ctx)
	defer cancel()
	var e Entry
	var err error
	if k.s.directGet {
		e, err = k.directGet(ctx, k.prefix+key)
	} else {
		e, err = k.leaderGet(ctx, map[string]any{"last_by_subj": k.prefix + key})
	}
	if err != nil {
		return Entry{}, opError("get", k.bucket, key, classify(err, false), err)
	}
	if e.Op != OpPut {
		return Entry{}, opError("get", k.bucket, key, ErrNotFound, nil)
	}
	e.Key = key
	return e, nil
}

// leaderGet sends one request to the stream leader's message-get API.
func (k *natsKV) leaderGet(ctx context.Context, req map[string]any) (Entry, error) {
	data, _ := json.Marshal(req)
	msg, err := k.s.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+k.stream, data)
	if err != nil {
		return Entry{}, err
	}
	var resp msgGetResponse
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return Entry{}, fmt.Errorf("%w: bad answer: %w", ErrUnavailable, err)
	}
	if resp.Error != nil {
		if resp.Error.ErrCode == jsErrMessageNotFound {
			return Entry{}, ErrNotFound
		}
		return Entry{}, &jetstream.APIError{Code: resp.Error.Code, ErrorCode: jetstream.ErrorCode(resp.Error.ErrCode), Description: resp.Error.Description}
	}
	if resp.Message == nil {
		return Entry{}, fmt.Errorf("%w: empty answer", ErrUnavailable)
	}
	m := resp.Message
	op := OpPut
	if len(m.Header) > 0 {
		h, err := nats.DecodeHeadersMsg(m.Header)
		if err != nil {
			return Entry{}, fmt.Errorf("%w: bad headers: %w", ErrUnavailable, err)
		}
		op = opFromHeaders(h)
	}
	value := m.Data
	if op != OpPut {
		value = nil
	}
	return Entry{Key: strings.TrimPrefix(m.Subject, k.prefix), Value: value, Revision: m.Sequence, Created: m.Time, Op: op}, nil
}

// directGet asks for the last message on subject with the subject in the
// request subject (NATSOptions.DirectGet).
func (k *natsKV) directGet(ctx context.Context, subject string) (Entry, error) {
	msg, err := k.s.nc.RequestWithContext(ctx, "$JS.API.DIRECT.GET."+k.stream+"."+subject, nil)
	if err != nil {
		return Entry{}, err
	}
	switch status := msg.Header.Get("Status"); status {
	case "":
	case "404":
		return Entry{}, ErrNotFound
	default:
		return Entry{}, fmt.Errorf("%w: direct get answered %s %s", ErrUnavailable, status, msg.Header.Get("Description"))
	}
	e, ok := k.directEntry(msg)
	if !ok {
		return Entry{}, fmt.Errorf("%w: direct get: an answer without its subject or sequence", ErrUnavailable)
	}
	return e, nil
}

func opFromHeaders(h nats.Header) Op {
	switch h.Get("KV-Operation") {
	case "DEL", "PURGE":
		return OpDelete
	}
	switch h.Get(jetstream.MarkerReasonHeader) {
	case "MaxAge", "Purge", "Remove":
		return OpDelete
	}
	return OpPut
}

func (k *natsKV) Create(ctx context.Context, key string, value []byte) (uint64, error) {
	if !ValidKey(key) {
		return 0, opError("create", k.bucket, key, ErrInvalidKey, nil)
	}
	ctx, cancel := k.s.withTimeout(ctx)
	defer cancel()
	rev, err := k.kv.Create(ctx, key, value)
	if err != nil {
		return 0, opError("create", k.bucket, key, classify(err, true), err)
	}
	return rev, nil
}

func (k *natsKV) Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	if !ValidKey(key) {
		return 0, opError("update", k.bucket, key, ErrInvalidKey, nil)
	}
	if revision == 0 {
		return 0, opError("update", k.bucket, key, ErrConflict, errors.New("update needs the revision it replaces; use Create for a new key"))
	}
	ctx, cancel := k.s.withTimeout(ctx)
	defer cancel()
	rev, err := k.kv.Update(ctx, key, value, revision)
	if err != nil {
		return 0, opError("update", k.bucket, key, classify(err, true), err)
	}
	return rev, nil
}

// Put writes value whatever the key holds (no compare-and-set): for a key
// with one writer only, whose every write replaces the last whole.
func (k *natsKV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	if !ValidKey(key) {
		return 0, opError("put", k.bucket, key, ErrInvalidKey, nil)
	}
	ctx, cancel := k.s.withTimeout(ctx)
	defer cancel()
	rev, err := k.kv.Put(ctx, key, value)
	if err != nil {
		return 0, opError("put", k.bucket, key, classify(err, true), err)
	}
	return rev, nil
}

// Delete writes a deletion marker when the key's latest revision is revision;
// revision 0 deletes whatever is there.
func (k *natsKV) Delete(ctx context.Context, key string, revision uint64) error {
	if !ValidKey(key) {
		return opError("delete", k.bucket, key, ErrInvalidKey, nil)
	}
	ctx, cancel := k.s.withTimeout(ctx)
	defer cancel()
	var opts []jetstream.KVDeleteOpt
	if revision > 0 {
		opts = append(opts, jetstream.LastRevision(revision))
	}
	if err := k.kv.Delete(ctx, key, opts...); err != nil {
		return opError("delete", k.bucket, key, classify(err, true), err)
	}
	return nil
}

// listFilter is the filter a list or watch uses ("" is every key).
func (k *natsKV) listFilter(op, filter string) (string, error) {
	if filter == "" {
		filter = ">"
	}
	if !ValidFilter(filter) {
		return "", opError(op, k.bucket, filter, ErrInvalidKey, nil)
	}
	return filter, nil
}

func (k *natsKV) List(ctx context.Context, filter string) ([]Entry, error) {
	filter, err := k.listFilter("list", filter)
	if err != nil {
		return nil, err
	}
	ctx, cancel := k.s.withTimeout(ctx)
	defer cancel()
	w, err := k.kv.Watch(ctx, filter, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, opError("list", k.bucket, filter, classify(err, false), err)
	}
	defer stopAndDrain(w)
	var out []Entry
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, opError("list", k.bucket, filter, ErrUnavailable, errors.New("watch closed"))
			}
			if e == nil {
				sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
				return out, nil
			}
			out = append(out, entryOf(e))
		case <-ctx.Done():
			return nil, opError("list", k.bucket, filter, ErrUnavailable, ctx.Err())
		}
	}
}

// History walks the key's retained revisions with leader reads (next message
// of the key's subject from a sequence on), so it needs no consumer and is
// as consistent as Get.
func (k *natsKV) History(ctx context.Context, key string) ([]Entry, error) {
	if !ValidKey(key) {
		return nil, opError("history", k.bucket, key, ErrInvalidKey, nil)
	}
	ctx, cancel := k.s.withTimeout(ctx)
	defer cancel()
	var out []Entry
	for seq := uint64(1); ; {
		e, err := k.leaderGet(ctx, map[string]any{"seq": seq, "next_by_subj": k.prefix + key})
		if errors.Is(err, ErrNotFound) {
			break
		}
		if err != nil {
			return nil, opError("history", k.bucket, key, classify(err, false), err)
		}
		out = append(out, e)
		seq = e.Revision + 1
	}
	if len(out) == 0 {
		return nil, opError("history", k.bucket, key, ErrNotFound, nil)
	}
	return out, nil
}

func entryOf(e jetstream.KeyValueEntry) Entry {
	op := OpPut
	if e.Operation() != jetstream.KeyValuePut {
		op = OpDelete
	}
	return Entry{Key: e.Key(), Value: e.Value(), Revision: e.Revision(), Created: e.Created(), Op: op}
}

// stopAndDrain stops a nats.go watcher and empties its channel until it is
// closed, so its delivery goroutine is never left blocked on a full channel.
func stopAndDrain(w jetstream.KeyWatcher) {
	_ = w.Stop()
	for range w.Updates() {
	}
}

func (k *natsKV) Watch(ctx context.Context, filter string, opts WatchOptions) (Watcher, error) {
	filter, err := k.listFilter("watch", filter)
	if err != nil {
		return nil, err
	}
	if k.republish != "" && opts.ResumeFrom == 0 && !opts.UpdatesOnly {
		return k.republishWatch(ctx, filter)
	}
	var jopts []jetstream.WatchOpt
	switch {
	case opts.ResumeFrom > 0:
		jopts = append(jopts, jetstream.IncludeHistory(), jetstream.ResumeFromRevision(opts.ResumeFrom))
	case opts.UpdatesOnly:
		jopts = append(jopts, jetstream.UpdatesOnly())
	}
	// nats.go ties the subscription's life to the context given here, and
	// uses it for the consumer-create request too: bound only the creation.
	wctx, wcancel := context.WithCancel(ctx)
	timer := time.AfterFunc(k.s.timeout, wcancel)
	w, err := k.kv.Watch(wctx, filter, jopts...)
	if !timer.Stop() && err == nil {
		err = context.DeadlineExceeded
	}
	if err != nil {
		wcancel()
		return nil, opError("watch", k.bucket, filter, classify(err, false), err)
	}
	nw := &natsWatcher{events: make(chan Event, 64)}
	go func() {
		defer wcancel()
		nw.run(wctx, w, opts.UpdatesOnly, k.bucket, filter)
	}()
	return nw, nil
}

type natsWatcher struct {
	events chan Event
	err    error // written before events is closed
}

func (w *natsWatcher) Events() <-chan Event { return w.events }
func (w *natsWatcher) Err() error           { return w.err }

// run forwards entries until ctx ends or the underlying watch closes (the
// connection was closed). It owns w.events.
func (w *natsWatcher) run(ctx context.Context, jw jetstream.KeyWatcher, updatesOnly bool, bucket, filter string) {
	defer close(w.events)
	defer stopAndDrain(jw)
	var last uint64
	replayed := false
	send := func(ev Event) bool {
		select {
		case w.events <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	if updatesOnly {
		// nats.go sends no marker for updates-only watches; we promise one.
		replayed = true
		if !send(Event{Replayed: true}) {
			return
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-jw.Updates():
			if !ok {
				if ctx.Err() == nil {
					w.err = opError("watch", bucket, filter, ErrUnavailable, errors.New("watch closed by the connection"))
				}
				return
			}
			if e == nil {
				if replayed {
					continue
				}
				replayed = true
				if !send(Event{Replayed: true}) {
					return
				}
				continue
			}
			// Ordered consumers may redeliver after they are recreated;
			// revisions only grow, so anything not newer was seen already.
			if e.Revision() <= last {
				continue
			}
			last = e.Revision()
			if !send(Event{Entry: entryOf(e)}) {
				return
			}
		}
	}
}

// classify maps a nats.go error to the store's taxonomy. write says whether
// the failed call was a write, for which a timeout means "outcome unknown".
func classify(err error, write bool) error {
	var apiErr *jetstream.APIError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch), errors.Is(err, jetstream.ErrKeyExists):
		return ErrConflict
	case errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant):
		return ErrConflict
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted), errors.Is(err, ErrNotFound):
		return ErrNotFound
	case errors.Is(err, jetstream.ErrInvalidKey):
		return ErrInvalidKey
	case errors.Is(err, jetstream.ErrBucketNotFound), errors.Is(err, jetstream.ErrStreamNotFound):
		return ErrBucketNotFound
	case errors.Is(err, nats.ErrMaxPayload), errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrMessageTooLarge:
		return ErrValueTooLarge
	case errors.Is(err, ErrUnavailable), errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, nats.ErrConnectionDraining):
		// Nobody took the request: nothing was written.
		return ErrUnavailable
	case errors.As(err, &apiErr) && (apiErr.Code == 503 || apiErr.ErrorCode == jsErrNoSuitablePeers):
		// 10005: a cluster that has not seen enough peers yet (forming,
		// or a node down): nothing was placed, try again.
		return ErrUnavailable
	}
	if c, ok := ctxClass(err, write); ok {
		return c
	}
	if write {
		// A timeout, a dropped connection or anything we cannot read: the
		// write may have landed.
		return ErrOutcomeUnknown
	}
	return ErrUnavailable
}

const (
	jsErrMessageTooLarge = 10054
	jsErrNoSuitablePeers = 10005
)

func validBucket(b string) bool {
	if b == "" {
		return false
	}
	for _, r := range b {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}
