package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/harmony-fleet/harmony/api/httpapi"
	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/failover"
	"github.com/harmony-fleet/harmony/internal/operator"
	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/web"
)

// gate serves HTTP from the moment the server starts: until the store has
// answered and the operator exists, the dashboard shows that the server is
// starting, /healthz is up and everything else says 503; then every request
// goes to the full handler.
type gate struct {
	h       atomic.Pointer[handler]
	dash    *web.Dashboard
	waiting atomic.Pointer[string] // what start-up is waiting for
}

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h := g.h.Load(); h != nil {
		h.ServeHTTP(w, r)
		return
	}
	reason := "server: starting: " + g.Progress()
	switch p := r.URL.Path; {
	case p == "/healthz":
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
	case p == "/readyz":
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "operator": web.Starting, "reasons": []string{reason}})
	case strings.HasPrefix(p, "/api/"):
		if enrollPath(r) {
			apiError(w, httpapi.Errorf(httpapi.CodeStoreUnavailable, "%s", reason))
		} else if _, ok := authorizeAPI(g.dash, w, r); ok {
			apiError(w, httpapi.Errorf(httpapi.CodeStoreUnavailable, "%s", reason))
		}
	case p == "/metrics":
		apiError(w, httpapi.Errorf(httpapi.CodeStoreUnavailable, "%s", reason))
	default:
		g.dash.ServeHTTP(w, r)
	}
}

func (g *gate) wait(what string) { g.waiting.Store(&what) }

// The dashboard's Backend.

var _ web.Backend = (*gate)(nil)

func (g *gate) Phase() string {
	if h := g.h.Load(); h != nil {
		return string(h.op.Phase())
	}
	return web.Starting
}

func (g *gate) Progress() string {
	if h := g.h.Load(); h != nil {
		return h.op.Progress()
	}
	if w := g.waiting.Load(); w != nil {
		return *w
	}
	return "starting"
}

func (g *gate) Stale() time.Time {
	if h := g.h.Load(); h != nil {
		return h.stale()
	}
	return time.Time{}
}

// Summary, Deployment, Devices and Device answer in the API's types,
// through the API's own conversions (views.go), from the operator's
// narrow reads; only the device list copies the view, and works out in
// full only the page it shows.

func (g *gate) Summary() web.Summary {
	if h := g.h.Load(); h != nil {
		return summary(h.op.Rollup())
	}
	return web.Summary{}
}

// summary is the overview's and the deployment list's reading of the
// running roll-up.
func summary(r operator.Rollup) web.Summary {
	return web.Summary{Fleet: fleetCounts(r), Deployments: deploymentCounts(r), Offline: r.OfflineIDs, Conflicts: r.Conflicts}
}

func (g *gate) Deployment(name string) (httpapi.DeploymentView, bool) {
	if h := g.h.Load(); h != nil {
		d, st, ok := h.op.Deployment(name)
		return deploymentView(d, st), ok
	}
	return httpapi.DeploymentView{}, false
}

func (g *gate) Devices(q web.DeviceQuery) web.DevicePage {
	h := g.h.Load()
	if h == nil {
		return web.DevicePage{}
	}
	return devicePage(h.op.Snapshot(), q)
}

// devicePage is one page of the device list: the devices the query
// selects, by id, of which only the page's are worked out in full.
func devicePage(s operator.Snapshot, q web.DeviceQuery) web.DevicePage {
	var keep func(string) bool
	switch q.State {
	case web.StateOnline:
		keep = s.Online
	case web.StateOffline:
		keep = func(id string) bool { return !s.Online(id) }
	}
	ids := matchingDevices(s, q.Selector, keep)
	from := min(max(0, q.From), len(ids))
	return web.DevicePage{Total: len(s.Devices), Matched: len(ids),
		Items: devicesOf(s, ids[from:min(from+max(0, q.Limit), len(ids))])}
}

func (g *gate) Device(id string) (httpapi.DeviceView, v1.DeviceInfo, bool) {
	if h := g.h.Load(); h != nil {
		d, ok := h.op.Device(id)
		return deviceView(d), d.Info, ok
	}
	return httpapi.DeviceView{}, v1.DeviceInfo{}, false
}

func (g *gate) HeartbeatAge(id string) (time.Duration, bool) {
	if h := g.h.Load(); h != nil {
		return h.op.HeartbeatAge(id)
	}
	return 0, false
}

func (g *gate) StateMessage(key string) string {
	if h := g.h.Load(); h != nil {
		return h.op.StateMessage(key)
	}
	return ""
}

var errStarting = errors.New("the server is starting; try again in a moment")

func (g *gate) Apply(ctx context.Context, body []byte) ([]string, error) {
	h := g.h.Load()
	if h == nil {
		return nil, errStarting
	}
	res, e := h.applyDocs(ctx, body)
	var out []string
	for _, r := range res {
		out = append(out, fmt.Sprintf("%s %s (generation %d)", r.Name, r.Result, r.Generation))
	}
	if e != nil {
		msg := e.Message // names the document and the field
		if len(out) > 0 {
			msg += " (stored before the failure: " + strings.Join(out, "; ") + ")"
		}
		return out, errors.New(msg)
	}
	return out, nil
}

func (g *gate) Delete(ctx context.Context, name string) error {
	h := g.h.Load()
	if h == nil {
		return errStarting
	}
	err := h.deleteOne(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("deployment %q does not exist", name)
	}
	return err
}

// Undo makes the deployment's previous spec its spec again (as a new
// generation).
func (g *gate) Undo(ctx context.Context, name string) (int64, error) {
	h := g.h.Load()
	if h == nil {
		return 0, errStarting
	}
	res, e := h.undo(ctx, name, 0)
	if e != nil {
		return 0, errors.New(e.Message)
	}
	return res.Generation, nil
}

// Rollout is the deployment's rollout from the operator's read model, as
// GET /api/v1/deployments/{name}/rollout answers.
func (g *gate) Rollout(name string) (v1.RolloutStatus, bool) {
	if h := g.h.Load(); h != nil {
		return h.op.RolloutStatus(name)
	}
	return v1.RolloutStatus{}, false
}

func (g *gate) PauseRollout(ctx context.Context, name, by string) error {
	return g.pauseOrResume(ctx, name, by, true)
}

func (g *gate) ResumeRollout(ctx context.Context, name, by string) error {
	return g.pauseOrResume(ctx, name, by, false)
}

// pauseOrResume is the API's pause or resume (rollout.go). A refusal is
// returned as the *httpapi.Error itself (the page answers with its
// status); no refusal is a nil error, never an error holding a nil
// *httpapi.Error.
func (g *gate) pauseOrResume(ctx context.Context, name, by string, pause bool) error {
	h := g.h.Load()
	if h == nil {
		return errStarting
	}
	if _, e := h.pauseOrResume(ctx, name, by, pause); e != nil {
		return e
	}
	return nil
}

func (g *gate) Command(ctx context.Context, device string, req v1.CommandRequest) (v1.CommandReply, error) {
	h := g.h.Load()
	if h == nil {
		return v1.CommandReply{}, errStarting
	}
	timeout := 10 * time.Second
	if req.Op == v1.OpExec {
		timeout = (v1.ExecTimeoutLimit + 5) * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	reply, e := h.sendCommand(ctx, device, req)
	if e != nil {
		return v1.CommandReply{}, errors.New(e.Message)
	}
	return reply, nil
}

func (g *gate) Clusters(ctx context.Context) ([]string, error) {
	h := g.h.Load()
	if h == nil {
		return nil, errStarting
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.StoreTimeout.Std())
	defer cancel()
	names := h.js.KeyValueStoreNames(ctx)
	var out []string
	for n := range names.Name() {
		if c, ok := strings.CutPrefix(n, failover.BucketName("")); ok {
			out = append(out, c)
		}
	}
	sort.Strings(out)
	return out, names.Error()
}

func (g *gate) Cluster(ctx context.Context, name string) (failover.View, error) {
	var v failover.View
	err := g.withCluster(ctx, name, func(ctx context.Context, kv store.KV) (err error) {
		v, err = failover.ReadView(ctx, kv, name)
		return err
	})
	return v, err
}

func (g *gate) ClusterHistory(ctx context.Context, name string) ([]failover.HistoryEntry, error) {
	var hist []failover.HistoryEntry
	err := g.withCluster(ctx, name, func(ctx context.Context, kv store.KV) (err error) {
		hist, err = failover.ReadHistory(ctx, kv)
		return err
	})
	return hist, err
}

// withCluster runs read on a cluster's failover bucket within store_timeout.
func (g *gate) withCluster(ctx context.Context, name string, read func(context.Context, store.KV) error) error {
	h := g.h.Load()
	if h == nil {
		return errStarting
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.StoreTimeout.Std())
	defer cancel()
	kv, err := h.st.Open(ctx, failover.BucketName(name))
	if errors.Is(err, store.ErrBucketNotFound) {
		return fmt.Errorf("no HA cluster %q", name)
	}
	if err != nil {
		return err
	}
	return read(ctx, kv)
}

// dashboardSecrets returns the tokens that may sign in and the key that
// signs sessions, both kept in the data directory: the key in
// dashboard-session.key, and, when no token is configured, a generated
// admin token in admin-token (the secret itself: whoever can read that file
// is the server's admin). Both files are 0600. Without a data directory
// (an external NATS may have none) the key lives in memory, so sessions end
// with the process, and only configured tokens can sign in.
func dashboardSecrets(cfg config.Server, log *slog.Logger) ([]web.Token, []byte, error) {
	var tokens []web.Token
	for _, t := range cfg.Tokens {
		tokens = append(tokens, web.Token{Name: t.Name, Role: web.Role(t.Role), SHA256: sha(t.SHA256)})
	}
	if cfg.DataDir == "" {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, nil, err
		}
		if len(tokens) == 0 {
			log.Warn("dashboard: no tokens configured and no data_dir to keep a generated one in: nobody can sign in")
		}
		return tokens, key, nil
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, nil, fmt.Errorf("data dir: %w", err)
	}
	keyHex, err := readOrCreateSecret(filepath.Join(cfg.DataDir, "dashboard-session.key"))
	if err != nil {
		return nil, nil, err
	}
	key, _ := hex.DecodeString(keyHex)
	if len(tokens) == 0 {
		path := filepath.Join(cfg.DataDir, "admin-token")
		secret, err := readOrCreateSecret(path)
		if err != nil {
			return nil, nil, err
		}
		tokens = append(tokens, web.Token{Name: "admin", Role: web.Admin, SHA256: sha(web.HashToken(secret))})
		log.Info("dashboard: no tokens configured; the admin token is in a file", "path", path)
	}
	return tokens, key, nil
}

// sha decodes a validated hex SHA-256.
func sha(h string) [32]byte {
	var sum [32]byte
	b, _ := hex.DecodeString(h)
	copy(sum[:], b)
	return sum
}

// readOrCreateSecret reads a hex secret from path, creating it (32 random
// bytes, mode 0600) when missing.
func readOrCreateSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		s := strings.TrimSpace(string(b))
		if raw, err := hex.DecodeString(s); err != nil || len(raw) < 32 {
			return "", fmt.Errorf("%s: want at least 64 hex digits", path)
		}
		return s, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	s := hex.EncodeToString(raw[:])
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	if _, err := f.WriteString(s + "\n"); err != nil {
		f.Close()
		return "", err
	}
	return s, f.Close()
}
