package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/time/rate"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/store"
)

// Fleet are the buckets a device reaches through the relay.
type Fleet struct {
	DesiredState, DeviceInfo, DeviceState, DeviceHeartbeat store.KV
	// Secrets (nil: none) is read by a device only for the secrets its
	// desired state names (docs/adr/0025-secrets.md).
	Secrets store.KV
}

// Limits bound what one device may cost the control plane. Every figure
// is per device unless it says otherwise.
type Limits struct {
	// Rate and Burst: requests per second (a token bucket).
	Rate  float64
	Burst int
	// Bytes and ByteBurst: value bytes written per second.
	Bytes     float64
	ByteBurst int
	// InFlight: requests of one device being served at once.
	InFlight int
	// Workers serve requests (all devices); Queue holds those waiting.
	Workers, Queue int
	// Devices: how many devices' limiters are kept (idle ones are dropped
	// first); a device beyond waits until one is dropped.
	Devices int
}

// DefaultLimits fit an agent: at start it reads and writes a few keys per
// deployment it runs (a burst), then a heartbeat every 10 s and a status
// write per change. A failover member adds a heartbeat every interval.
func DefaultLimits() Limits {
	return Limits{Rate: 50, Burst: 1000, Bytes: 1 << 20, ByteBurst: 16 << 20, InFlight: 8,
		Workers: 64, Queue: 8192, Devices: 200_000}
}

// Options tune a relay server.
type Options struct {
	Limits Limits
	// MemberBucket names the failover bucket the device's identity was
	// granted ("" for none).
	MemberBucket func(ctx context.Context, device string) (string, error)
	// OpenBucket opens a failover bucket.
	OpenBucket func(ctx context.Context, bucket string) (store.KV, error)
	// Timeout bounds each store call.
	Timeout time.Duration
	// Metrics, when set, count what the relay did.
	Metrics *Metrics
	// Spread, when set, is the reconnection window advertised to devices
	// (HdrSpread) on open and list answers.
	Spread func() time.Duration
	// Presence, when set, is where beats (OpBeat) are recorded; without
	// it the relay refuses them and devices write their heartbeat keys.
	Presence *Presence
}

// Server answers the relay requests of every device.
type Server struct {
	nc    *nats.Conn
	fleet Fleet
	opts  Options
	log   *slog.Logger
	work  chan job
	ready chan struct{} // closed once the subscription is known to NATS
	pres  *presence     // nil: beats are refused

	mu      sync.Mutex
	devices map[string]*device
	buckets map[string]store.KV // failover buckets opened
}

type job struct {
	m   *nats.Msg
	dev *device
	id  string
}

// device is one device's budget.
type device struct {
	req, bytes, complain *rate.Limiter
	inFlight             int        // guarded by Server.mu
	used                 time.Time  // guarded by Server.mu
	member               string     // failover bucket, cached
	memberAt             time.Time  // when member was read
	memberMu             sync.Mutex // guards member, memberAt
}

// NewServer returns a relay that answers on nc (a connection of its own:
// a device flooding its subject then slows this connection only, never
// the control plane's store connection).
func NewServer(nc *nats.Conn, fleet Fleet, log *slog.Logger, opts Options) *Server {
	d := DefaultLimits()
	l := &opts.Limits
	if l.Rate <= 0 {
		l.Rate, l.Burst = d.Rate, d.Burst
	}
	if l.Bytes <= 0 {
		l.Bytes, l.ByteBurst = d.Bytes, d.ByteBurst
	}
	if l.InFlight <= 0 {
		l.InFlight = d.InFlight
	}
	if l.Workers <= 0 {
		l.Workers = d.Workers
	}
	if l.Queue <= 0 {
		l.Queue = d.Queue
	}
	if l.Devices <= 0 {
		l.Devices = d.Devices
	}
	if opts.Timeout <= 0 {
		opts.Timeout = store.DefaultTimeout
	}
	return &Server{nc: nc, fleet: fleet, opts: opts, log: log, work: make(chan job, l.Queue), ready: make(chan struct{}),
		devices: map[string]*device{}, buckets: map[string]store.KV{}}
}

// Run answers requests until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	if p := s.opts.Presence; p != nil {
		pres, err := newPresence(*p)
		if err != nil {
			return err
		}
		s.pres = pres
		complain := rate.NewLimiter(rate.Every(time.Minute), 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			pres.run(ctx, s.opts.Timeout, func(err error) {
				if complain.Allow() {
					s.log.Warn("presence record not written; trying again", "err", err)
				}
			})
		}()
	}
	sub, err := s.nc.QueueSubscribe(SubjectPrefix+".>", QueueGroup, s.admit)
	if err != nil {
		return fmt.Errorf("relay: subscribe: %w", err)
	}
	// What waits in the client library is bounded too: past it, messages
	// are dropped (and their senders time out and try again).
	_ = sub.SetPendingLimits(4*s.opts.Limits.Queue, 64<<20)
	defer func() { _ = sub.Unsubscribe() }()
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Known to the server once a flush returns (tried again while the
		// connection is still coming up).
		for ctx.Err() == nil {
			if s.nc.FlushTimeout(time.Second) == nil {
				close(s.ready)
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	for range s.opts.Limits.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case j := <-s.work:
					s.serve(ctx, j)
				}
			}
		}()
	}
	evict := time.NewTicker(time.Minute)
	defer evict.Stop()
	for {
		select {
		case <-ctx.Done():
			_ = sub.Unsubscribe()
			wg.Wait()
			return nil
		case <-evict.C:
			s.evictIdle(5 * time.Minute)
		}
	}
}

// Ready is closed once the relay's subscription is known to NATS: from
// then on devices' requests reach it.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// admit runs on the subscription's goroutine: it must stay cheap, so that
// one device's flood is dropped as fast as it arrives and everyone else's
// requests still get through. It checks the sender, charges its budget
// and queues the request; it does no I/O but a short refusal.
func (s *Server) admit(m *nats.Msg) {
	id := deviceOf(m.Subject)
	if v1.ValidateDeviceID(id) != nil || m.Reply == "" {
		s.count("dropped", "bad_subject")
		return
	}
	// An answer goes only to the device's own inbox: never to another
	// subject a request names as its reply (the JetStream API, another
	// device), so that the relay's own permissions never act for a device,
	// and nothing but the device's connection (not a consumer delivering
	// into the relay subject, say) makes a request in its name.
	if !strings.HasPrefix(m.Reply, InboxPrefix(id)+".") || len(m.Reply) > maxReply {
		s.count("dropped", "foreign_reply")
		return
	}
	now := time.Now()
	s.mu.Lock()
	d := s.devices[id]
	if d == nil {
		if len(s.devices) >= s.opts.Limits.Devices {
			s.mu.Unlock()
			s.count("dropped", "too_many_devices")
			return
		}
		l := s.opts.Limits
		d = &device{req: rate.NewLimiter(rate.Limit(l.Rate), l.Burst), bytes: rate.NewLimiter(rate.Limit(l.Bytes), l.ByteBurst),
			complain: rate.NewLimiter(1, 5)}
		s.devices[id] = d
	}
	d.used = now
	// In flight first, so that a request refused for it is not charged.
	// A list costs more: the control plane reads every key it names.
	cost := 1
	if m.Header.Get(HdrOp) == OpList {
		cost = listCost
	}
	over := d.inFlight >= s.opts.Limits.InFlight
	if !over && !d.req.AllowN(now, cost) {
		over = true
	}
	if !over && len(m.Data) > 0 && !d.bytes.AllowN(now, len(m.Data)) {
		over = true
	}
	if !over {
		d.inFlight++
	}
	s.mu.Unlock()
	if over {
		s.count("dropped", "rate_limited")
		// A few answers a second say why; the rest of a flood gets none.
		if d.complain.AllowN(now, 1) {
			s.answerError(m, CodeRateLimited, "the device's request budget is spent: try again later")
		}
		return
	}
	if m.Header.Get(HdrOp) == OpBeat {
		// Answered here, from memory: no store call waits in the queue.
		s.beat(m, d, id, now)
		return
	}
	select {
	case s.work <- job{m: m, dev: d, id: id}:
	default:
		// Shed: the device hears at once that the control plane is busy
		// (and tries again after its pause) rather than waiting out its
		// timeout; a few answers a second per device at most.
		s.done(d)
		s.count("dropped", "queue_full")
		if d.complain.AllowN(now, 1) {
			s.answerError(m, CodeUnavailable, "the control plane is busy: try again later")
		}
	}
}

// beat records a device's heartbeat in the relay's presence records and
// answers it.
func (s *Server) beat(m *nats.Msg, d *device, id string, now time.Time) {
	defer s.done(d)
	if err := s.checkBeat(m, id); err != nil {
		s.count(OpBeat, "refused")
		s.answerError(m, codeOf(err), err.Error())
		return
	}
	s.pres.beat(id, now)
	s.count(OpBeat, "ok")
	_ = m.RespondMsg(answer(m, 0))
}

func (s *Server) checkBeat(m *nats.Msg, id string) error {
	if s.pres == nil {
		return refuse("beat: this control plane keeps heartbeats as keys; write the key with create or update")
	}
	if b := m.Header.Get(HdrBucket); b != s.fleet.DeviceHeartbeat.Bucket() {
		return refuse("beat: bucket %q: beats go to the %s bucket", b, s.fleet.DeviceHeartbeat.Bucket())
	}
	if key := m.Header.Get(HdrKey); key != id {
		return refuse("key %q: a device beats only as itself (%q)", key, id)
	}
	if _, err := v1.DecodeHeartbeat(m.Data); err != nil {
		return refuse("heartbeat value: %v", err)
	}
	return nil
}

func (s *Server) done(d *device) {
	s.mu.Lock()
	d.inFlight--
	s.mu.Unlock()
}

func (s *Server) evictIdle(idle time.Duration) {
	cut := time.Now().Add(-idle)
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, d := range s.devices {
		if d.inFlight == 0 && d.used.Before(cut) {
			delete(s.devices, id)
		}
	}
}

// serve runs one admitted request.
func (s *Server) serve(ctx context.Context, j job) {
	defer s.done(j.dev)
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	op := j.m.Header.Get(HdrOp)
	ans, err := s.do(ctx, j, op)
	if err != nil {
		code := codeOf(err)
		if code == CodeRefused || code == CodeInvalidKey || code == CodeTooLarge {
			s.count(op, "refused")
			if j.dev.complain.Allow() {
				s.log.Debug("relay request refused", "device", j.id, "op", op, "err", err)
			}
		} else {
			s.count(op, code)
		}
		s.answerError(j.m, code, err.Error())
		return
	}
	s.count(op, "ok")
	if (op == OpOpen || op == OpList) && s.opts.Spread != nil {
		ans.Header.Set(HdrSpread, strconv.FormatInt(s.opts.Spread().Milliseconds(), 10))
	}
	// What an answer carries is charged too (a device choosing to read
	// large values as fast as it may): its next requests wait for it.
	if n := len(ans.Data); n > 0 {
		s.mu.Lock()
		j.dev.bytes.ReserveN(time.Now(), min(n, s.opts.Limits.ByteBurst))
		s.mu.Unlock()
	}
	_ = j.m.RespondMsg(ans)
}

func (s *Server) answerError(m *nats.Msg, code, msg string) {
	a := nats.NewMsg(m.Reply)
	a.Header.Set(HdrError, code)
	if len(msg) > 512 {
		msg = msg[:512]
	}
	a.Header.Set(HdrMessage, msg)
	_ = m.RespondMsg(a)
}

func (s *Server) count(op, result string) {
	if s.opts.Metrics != nil {
		s.opts.Metrics.requests.WithLabelValues(op, result).Inc()
	}
}

// refuse builds a refusal that names what was asked.
func refuse(format string, args ...any) error {
	return fmt.Errorf("%w: %s", store.ErrRefused, fmt.Sprintf(format, args...))
}

// do checks the request against what the device may do and does it.
func (s *Server) do(ctx context.Context, j job, op string) (*nats.Msg, error) {
	h := j.m.Header
	bucket, key := h.Get(HdrBucket), h.Get(HdrKey)
	var rev uint64
	if r := h.Get(HdrRevision); r != "" {
		n, err := strconv.ParseUint(r, 10, 64)
		if err != nil {
			return nil, refuse("revision %q: not a number", r)
		}
		rev = n
	}
	kv, role, err := s.bucketFor(ctx, j.id, bucket)
	if err != nil {
		return nil, err
	}
	if op == OpOpen {
		return answer(j.m, 0), nil
	}
	if err := allowed(role, op, j.id, key); err != nil {
		return nil, err
	}
	value := j.m.Data
	switch op {
	case OpCreate, OpUpdate:
		if err := s.checkValue(ctx, role, j.id, key, value); err != nil {
			return nil, err
		}
	}
	if role == roleSecret {
		if err := s.usesSecret(ctx, j.id, key); err != nil {
			return nil, err
		}
	}
	if op == OpUpdate && role == roleInfo {
		if err := samePinnedLabels(ctx, kv, key, value); err != nil {
			return nil, err
		}
	}
	switch op {
	case OpGet:
		e, err := kv.Get(ctx, key)
		if err != nil {
			return nil, err
		}
		a := answer(j.m, e.Revision)
		a.Header.Set(HdrCreated, e.Created.Format(time.RFC3339Nano))
		a.Data = e.Value
		return a, nil
	case OpCreate:
		n, err := kv.Create(ctx, key, value)
		if err != nil {
			return nil, err
		}
		return answer(j.m, n), nil
	case OpUpdate:
		n, err := kv.Update(ctx, key, value, rev)
		if err != nil {
			return nil, err
		}
		return answer(j.m, n), nil
	case OpDelete:
		if err := kv.Delete(ctx, key, rev); err != nil {
			return nil, err
		}
		return answer(j.m, 0), nil
	case OpList:
		es, err := list(ctx, kv, key)
		if err != nil {
			return nil, err
		}
		if len(es) > maxListEntries {
			return nil, refuse("list %q: %d keys, more than a list answers (%d)", key, len(es), maxListEntries)
		}
		a := answer(j.m, 0)
		a.Data = encodeList(es)
		return a, nil
	case OpHistory:
		es, err := kv.History(ctx, key)
		if err != nil {
			return nil, err
		}
		a := answer(j.m, 0)
		a.Data = encodeList(es)
		return a, nil
	}
	return nil, refuse("operation %q: not one of get, create, update, delete, list, history, beat", op)
}

func answer(m *nats.Msg, rev uint64) *nats.Msg {
	a := nats.NewMsg(m.Reply)
	a.Header.Set(HdrRevision, strconv.FormatUint(rev, 10))
	return a
}

// list reads the latest values of the keys matching filter with one
// batched direct get when the store can (no consumer is made for a
// device's list), and with a consumer when they do not fit one answer.
func list(ctx context.Context, kv store.KV, filter string) ([]store.Entry, error) {
	if dl, ok := kv.(store.DirectLister); ok {
		es, err := dl.ListDirect(ctx, filter)
		if !errors.Is(err, store.ErrTooManyToList) {
			return es, err
		}
	}
	return kv.List(ctx, filter)
}

// Roles of the buckets a device reaches.
const (
	roleDesired   = "desired"
	roleInfo      = "info"
	roleState     = "state"
	roleHeartbeat = "heartbeat"
	roleMember    = "failover"
	roleSecret    = "secrets"
)

func (s *Server) bucketFor(ctx context.Context, id, bucket string) (store.KV, string, error) {
	f := s.fleet
	switch bucket {
	case f.DesiredState.Bucket():
		return f.DesiredState, roleDesired, nil
	case f.DeviceInfo.Bucket():
		return f.DeviceInfo, roleInfo, nil
	case f.DeviceState.Bucket():
		return f.DeviceState, roleState, nil
	case f.DeviceHeartbeat.Bucket():
		return f.DeviceHeartbeat, roleHeartbeat, nil
	}
	if f.Secrets != nil && bucket == f.Secrets.Bucket() {
		return f.Secrets, roleSecret, nil
	}
	if s.opts.MemberBucket == nil || s.opts.OpenBucket == nil || bucket == "" {
		return nil, "", refuse("bucket %q: not one this device may use", bucket)
	}
	mine, err := s.memberBucket(ctx, id)
	if err != nil {
		return nil, "", err
	}
	if mine == "" || mine != bucket {
		return nil, "", refuse("bucket %q: not one this device may use", bucket)
	}
	s.mu.Lock()
	kv := s.buckets[bucket]
	s.mu.Unlock()
	if kv == nil {
		if kv, err = s.opts.OpenBucket(ctx, bucket); err != nil {
			return nil, "", err
		}
		s.mu.Lock()
		s.buckets[bucket] = kv
		s.mu.Unlock()
	}
	return kv, roleMember, nil
}

// memberTTL is how long the failover bucket read from a device's identity
// is trusted (an identity re-enrolled into another cluster takes effect
// within it; a revoked one cannot connect at all).
const memberTTL = 10 * time.Second

func (s *Server) memberBucket(ctx context.Context, id string) (string, error) {
	s.mu.Lock()
	d := s.devices[id]
	s.mu.Unlock()
	if d == nil {
		return s.opts.MemberBucket(ctx, id)
	}
	d.memberMu.Lock()
	defer d.memberMu.Unlock()
	if !d.memberAt.IsZero() && time.Since(d.memberAt) < memberTTL {
		return d.member, nil
	}
	b, err := s.opts.MemberBucket(ctx, id)
	if err != nil {
		return "", err
	}
	d.member, d.memberAt = b, time.Now()
	return b, nil
}

// allowed says whether a device may do op on key of a bucket in role.
func allowed(role, op, id, key string) error {
	if op == OpList {
		switch role {
		case roleDesired:
			if key != id+".*" {
				return refuse("list %q: a device lists only its own desired state (%s.*)", key, id)
			}
			return nil
		case roleMember:
			if !store.ValidFilter(key) {
				return refuse("list %q: not a key filter", key)
			}
			return nil
		}
		return refuse("list: not allowed on the %s bucket", role)
	}
	if !store.ValidKey(key) {
		return refuse("key %q: not a key (dot-separated tokens of letters, digits, '-', '/', '_', '=')", key)
	}
	ops := map[string][]string{
		roleDesired:   {OpGet},
		roleInfo:      {OpGet, OpCreate, OpUpdate},
		roleHeartbeat: {OpGet, OpCreate, OpUpdate},
		roleState:     {OpGet, OpCreate, OpUpdate, OpDelete},
		roleMember:    {OpGet, OpCreate, OpUpdate, OpDelete, OpHistory},
		roleSecret:    {OpGet},
	}[role]
	ok := false
	for _, o := range ops {
		ok = ok || o == op
	}
	if !ok {
		return refuse("%s: not allowed on the %s bucket", op, role)
	}
	switch role {
	case roleMember:
		if !memberKey(key) {
			return refuse("key %q: not a failover key (cluster-state, switchover, heartbeat.<node>, event.<kind>.<node>.<epoch>)", key)
		}
	case roleSecret:
		if v1.ValidateSecretName(key) != nil {
			return refuse("key %q: not a secret name", key)
		}
	case roleInfo, roleHeartbeat:
		if key != id {
			return refuse("key %q: a device writes only its own key %q", key, id)
		}
	case roleDesired, roleState:
		dev, dep, err := v1.SplitDeviceKey(key)
		if err != nil || dev != id || v1.ValidateDeploymentName(dep) != nil {
			return refuse("key %q: a device uses only its own keys %s.<deployment>", key, id)
		}
	}
	return nil
}

// usesSecret checks that one of the device's desired states names the
// secret: a device reads only the secrets it was given. A secret that does
// not exist gets the same answer as one not given, so that a device cannot
// learn which names exist.
func (s *Server) usesSecret(ctx context.Context, id, name string) error {
	es, err := list(ctx, s.fleet.DesiredState, id+".*")
	if err != nil {
		return err
	}
	for _, e := range es {
		ds, err := v1.DecodeDesiredState(e.Value)
		if err != nil || ds.Device != id {
			continue
		}
		if _, ok := ds.Secrets[name]; ok {
			return nil
		}
	}
	return refuse("secret %q: no desired state of this device uses it", name)
}

// Bounds of what one request may ask.
const (
	// listCost: request tokens a list takes.
	listCost = 20
	// maxListEntries: keys one list answers (a device's desired state
	// holds one per deployment it was given; a failover bucket a few).
	maxListEntries = 1000
	// maxReply: a reply subject's length (an inbox is ~60 bytes).
	maxReply = 256
	// maxMemberKey: a failover key's length.
	maxMemberKey = 256
)

// memberKey reports whether key is one the failover role writes:
// cluster-state, switchover, bootstrap, restart, heartbeat.<node>,
// member.<node>, op.<node>, event.<kind>.<node>.<epoch> (failover/loop.go,
// agent/postgres.go)
// (failover/loop.go).
func memberKey(key string) bool {
	if len(key) > maxMemberKey {
		return false
	}
	toks := strings.Split(key, ".")
	switch toks[0] {
	case "cluster-state", "switchover", "bootstrap", "restart":
		return len(toks) == 1
	case "heartbeat", "member", "op":
		return len(toks) == 2
	case "event":
		return len(toks) >= 3 && len(toks) <= 5
	}
	return false
}

// samePinnedLabels refuses a device-info update that changes the labels
// the device registered with. Deployments select devices by label, so a
// device that could relabel itself could claim any deployment's desired
// state (and the secrets in it). Labels of an enrolled device change from
// the control plane (harmony label, the device-labels bucket), which wins
// over what the device reports.
func samePinnedLabels(ctx context.Context, kv store.KV, key string, value []byte) error {
	cur, err := kv.Get(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return nil // the CAS update fails on its own
	}
	if err != nil {
		return err
	}
	was, err := v1.DecodeDeviceInfo(cur.Value)
	if err != nil {
		return nil // an unreadable record may be replaced
	}
	now, _ := v1.DecodeDeviceInfo(value) // checked by checkValue
	if !maps.Equal(was.Labels, now.Labels) {
		return refuse("device-info labels: %s differ from %s, the labels the device registered with; "+
			"labels of an enrolled device change from the control plane (harmony label device %s KEY=VALUE)",
			labelString(now.Labels), labelString(was.Labels), was.ID)
	}
	return nil
}

func labelString(l map[string]string) string {
	if len(l) == 0 {
		return "{}"
	}
	parts := make([]string, 0, len(l))
	for _, k := range slices.Sorted(maps.Keys(l)) {
		parts = append(parts, k+"="+l[k])
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// checkValue refuses a value the control plane would not read as the
// device's own record, and a status for a deployment the device was not
// given (each status key is then one the control plane made room for:
// a device stores at most one status per deployment it runs).
func (s *Server) checkValue(ctx context.Context, role, id, key string, value []byte) error {
	switch role {
	case roleInfo:
		d, err := v1.DecodeDeviceInfo(value)
		if err != nil {
			return refuse("device-info value: %v", err)
		}
		if d.ID != id {
			return refuse("device-info value: id %q is not the device's own (%q)", d.ID, id)
		}
	case roleHeartbeat:
		if _, err := v1.DecodeHeartbeat(value); err != nil {
			return refuse("heartbeat value: %v", err)
		}
	case roleState:
		st, err := v1.DecodeDeviceState(value)
		if err != nil {
			return refuse("device-state value: %v", err)
		}
		_, dep, _ := v1.SplitDeviceKey(key)
		if st.Device != id || st.Deployment != dep {
			return refuse("device-state value: names %s.%s, not its key %s", st.Device, st.Deployment, key)
		}
		if _, err := s.fleet.DesiredState.Get(ctx, key); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return refuse("device-state %s: the device was given no deployment %q", key, dep)
			}
			return err
		}
	}
	return nil
}
