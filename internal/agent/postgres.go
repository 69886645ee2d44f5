package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/agent/localstate"
	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/failover"
	"github.com/harmony-fleet/harmony/internal/failover/pg"
	"github.com/harmony-fleet/harmony/internal/store"
)

// A PostgresCluster resource runs one member of a declared PostgreSQL
// cluster on this device (docs/postgres.md,
// docs/adr/0026-declared-postgres-clusters.md): the first member to win
// the compare-and-set on the bucket's "bootstrap" key initialises the
// cluster and becomes its first primary; every other member clones itself
// from the current primary. Then the failover role runs as for a member
// of a hand-built cluster (failover.go).

// KeyBootstrap is the failover bucket's key the first member claims.
const KeyBootstrap = "bootstrap"

// bootstrapRecord is the value of KeyBootstrap.
type bootstrapRecord struct {
	Node string `json:"node"`
	// SystemID is the cluster's database system identifier, once initdb
	// ran: a data directory with another one holds another cluster.
	SystemID string    `json:"systemId,omitempty"`
	At       time.Time `json:"at"`
}

// Reasons of a member that is not Ready (its status details' "reason").
const (
	ReasonBootstrapping  = "Bootstrapping"
	ReasonCloning        = "Cloning"
	ReasonStarting       = "Starting"
	ReasonWaitingPrimary = "WaitingForPrimary"
	ReasonOtherCluster   = "DataDirectoryHoldsAnotherCluster"
	ReasonVersion        = "VersionMismatch"
	ReasonPortInUse      = "PortInUse"
	ReasonMemberFailed   = "MemberFailed"
	ReasonNotStreaming   = "NotStreaming"
	// ReasonInvalidParameter: PostgreSQL refuses a value of
	// spec.parameters; the member keeps running with the previous ones.
	ReasonInvalidParameter = "InvalidParameter"
)

// postgresKind adapts the agent's members.
type postgresKind struct{ m *members }

func (k postgresKind) Admit(d Desired) (string, error) {
	s := d.Spec.(*v1.PostgresClusterSpec)
	if f := k.m.a.cfg.Failover; f != nil {
		return "", &v1.FieldError{Field: "spec.cluster", Reason: fmt.Sprintf(
			"this device runs a member of cluster %q from its agent config (failover section): one member per device", f.Cluster)}
	}
	if _, err := os.Stat(filepath.Join(s.BinDir, "postgres")); err != nil {
		if s.BinDir == v1.DefaultPostgresBinDir(s.Version) {
			return "", &v1.FieldError{Field: "spec.version", Reason: fmt.Sprintf("%d: PostgreSQL %d is not installed on this device (no %s/postgres)", s.Version, s.Version, s.BinDir)}
		}
		return "", &v1.FieldError{Field: "spec.binDir", Reason: fmt.Sprintf("%s: no PostgreSQL %d here (%v)", s.BinDir, s.Version, err)}
	}
	if v, err := binaryVersion(s.BinDir); err == nil && v != s.Version {
		return "", &v1.FieldError{Field: "spec.version", Reason: fmt.Sprintf("%d, but %s/postgres on this device is PostgreSQL %d", s.Version, s.BinDir, v)}
	}
	if err := k.m.checkMove(s); err != nil {
		return "", err
	}
	// One member per device: the claim makes two of them a Conflict.
	return "postgres-member", nil
}

// checkMove refuses, before the running member is stopped for it, a spec
// that moves this member to a port another program holds or to a data
// directory that holds another cluster or version: the member would go
// down and stay down. The running member keeps its last good spec.
func (m *members) checkMove(s *v1.PostgresClusterSpec) error {
	cur := m.get(s.Cluster)
	if cur == nil {
		return nil
	}
	id := m.a.cfg.ID
	old, me := cur.spec(), s.Member(id)
	field := func(name string, overridden bool) string {
		if overridden {
			return "spec.members." + id + "." + name
		}
		return "spec." + name
	}
	o := s.Members[id]
	if me.Port != old.Port {
		if err := portFree(me.Port); err != nil {
			return &v1.FieldError{Field: field("port", o.Port != 0), Reason: fmt.Sprintf(
				"%d is in use by another program on this device; the member keeps running on %d", me.Port, old.Port)}
		}
	}
	if me.DataDir != old.DataDir {
		in := instanceOf(id, me)
		if have, err := in.Initialized(); err != nil || !have {
			return nil // nothing there: the member clones itself into it
		}
		f := field("dataDir", o.DataDir != "")
		if v, err := in.Version(); err == nil && v != me.Version {
			return &v1.FieldError{Field: f, Reason: fmt.Sprintf("%s holds a PostgreSQL %d cluster, not %d; the member keeps running from %s", me.DataDir, v, me.Version, old.DataDir)}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		want, err1 := instanceOf(id, old).SystemID(ctx)
		got, err2 := in.SystemID(ctx)
		if err1 == nil && err2 == nil && want != got {
			return &v1.FieldError{Field: f, Reason: fmt.Sprintf("%s holds another cluster (system identifier %s, this one's is %s); the member keeps running from %s", me.DataDir, got, want, old.DataDir)}
		}
	}
	return nil
}

func (k postgresKind) Observe(ctx context.Context, d Desired) (Observation, error) {
	want := k.m.wanted(d)
	mb := k.m.get(want.spec.Cluster)
	switch {
	case mb == nil || mb.key != want.key:
		return Observation{Diff: "member not running with this spec"}, nil
	case mb.wantKey() != want.full:
		return Observation{Diff: "parameters, roles or databases changed"}, nil
	case mb.isLeaving():
		return Observation{Diff: "declared again while it was leaving"}, nil
	}
	return Observation{InSync: true, Result: mb.result()}, nil
}

func (k postgresKind) Apply(_ context.Context, d Desired) error {
	return k.m.ensure(k.m.wanted(d))
}

func (k postgresKind) Delete(ctx context.Context, o localstate.Owned) error {
	var s v1.PostgresClusterSpec
	if err := json.Unmarshal(o.Spec, &s); err != nil {
		return err
	}
	return k.m.remove(ctx, s.Member(k.m.a.cfg.ID))
}

// binaryVersion is the major version of the postgres program in binDir
// ("postgres (PostgreSQL) 15.10 (Debian 15.10-0+deb12u1)" is 15).
func binaryVersion(binDir string) (int, error) {
	out, err := osexec.Command(filepath.Join(binDir, "postgres"), "-V").Output()
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(out))
	if len(f) < 3 {
		return 0, fmt.Errorf("postgres -V: %q", out)
	}
	major, _, _ := strings.Cut(f[2], ".")
	return strconv.Atoi(major)
}

// members runs the declared members of this device (at most one), each
// in a goroutine owned by run.
type members struct {
	a *Agent

	mu      sync.Mutex
	ctx     context.Context // run's; nil until it runs
	st      store.Store
	running map[string]*member // by cluster
	wg      sync.WaitGroup
}

func newMembers(a *Agent) *members { return &members{a: a, running: map[string]*member{}} }

func (m *members) setStore(st store.Store) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.st = st
}

// run owns the members' goroutines: when ctx ends, they stop (the
// failover loops with them; PostgreSQL keeps running, as when the agent
// of a hand-built member stops).
func (m *members) run(ctx context.Context) error {
	m.mu.Lock()
	m.ctx = ctx
	m.mu.Unlock()
	<-ctx.Done()
	m.wg.Wait()
	return nil
}

// memberWant is what one member should run with.
type memberWant struct {
	spec      v1.PostgresClusterSpec // with this device's overrides
	password  string
	roles     []pg.LoginRole
	databases []pg.Database
	// key identifies everything but the parameters, roles and databases
	// (which the running member applies); full identifies everything.
	key, full string
}

func (m *members) wanted(d Desired) memberWant {
	s := d.Spec.(*v1.PostgresClusterSpec).Member(m.a.cfg.ID)
	w := memberWant{spec: s, password: d.SecretValues[".spec.superuserPassword"]}
	for i, r := range s.Roles {
		w.roles = append(w.roles, pg.LoginRole{Name: r.Name, Options: r.Options,
			Password: d.SecretValues[fmt.Sprintf(".spec.roles[%d].password", i)]})
	}
	for _, db := range s.Databases {
		w.databases = append(w.databases, pg.Database{Name: db.Name, Owner: db.Owner})
	}
	keyed := s
	keyed.Parameters, keyed.Roles, keyed.Databases = nil, nil, nil
	// Not the secrets' versions: a rotated password is applied by the
	// running member (its password file, ALTER ROLE on the primary),
	// never by restarting its failover role.
	b, _ := v1.Marshal(keyed)
	w.key = string(b)
	f, _ := v1.Marshal(struct {
		Spec    v1.PostgresClusterSpec
		Secrets map[string]string
	}{s, d.Secrets})
	w.full = string(f)
	return w
}

func (m *members) get(cluster string) *member {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.running[cluster]
}

// ensure starts the member, or restarts it with a changed spec; a change
// of parameters, roles or databases only is handed to the running member.
func (m *members) ensure(w memberWant) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ctx == nil || m.st == nil {
		return errors.New("the agent is still starting: not connected to the control plane yet")
	}
	if cur := m.running[w.spec.Cluster]; cur != nil {
		if cur.key == w.key {
			cur.update(w)
			return nil
		}
		cur.stop()
	}
	ctx, cancel := context.WithCancel(m.ctx)
	mb := &member{a: m.a, st: m.st, key: w.key, cancel: cancel, done: make(chan struct{}), want: w, phase: ReasonStarting}
	m.running[w.spec.Cluster] = mb
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(mb.done)
		mb.run(ctx)
	}()
	return nil
}

// remove takes the member out of the cluster: a primary first hands over
// to its synchronous standby (a switchover), then the failover role stops,
// its keys go from the bucket (so the primary drops its slot), and its
// PostgreSQL stops. Its data directory stays. A replica whose leaving
// would stop the cluster's writes (the only synchronous standby of an
// AbsoluteConsistency cluster whose primary stays) refuses, and the
// engine asks again on its next pass.
func (m *members) remove(ctx context.Context, s v1.PostgresClusterSpec) error {
	cur := m.get(s.Cluster)
	if cur != nil {
		if err := cur.leave(ctx); err != nil {
			return err
		}
		m.mu.Lock()
		delete(m.running, s.Cluster)
		m.mu.Unlock()
		cur.stop()
		cur.forget(ctx)
	}
	in := instanceOf(m.a.cfg.ID, s)
	if running, _ := in.Running(); running {
		return in.Fence(ctx, 0)
	}
	return nil
}

// leave tells the others this member is leaving, then hands over if it is
// the primary, or refuses if the cluster needs it as its standby.
func (mb *member) leave(ctx context.Context) error {
	mb.mu.Lock()
	l := mb.loop
	first := !mb.leaving
	mb.leaving = true
	mb.mu.Unlock()
	if first {
		mb.a.log.Info("postgres member: no longer declared; leaving the cluster", "cluster", mb.spec().Cluster)
	}
	if l == nil {
		return nil // not a working member yet: nothing depends on it
	}
	kv, err := mb.openBucket(ctx, mb.spec())
	if err != nil {
		return err
	}
	n := l.Node()
	if n.Status == failover.StatusPrimary {
		mb.markLeaving(ctx, kv, "")
		return mb.handOver(ctx, kv, l)
	}
	why := mb.onlyStandby(ctx, kv, n)
	if why != "" {
		if p, err := failover.ReadMember(ctx, kv, n.CS.Primary); err == nil && (p == nil || p.Leaving) {
			why = "" // the primary goes too (or went): the cluster is being removed
		}
	}
	msg := ""
	if why != "" {
		msg = "leaving refused: " + why + "; it stays until another replica streams or the primary leaves too"
	}
	mb.markLeaving(ctx, kv, msg)
	if msg != "" {
		return errors.New(msg)
	}
	return nil
}

// markLeaving publishes the member's record with Leaving set and msg (why
// it cannot leave yet, or "").
func (mb *member) markLeaving(ctx context.Context, kv store.KV, msg string) {
	mb.mu.Lock()
	changed := mb.leaveMsg != msg || !mb.leaveMarked
	mb.leaveMsg, mb.leaveMarked, mb.republish = msg, true, true
	mb.mu.Unlock()
	if !changed {
		return
	}
	r, err := failover.ReadMember(ctx, kv, mb.a.cfg.ID)
	if err != nil {
		return
	}
	if r == nil {
		r = &failover.MemberRecord{}
	}
	r.Leaving, r.Message, r.At = true, msg, time.Now().UTC()
	v, _ := json.Marshal(r)
	if err := failover.PutKey(ctx, kv, failover.MemberPrefix+mb.a.cfg.ID, v); err != nil {
		mb.mu.Lock()
		mb.leaveMarked = false
		mb.mu.Unlock()
	}
}

// handOverWait bounds how long a leaving primary waits for its
// switchover.
const handOverWait = 60 * time.Second

// handOver: a primary leaving the cluster hands over to its synchronous
// standby first. With no standby streaming (it has no replica), or a
// standby that is leaving too (the cluster is being removed), it leaves as
// it is.
func (mb *member) handOver(ctx context.Context, kv store.KV, l *failover.Loop) error {
	cs := l.Node().CS
	if cs.Sync == "" || mb.targetLeaving(ctx, kv, cs.Sync) {
		return nil
	}
	if e, err := kv.Get(ctx, failover.HeartbeatPrefix+cs.Sync); err != nil {
		return nil
	} else if hb, err := failover.DecodeHeartbeat(e.Value); err != nil || hb.Status != failover.StatusReplica || !hb.Streaming {
		return nil
	}
	mb.a.log.Info("postgres member: leaving the cluster; handing over first", "to", cs.Sync)
	req, _ := json.Marshal(failover.SwitchoverRequest{To: cs.Sync, Epoch: cs.Epoch})
	if err := failover.PutKey(ctx, kv, failover.KeySwitchover, req); err != nil {
		return err
	}
	deadline := time.Now().Add(handOverWait)
	for i := 0; time.Now().Before(deadline); i++ {
		if n := l.Node(); n.CS.Epoch > cs.Epoch && n.CS.Primary != mb.a.cfg.ID {
			return nil
		}
		if i%10 == 9 && mb.targetLeaving(ctx, kv, cs.Sync) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("leaving the cluster: the switchover to %s did not happen within %s; still the primary", cs.Sync, handOverWait)
}

// targetLeaving: node's record says it is leaving too.
func (mb *member) targetLeaving(ctx context.Context, kv store.KV, node string) bool {
	r, err := failover.ReadMember(ctx, kv, node)
	return err == nil && r != nil && r.Leaving
}

// forget removes the member's keys from the bucket.
func (mb *member) forget(ctx context.Context) {
	kv, err := mb.openBucket(ctx, mb.spec())
	if err != nil {
		return
	}
	for _, key := range []string{failover.HeartbeatPrefix + mb.a.cfg.ID, failover.MemberPrefix + mb.a.cfg.ID, failover.OpPrefix + mb.a.cfg.ID} {
		if e, err := kv.Get(ctx, key); err == nil {
			_ = kv.Delete(ctx, key, e.Revision)
		}
	}
}

// member is one declared member's goroutine and what it reports.
type member struct {
	a      *Agent
	st     store.Store
	key    string
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	want    memberWant
	phase   string // a Reason* while setting up; "" once the failover role runs
	failed  bool   // phase is a failure (with message)
	message string
	loop    *failover.Loop
	ensured string    // the roles and databases last made, as a key
	askedAt time.Time // when this primary last asked to hand over (keep's goroutine only)
	refused string    // PostgreSQL's refusal of the parameters ("": none)
	pending []string  // parameters waiting for a restart, as keep last read them
	// leaving: the device no longer declares the member; leaveMsg is why
	// it cannot leave yet, leaveMarked that its record says so.
	leaving     bool
	leaveMarked bool
	leaveMsg    string
	republish   bool     // the record was written outside keep: keep writes it again
	kv          store.KV // the cluster's bucket, once setup opened it
}

func (mb *member) isLeaving() bool {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	return mb.leaving
}

func (mb *member) stop() {
	mb.cancel()
	<-mb.done
}

func (mb *member) wantKey() string {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	return mb.want.full
}

func (mb *member) spec() v1.PostgresClusterSpec {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	return mb.want.spec
}

func (mb *member) update(w memberWant) {
	mb.mu.Lock()
	mb.want = w
	if mb.leaving {
		// Declared again (labelled back in): it stays.
		mb.leaving, mb.leaveMarked, mb.leaveMsg, mb.republish = false, false, "", true
		mb.a.log.Info("postgres member: declared again; staying in the cluster", "cluster", w.spec.Cluster)
	}
	mb.mu.Unlock()
}

func (mb *member) set(phase string, failed bool, msg string) {
	mb.mu.Lock()
	changed := mb.phase != phase || mb.message != msg || mb.failed != failed
	if changed {
		mb.a.log.Info("postgres member", "cluster", mb.want.spec.Cluster, "phase", phase, "message", msg)
	}
	mb.phase, mb.failed, mb.message = phase, failed, msg
	kv := mb.kv
	mb.mu.Unlock()
	// While it sets up, the member tells the others and people what it is
	// doing (the cluster page, harmony failover status); once its
	// failover role runs, keep publishes its parameters instead.
	if changed && kv != nil && phase != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		v, _ := json.Marshal(failover.MemberRecord{Phase: phase, Failed: failed, Message: msg, At: time.Now().UTC()})
		_ = failover.PutKey(ctx, kv, failover.MemberPrefix+mb.a.cfg.ID, v)
	}
}

// instanceOf is the local PostgreSQL of a declared member.
func instanceOf(node string, s v1.PostgresClusterSpec) *pg.Instance {
	return &pg.Instance{Name: node, BinDir: s.BinDir, DataDir: s.DataDir, Port: s.Port, SocketDir: s.SocketDir,
		OSUser: s.OSUser, Superuser: s.Superuser, PassFile: s.DataDir + ".pgpass",
		LogFile: filepath.Join(s.LogDir, "postgresql.log")}
}

// failoverConfig is the failover section a declared member runs with.
func (mb *member) failoverConfig(s v1.PostgresClusterSpec) *config.Failover {
	f := config.DefaultFailover()
	f.Cluster, f.Node, f.Strategy, f.Profile, f.HTTP = s.Cluster, mb.a.cfg.ID, s.Strategy, s.Profile, s.HTTP
	f.Peer = s.Peer
	if f.Peer == "off" {
		f.Peer = ""
	}
	host := s.Host
	if host == "" {
		host, _ = os.Hostname()
	}
	f.Postgres = config.FailoverPostgres{BinDir: s.BinDir, DataDir: s.DataDir, Port: s.Port, SocketDir: s.SocketDir,
		Host: host, OSUser: s.OSUser, Superuser: s.Superuser}
	return &f
}

// setupError is a failure of setting the member up. One a person must
// mend (another cluster's data, a version mismatch) touches nothing and is
// checked again every recheckWait, so that the member joins once the
// directory is moved away.
type setupError struct {
	reason     string
	needsHuman bool
	err        error
}

// recheckWait: how often a member that needs a person looks again.
const recheckWait = 15 * time.Second

func (e *setupError) Error() string { return e.err.Error() }

func (mb *member) run(ctx context.Context) {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval = 500*time.Millisecond, 10*time.Second
	for ctx.Err() == nil {
		err := mb.setup(ctx)
		if err == nil {
			mb.set("", false, "")
			bo.Reset()
			err = mb.serve(ctx)
			if ctx.Err() != nil {
				return
			}
			if ok, ierr := instanceOf(mb.a.cfg.ID, mb.spec()).Initialized(); ierr == nil && !ok {
				continue // the data directory went: set it up again (a clone)
			}
			mb.set(ReasonMemberFailed, true, fmt.Sprintf("failover role stopped: %v", err))
		} else if ctx.Err() != nil {
			return
		} else {
			var se *setupError
			if !errors.As(err, &se) {
				se = &setupError{reason: ReasonMemberFailed, err: err}
			}
			mb.set(se.reason, true, se.Error())
			if se.needsHuman {
				bo.Reset()
				select {
				case <-ctx.Done():
					return
				case <-time.After(recheckWait):
				}
				continue
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(bo.NextBackOff()):
		}
	}
}

// serve runs the failover role and, while this member is the primary,
// keeps the declared roles and databases.
func (mb *member) serve(ctx context.Context) error {
	mb.mu.Lock()
	w := mb.want
	mb.mu.Unlock()
	s := w.spec
	in := instanceOf(mb.a.cfg.ID, s)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	kv, err := mb.openBucket(ctx, s)
	if err != nil {
		return err
	}
	started := func(l *failover.Loop) {
		mb.mu.Lock()
		mb.loop = l
		mb.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			mb.keep(ctx, in, l, func() store.KV { return kv }, cancel)
		}()
	}
	defer func() {
		mb.mu.Lock()
		mb.loop = nil
		mb.mu.Unlock()
	}()
	return mb.a.runMember(ctx, mb.st, mb.failoverConfig(s), failoverExtras{passFile: in.PassFile, logFile: in.LogFile, started: started})
}

// keyRestart is the lock a replica holds in its cluster's bucket while it
// restarts (one at a time); a member's own record is
// failover.MemberPrefix + node (failover.MemberRecord).
const keyRestart = "restart"

// restartLock is the value of keyRestart.
type restartLock struct {
	Node string    `json:"node"`
	At   time.Time `json:"at"`
}

// switchoverRetry: a primary that asked for a switchover (to restart) and
// is still the primary asks again after this long (the target was not
// ready, say).
const switchoverRetry = 15 * time.Second

// paramsHash identifies a set of parameters (their canonical JSON).
func paramsHash(canonical string) string {
	h := sha256.Sum256([]byte(canonical))
	return hex.EncodeToString(h[:8])
}

// staleRestartLock: a lock older than this is taken over (its holder
// died mid-restart).
const staleRestartLock = 2 * time.Minute

// keep applies the cluster's parameters, rolls restarts through the
// cluster, and, on the primary, makes the declared roles and databases.
//
// A changed parameter is written to the member's settings file only if
// PostgreSQL takes its value (else the old file stays and the member
// reports the refusal), then reloaded. What needs a restart is rolled:
// replicas restart one at a time (a lock key), and the primary, once no
// replica waits for a restart, hands over to its synchronous standby (a
// switchover, the only write pause) and restarts as a replica when it
// rejoins.
func (mb *member) keep(ctx context.Context, in *pg.Instance, l *failover.Loop, kv func() store.KV, stop func()) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	params, passLine := "", ""
	tickN := 0
	var published *failover.MemberRecord
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		mb.mu.Lock()
		w := mb.want
		done := mb.ensured
		mb.mu.Unlock()
		if ok, err := in.Initialized(); err == nil && !ok {
			// The data directory is gone (a disk replaced, a mistake):
			// stop what still runs from it and set the member up again,
			// which clones it from the primary.
			n := in.KillOrphanedServer(ctx)
			mb.a.log.Warn("postgres member: data directory gone; cloning it again", "data_dir", in.DataDir, "killed", n)
			mb.set(ReasonCloning, false, "data directory gone: cloning it again")
			stop()
			return
		}
		if line := pg.PassFileLine(w.spec.Superuser, w.password); line != passLine {
			if err := in.WriteOwned(in.PassFile, []byte(line)); err != nil {
				mb.a.log.Warn("postgres member: password file", "err", err)
			} else {
				passLine = line
			}
		}
		if running, _ := in.Running(); !running {
			continue
		}
		if p, _ := v1.Marshal(w.spec.Parameters); string(p) != params {
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			refused, err := in.TrySettings(rctx, w.spec.Parameters)
			if err == nil && len(refused) == 0 {
				err = in.Reload(rctx)
			}
			cancel()
			switch {
			case err != nil:
				mb.a.log.Warn("postgres member: parameters", "err", err)
				continue
			case len(refused) > 0:
				mb.setRefused("PostgreSQL refuses spec.parameters: " + strings.Join(refused, "; ") + " (the previous parameters stay)")
			default:
				mb.setRefused("")
			}
			params = string(p)
		}
		b := kv()
		if b == nil {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		pending, err := in.PendingRestart(rctx)
		if err != nil {
			mb.a.log.Warn("postgres member: pending restarts", "err", err)
		}
		if err == nil {
			mb.mu.Lock()
			mb.pending = pending
			rec := failover.MemberRecord{Params: paramsHash(params), PendingRestart: pending, Leaving: mb.leaving, Message: mb.leaveMsg, At: time.Now().UTC()}
			if mb.republish {
				published, mb.republish = nil, false
			}
			mb.mu.Unlock()
			if published == nil || published.Params != rec.Params || !slices.Equal(published.PendingRestart, rec.PendingRestart) ||
				published.Leaving != rec.Leaving || published.Message != rec.Message {
				v, _ := json.Marshal(rec)
				if failover.PutKey(rctx, b, failover.MemberPrefix+mb.a.cfg.ID, v) == nil {
					published = &rec
				}
			}
			if len(pending) > 0 {
				mb.roll(rctx, in, l, b, pending, rec.Params)
			}
		}
		cancel()
		if mb.operate(ctx, in, l, b, stop) {
			return
		}
		if l.Node().Status != failover.StatusPrimary {
			continue
		}
		if tickN++; tickN%10 == 0 {
			mb.dropLeftSlots(ctx, in, b)
		}
		rb, _ := v1.Marshal(struct {
			R []pg.LoginRole
			D []pg.Database
			S string
		}{w.roles, w.databases, w.password})
		if string(rb) == done {
			continue
		}
		rctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		// The superuser's password follows its secret (the other members'
		// password files already have the new one), then the roles.
		err = in.SetSuperuserPassword(rctx, w.password)
		if err == nil {
			err = in.EnsureRolesAndDatabases(rctx, w.roles, w.databases)
		}
		cancel()
		if err != nil {
			mb.a.log.Warn("postgres member: roles and databases", "err", err)
			continue
		}
		mb.mu.Lock()
		mb.ensured = string(rb)
		mb.mu.Unlock()
	}
}

// roll takes this member's step of a rolling restart.
func (mb *member) roll(ctx context.Context, in *pg.Instance, l *failover.Loop, kv store.KV, pending []string, params string) {
	snap := l.Snapshot()
	switch snap.Node.Status {
	case failover.StatusReplica:
		if !snap.Healthy || !mb.lockRestart(ctx, kv) {
			return
		}
		mb.a.log.Info("postgres member: restarting for its parameters (rolling restart)", "parameters", strings.Join(pending, ","))
		if err := in.Restart(ctx); err != nil {
			mb.a.log.Warn("postgres member: restart", "err", err)
		}
		if e, err := kv.Get(ctx, keyRestart); err == nil {
			_ = kv.Delete(ctx, keyRestart, e.Revision)
		}
	case failover.StatusPrimary:
		cs := snap.Node.CS
		if cs.Sync == "" || !mb.othersDone(ctx, kv, cs.Primary, params) {
			return
		}
		if time.Since(mb.askedAt) < switchoverRetry {
			return // asked already; the primary's loop is on it
		}
		mb.a.log.Info("postgres member: handing over to restart for its parameters (rolling restart)", "to", cs.Sync, "parameters", strings.Join(pending, ","))
		req, _ := json.Marshal(failover.SwitchoverRequest{To: cs.Sync, Epoch: cs.Epoch})
		if failover.PutKey(ctx, kv, failover.KeySwitchover, req) == nil {
			mb.askedAt = time.Now()
		}
	}
}

// dropLeftSlots drops, on the primary, the slots of members that left
// (their heartbeat key and record were removed when they did).
func (mb *member) dropLeftSlots(ctx context.Context, in *pg.Instance, kv store.KV) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// A member is one with a heartbeat or a record: one still cloning has
	// only its record, and its slot (made by the clone) must stay.
	var members []string
	for _, prefix := range []string{failover.HeartbeatPrefix, failover.MemberPrefix} {
		es, err := kv.List(ctx, prefix+"*")
		if err != nil {
			return
		}
		for _, e := range es {
			members = append(members, strings.TrimPrefix(e.Key, prefix))
		}
	}
	if dropped, err := in.DropSlotsExcept(ctx, members); err != nil {
		mb.a.log.Warn("postgres member: drop the slots of members that left", "err", err)
	} else if len(dropped) > 0 {
		mb.a.log.Info("postgres member: dropped the slots of members that left", "slots", strings.Join(dropped, ","))
	}
}

// operate carries out (or refuses) an operator's request for this member
// (op.<node>). It reports whether the member is stopping to clone itself
// again (reinit).
func (mb *member) operate(ctx context.Context, in *pg.Instance, l *failover.Loop, kv store.KV, stop func()) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	key := failover.OpPrefix + mb.a.cfg.ID
	e, err := kv.Get(ctx, key)
	if err != nil {
		return false
	}
	var op failover.Operation
	if json.Unmarshal(e.Value, &op) != nil || op.Done || op.ID == "" {
		return false
	}
	answer := func(refused bool, format string, args ...any) {
		op.Done, op.Refused, op.Result = true, refused, fmt.Sprintf(format, args...)
		v, _ := json.Marshal(op)
		if _, err := kv.Update(ctx, key, v, e.Revision); err != nil {
			mb.a.log.Warn("postgres member: answer an operation", "op", op.Op, "err", err)
		}
		mb.a.log.Info("postgres member: operation", "op", op.Op, "refused", refused, "result", op.Result)
	}
	snap := l.Snapshot()
	n := snap.Node
	switch op.Op {
	case failover.OpReload:
		if err := in.Reload(ctx); err != nil {
			answer(true, "reload failed: %v", err)
		} else {
			answer(false, "reloaded")
		}
	case failover.OpRestart:
		switch n.Status {
		case failover.StatusPrimary:
			if n.CS.Sync == "" {
				answer(true, "%s is the primary and has no synchronous standby to hand over to: a restart would stop every write", mb.a.cfg.ID)
				return false
			}
			req, _ := json.Marshal(failover.SwitchoverRequest{To: n.CS.Sync, Epoch: n.CS.Epoch})
			if err := failover.PutKey(ctx, kv, failover.KeySwitchover, req); err != nil {
				answer(true, "switchover request: %v", err)
				return false
			}
			answer(false, "handing over to %s first; %s restarts as it rejoins as a replica", n.CS.Sync, mb.a.cfg.ID)
		case failover.StatusReplica:
			if why := mb.onlyStandby(ctx, kv, n); why != "" {
				answer(true, "%s", why)
				return false
			}
			if !mb.lockRestart(ctx, kv) {
				answer(true, "another member is restarting; try again in a moment")
				return false
			}
			err := in.Restart(ctx)
			if e, gerr := kv.Get(ctx, keyRestart); gerr == nil {
				_ = kv.Delete(ctx, keyRestart, e.Revision)
			}
			if err != nil {
				answer(true, "restart failed: %v", err)
			} else {
				answer(false, "restarted")
			}
		default:
			answer(true, "%s is %s: restart it once it is a primary or a replica again", mb.a.cfg.ID, n.Status)
		}
	case failover.OpReinit:
		if n.Status == failover.StatusPrimary || n.CS.Primary == mb.a.cfg.ID {
			answer(true, "%s is the primary: switch over first (harmony failover switchover --to NODE --cluster %s)", mb.a.cfg.ID, mb.spec().Cluster)
			return false
		}
		if why := mb.onlyStandby(ctx, kv, n); why != "" {
			answer(true, "%s", why)
			return false
		}
		answer(false, "removing the data directory and cloning it again from %s", n.CS.Primary)
		if running, _ := in.Running(); running {
			_ = in.Fence(ctx, 0)
		}
		if err := os.RemoveAll(in.DataDir); err != nil {
			mb.a.log.Warn("postgres member: reinit", "err", err)
			return false
		}
		mb.set(ReasonCloning, false, "re-initialising: cloning again")
		stop()
		return true
	default:
		answer(true, "unknown operation %q (restart, reload or reinit)", op.Op)
	}
	return false
}

// onlyStandby says why taking this replica down would stop writes (it is
// the only synchronous standby of an AbsoluteConsistency cluster), or "".
func (mb *member) onlyStandby(ctx context.Context, kv store.KV, n failover.Node) string {
	if n.Strategy != failover.AbsoluteConsistency || n.CS.Sync != mb.a.cfg.ID {
		return ""
	}
	es, err := kv.List(ctx, failover.HeartbeatPrefix+"*")
	if err != nil {
		return fmt.Sprintf("cannot tell whether another standby streams: %v", err)
	}
	for _, e := range es {
		node := strings.TrimPrefix(e.Key, failover.HeartbeatPrefix)
		if node == mb.a.cfg.ID || node == n.CS.Primary {
			continue
		}
		if hb, err := failover.DecodeHeartbeat(e.Value); err == nil && hb.Status == failover.StatusReplica && hb.Streaming {
			return ""
		}
	}
	return fmt.Sprintf("%s is the only synchronous standby of an AbsoluteConsistency cluster and no other replica streams: taking it down would stop every write until it is back", mb.a.cfg.ID)
}

// lockRestart takes the restart lock (one replica restarts at a time).
func (mb *member) lockRestart(ctx context.Context, kv store.KV) bool {
	v, _ := json.Marshal(restartLock{Node: mb.a.cfg.ID, At: time.Now().UTC()})
	e, err := kv.Get(ctx, keyRestart)
	switch {
	case errors.Is(err, store.ErrNotFound):
		_, err = kv.Create(ctx, keyRestart, v)
		return err == nil
	case err != nil:
		return false
	}
	var cur restartLock
	if json.Unmarshal(e.Value, &cur) == nil && cur.Node != mb.a.cfg.ID && time.Since(cur.At) < staleRestartLock {
		return false
	}
	_, err = kv.Update(ctx, keyRestart, v, e.Revision)
	return err == nil
}

// othersDone: every other member has no restart pending and its
// heartbeat says it is a healthy replica.
func (mb *member) othersDone(ctx context.Context, kv store.KV, self, params string) bool {
	es, err := kv.List(ctx, failover.HeartbeatPrefix+"*")
	if err != nil {
		return false
	}
	replicas := 0
	for _, e := range es {
		node := strings.TrimPrefix(e.Key, failover.HeartbeatPrefix)
		if node == self {
			continue
		}
		hb, err := failover.DecodeHeartbeat(e.Value)
		if err != nil || hb.Status != failover.StatusReplica || !hb.Streaming {
			return false
		}
		me, err := kv.Get(ctx, failover.MemberPrefix+node)
		if err != nil {
			return false
		}
		var r failover.MemberRecord
		if json.Unmarshal(me.Value, &r) != nil || r.Params != params || len(r.PendingRestart) > 0 {
			return false
		}
		replicas++
	}
	return replicas > 0
}

func (mb *member) setRefused(msg string) {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	mb.refused = msg
}

// setup brings the data directory to a cluster member: kept when it holds
// this cluster, made by initdb on the member that wins the bootstrap,
// cloned from the primary on the others.
func (mb *member) setup(ctx context.Context) error {
	mb.mu.Lock()
	w := mb.want
	mb.mu.Unlock()
	s := w.spec
	in := instanceOf(mb.a.cfg.ID, s)
	if w.password == "" {
		return &setupError{reason: ReasonMemberFailed, err: errors.New("spec.superuserPassword: no value (the secret's key is empty)")}
	}
	if err := in.WriteOwned(in.PassFile, []byte(pg.PassFileLine(s.Superuser, w.password))); err != nil {
		return fmt.Errorf("password file: %w", err)
	}
	if err := in.PrepareDirs(); err != nil {
		return fmt.Errorf("spec.logDir or spec.socketDir: %w", err)
	}
	kv, err := mb.openBucket(ctx, s)
	if err != nil {
		return &setupError{reason: ReasonStarting, err: fmt.Errorf("failover bucket of cluster %s: %w", s.Cluster, err)}
	}
	mb.mu.Lock()
	mb.kv = kv
	mb.mu.Unlock()
	boot, bootRev, err := readBootstrap(ctx, kv)
	if err != nil {
		return err
	}
	have, err := in.Initialized()
	if err != nil {
		return err
	}
	if have {
		return mb.check(ctx, in, s, kv, boot, bootRev)
	}
	if boot == nil || (boot.Node == mb.a.cfg.ID && boot.SystemID == "") {
		if boot == nil {
			b, _ := json.Marshal(bootstrapRecord{Node: mb.a.cfg.ID, At: time.Now().UTC()})
			rev, err := kv.Create(ctx, KeyBootstrap, b)
			if errors.Is(err, store.ErrConflict) {
				return &setupError{reason: ReasonWaitingPrimary, err: errors.New("another member is initialising the cluster")}
			}
			if err != nil {
				return err
			}
			bootRev = rev
		}
		return mb.initialise(ctx, in, s, w, kv, bootRev)
	}
	return mb.clone(ctx, in, s, kv, boot)
}

func (mb *member) openBucket(ctx context.Context, s v1.PostgresClusterSpec) (store.KV, error) {
	if mb.a.cfg.NATSNkey != "" {
		// The server grants this device its cluster when it first asks
		// (its desired state declares the member).
		return mb.st.Open(ctx, failover.BucketName(s.Cluster))
	}
	return failover.EnsureBucket(ctx, mb.st, s.Cluster, 1)
}

func readBootstrap(ctx context.Context, kv store.KV) (*bootstrapRecord, uint64, error) {
	e, err := kv.Get(ctx, KeyBootstrap)
	if errors.Is(err, store.ErrNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	var r bootstrapRecord
	if err := json.Unmarshal(e.Value, &r); err != nil {
		return nil, 0, fmt.Errorf("bootstrap record: %w", err)
	}
	return &r, e.Revision, nil
}

// check refuses a data directory that holds another cluster or another
// version, and writes this member's settings.
func (mb *member) check(ctx context.Context, in *pg.Instance, s v1.PostgresClusterSpec, kv store.KV, boot *bootstrapRecord, rev uint64) error {
	if v, err := in.Version(); err == nil && v != s.Version {
		return &setupError{reason: ReasonVersion, needsHuman: true,
			err: fmt.Errorf("spec.version: %d, but the data directory %s holds a PostgreSQL %d cluster; nothing was changed", s.Version, s.DataDir, v)}
	}
	id, err := in.SystemID(ctx)
	if err != nil {
		return err
	}
	switch {
	case boot == nil:
		// A data directory made before the cluster was declared: it
		// becomes the cluster's (its agent config said so before).
		b, _ := json.Marshal(bootstrapRecord{Node: mb.a.cfg.ID, SystemID: id, At: time.Now().UTC()})
		if _, err := kv.Create(ctx, KeyBootstrap, b); err != nil && !errors.Is(err, store.ErrConflict) {
			return err
		}
	case boot.SystemID == "" && boot.Node == mb.a.cfg.ID:
		boot.SystemID = id
		b, _ := json.Marshal(boot)
		if _, err := kv.Update(ctx, KeyBootstrap, b, rev); err != nil {
			return err
		}
	case boot.SystemID != "" && boot.SystemID != id:
		return &setupError{reason: ReasonOtherCluster, needsHuman: true,
			err: fmt.Errorf("spec.dataDir: %s holds another cluster (system identifier %s; cluster %s's is %s); nothing was changed", s.DataDir, id, s.Cluster, boot.SystemID)}
	}
	return in.WriteSettings(s.Parameters)
}

// initialise runs initdb, starts the first primary and names it so.
func (mb *member) initialise(ctx context.Context, in *pg.Instance, s v1.PostgresClusterSpec, w memberWant, kv store.KV, rev uint64) error {
	mb.set(ReasonBootstrapping, false, "initialising the cluster (initdb)")
	if err := portFree(s.Port); err != nil {
		return err
	}
	// A half-made directory from an earlier attempt goes.
	if err := os.RemoveAll(s.DataDir); err != nil {
		return err
	}
	if err := in.Init(ctx, w.password); err != nil {
		return err
	}
	if err := in.WriteSettings(s.Parameters); err != nil {
		return err
	}
	if err := in.Start(ctx); err != nil {
		return &setupError{reason: ReasonMemberFailed, err: fmt.Errorf("first start: %w (log: %s)", err, in.LogFile)}
	}
	id, err := in.SystemID(ctx)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(bootstrapRecord{Node: mb.a.cfg.ID, SystemID: id, At: time.Now().UTC()})
	if _, err := kv.Update(ctx, KeyBootstrap, b, rev); err != nil {
		return err
	}
	// The first primary: the failover role names it when it starts (it
	// finds its PostgreSQL a primary and no cluster-state).
	return failover.Bootstrap(ctx, kv, mb.a.cfg.ID, "")
}

// clone copies the current primary's data and starts as its standby.
func (mb *member) clone(ctx context.Context, in *pg.Instance, s v1.PostgresClusterSpec, kv store.KV, boot *bootstrapRecord) error {
	primary, err := currentPrimary(ctx, kv, s)
	if err != nil {
		return &setupError{reason: ReasonWaitingPrimary, err: fmt.Errorf("waiting for the primary (the cluster was initialised by %s): %w", boot.Node, err)}
	}
	if err := portFree(s.Port); err != nil {
		return err
	}
	mb.set(ReasonCloning, false, "cloning from "+primary.Name)
	primary.PassFile = in.PassFile
	if err := in.Clone(ctx, primary); err != nil {
		return &setupError{reason: ReasonCloning, err: fmt.Errorf("clone from %s: %w", primary.Name, err)}
	}
	if err := in.WriteSettings(s.Parameters); err != nil {
		return err
	}
	if err := in.Start(ctx); err != nil {
		return &setupError{reason: ReasonMemberFailed, err: fmt.Errorf("first start: %w (log: %s)", err, in.LogFile)}
	}
	return nil
}

// currentPrimary is where the primary that cluster-state names is, from
// its heartbeat.
func currentPrimary(ctx context.Context, kv store.KV, s v1.PostgresClusterSpec) (*pg.Instance, error) {
	e, err := kv.Get(ctx, failover.KeyClusterState)
	if err != nil {
		return nil, fmt.Errorf("no cluster-state yet: %w", err)
	}
	cs, _, err := failover.DecodeState(e)
	if err != nil {
		return nil, err
	}
	hbe, err := kv.Get(ctx, failover.HeartbeatPrefix+cs.Primary)
	if err != nil {
		return nil, fmt.Errorf("no heartbeat of %s yet: %w", cs.Primary, err)
	}
	hb, err := failover.DecodeHeartbeat(hbe.Value)
	if err != nil {
		return nil, err
	}
	if hb.Status != failover.StatusPrimary || hb.Host == "" || hb.Port == 0 {
		return nil, fmt.Errorf("%s is %s, not serving as primary yet", cs.Primary, hb.Status)
	}
	user := hb.User
	if user == "" {
		user = s.Superuser
	}
	return &pg.Instance{Name: cs.Primary, SocketDir: hb.Host, Port: hb.Port, Superuser: user}, nil
}

// portFree refuses to start on a port another program listens on.
func portFree(port int) error {
	ln, err := net.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		return &setupError{reason: ReasonPortInUse, err: fmt.Errorf("spec.port: %d is in use by another program on this device", port)}
	}
	return ln.Close()
}

// result is the member's status, from its setup phase or its failover
// role.
func (mb *member) result() Result {
	mb.mu.Lock()
	phase, failed, msg, loop, s, refused, pending := mb.phase, mb.failed, mb.message, mb.loop, mb.want.spec, mb.refused, mb.pending
	mb.mu.Unlock()
	details := map[string]string{"cluster": s.Cluster, "port": strconv.Itoa(s.Port)}
	switch {
	case failed:
		details[detailReason] = phase
		return Result{Phase: v1.PhaseFailed, Message: msg, Details: details}
	case phase != "" || loop == nil:
		details[detailReason] = phase
		if phase == "" {
			details[detailReason] = ReasonStarting
		}
		return Result{Phase: v1.PhaseProgressing, Message: strings.TrimSpace(msg + " "), Details: details}
	}
	snap := loop.Snapshot()
	n := snap.Node
	details["role"], details["primary"], details["epoch"] = string(n.Status), n.CS.Primary, strconv.FormatUint(n.CS.Epoch, 10)
	if n.CS.Sync != "" {
		details["syncStandby"] = n.CS.Sync
	}
	if len(pending) > 0 {
		details["pendingRestart"] = strings.Join(pending, ",")
	}
	if refused != "" {
		details[detailReason] = ReasonInvalidParameter
		return Result{Phase: v1.PhaseFailed, Message: refused, Details: details}
	}
	switch n.Status {
	case failover.StatusPrimary:
		return Result{Phase: v1.PhaseReady, Message: fmt.Sprintf("primary of %s (epoch %d)", s.Cluster, n.CS.Epoch), Details: details}
	case failover.StatusReplica:
		if snap.Healthy {
			return Result{Phase: v1.PhaseReady, Message: fmt.Sprintf("replica of %s", n.CS.Primary), Details: details}
		}
		details[detailReason] = ReasonNotStreaming
		return Result{Phase: v1.PhaseProgressing, Message: fmt.Sprintf("replica of %s, not healthy yet", n.CS.Primary), Details: details}
	case failover.StatusFailed:
		details[detailReason] = ReasonMemberFailed
		return Result{Phase: v1.PhaseFailed, Message: "member failed its checks", Details: details}
	}
	details[detailReason] = string(n.Status)
	return Result{Phase: v1.PhaseProgressing, Message: strings.ToLower(string(n.Status)), Details: details}
}
