// Package web is the dashboard: server-rendered pages (html/template) with
// htmx for the live parts, every asset embedded in the binary. It reads the
// fleet through a Backend, in the HTTP API's types (api/httpapi), and never
// talks to the store or the operator itself.
package web

import (
	"bytes"
	"context"
	"crypto/hmac"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/harmony-fleet/harmony/api/httpapi"
	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/buildinfo"
	"github.com/harmony-fleet/harmony/internal/failover"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// The operator's phases as the API shows them (httpapi.Status.Operator),
// and the one the dashboard shows before there is an operator.
const (
	// Starting: the server is up but has not reached the store yet.
	Starting = "Starting"
	// Recovering: the operator is rebuilding its view; what it holds may
	// be incomplete.
	Recovering = "Recovering"
	// Converged: the view is complete.
	Converged = "Converged"
)

// Fleet is what the fleet pages (overview, deployments, devices) read: the
// operator's view in the HTTP API's types (api/httpapi), converted by the
// same functions as the API's answers, so that a page and the API cannot
// show the fleet differently. Every method is safe for concurrent use and
// answers from the operator's narrow reads: only Devices looks at the whole
// fleet, and it works out in full only the page it returns.
type Fleet interface {
	// Phase is Starting, Recovering or Converged; Progress says why not
	// Converged yet.
	Phase() string
	Progress() string
	// Stale is when the store stopped answering (zero: it answers).
	Stale() time.Time
	// Summary is the counts the overview and the deployments list show,
	// kept up to date by the operator: reading them costs the number of
	// deployments and of offline devices, not the fleet's size.
	Summary() Summary
	// Deployment answers for one deployment, with its device table, as
	// GET /api/v1/deployments/{name} does.
	Deployment(name string) (httpapi.DeploymentView, bool)
	// Rollout is a deployment's progressive rollout, as GET
	// /api/v1/deployments/{name}/rollout answers it (Phase "": the
	// deployment never rolled out in batches); false: no such deployment.
	Rollout(name string) (v1.RolloutStatus, bool)
	// Devices is one page of the device list, as GET /api/v1/devices
	// shows each device.
	Devices(q DeviceQuery) DevicePage
	// Device answers for one device as GET /api/v1/devices/{id} does,
	// with the device info the agent reported (its capabilities).
	Device(id string) (httpapi.DeviceView, v1.DeviceInfo, bool)
	// HeartbeatAge and StateMessage describe one device or one
	// <device>.<deployment> pair (the overview's attention list).
	HeartbeatAge(id string) (time.Duration, bool)
	StateMessage(key string) string
}

// Summary is the fleet at a glance.
type Summary struct {
	Fleet httpapi.FleetCounts
	// Deployments are every deployment's counts, without the devices'
	// lines, sorted by name.
	Deployments []httpapi.DeploymentStatus
	// Offline are the offline devices' ids, sorted.
	Offline []string
	// Conflicts are the <device>.<deployment> keys in Conflict, sorted.
	Conflicts []string
}

// States a device list can be narrowed to (DeviceQuery.State).
const (
	StateOnline  = "online"
	StateOffline = "offline"
)

// DeviceQuery asks for one page of the device list.
type DeviceQuery struct {
	// Selector selects by the devices' effective labels (the zero
	// Selector selects every device).
	Selector v1.Selector
	// State is StateOnline or StateOffline to keep those only; anything
	// else keeps both.
	State string
	// From and Limit pick the page: the matched devices [From,
	// From+Limit), by id.
	From, Limit int
}

// DevicePage is one page of the device list.
type DevicePage struct {
	Items []httpapi.Device
	// Total is the number of devices known, Matched of those the query
	// selects.
	Total, Matched int
}

// Backend is what the dashboard reads from, and asks of, the server.
type Backend interface {
	Fleet
	// Apply stores the deployments of a YAML or JSON document stream and
	// says what happened to each.
	Apply(ctx context.Context, body []byte) ([]string, error)
	Delete(ctx context.Context, name string) error
	// Undo makes the deployment's previous spec its spec again, as a new
	// generation (docs/operator.md, "Going back"), and returns it.
	Undo(ctx context.Context, name string) (int64, error)
	// PauseRollout and ResumeRollout pause a Progressing rollout or
	// resume a Paused one, as the API's rollout/pause and rollout/resume
	// do; by names who asked (the pause's reason says it). An
	// *httpapi.Error among the errors gives the page its status.
	PauseRollout(ctx context.Context, name, by string) error
	ResumeRollout(ctx context.Context, name, by string) error
	Command(ctx context.Context, device string, req v1.CommandRequest) (v1.CommandReply, error)
	// Clusters lists the HA clusters that have a failover bucket. The
	// failover status is not part of the HTTP API (api/httpapi), so the
	// cluster pages read internal/failover's own types.
	Clusters(ctx context.Context) ([]string, error)
	Cluster(ctx context.Context, name string) (failover.View, error)
	// ClusterHistory is the retained history of a cluster's state (the
	// detail page's timeline only: the list does not read it).
	ClusterHistory(ctx context.Context, name string) ([]failover.HistoryEntry, error)
}

// Options configure the dashboard.
type Options struct {
	Backend Backend
	Tokens  []Token
	// SessionKey signs session cookies (at least 32 bytes).
	SessionKey []byte
	Log        *slog.Logger
	// Poll is how often a live part of a page refreshes (default 2s; 1s
	// while the server is not converged).
	Poll time.Duration
	// PageSize is the number of devices per page (default 50).
	PageSize int
}

// Dashboard is an http.Handler for every dashboard path.
type Dashboard struct {
	b     Backend
	auth  *auth
	log   *slog.Logger
	poll  time.Duration
	size  int
	pages map[string]*template.Template
	mux   *http.ServeMux
}

// New builds the dashboard.
func New(o Options) (*Dashboard, error) {
	if len(o.SessionKey) < 32 {
		return nil, errors.New("web: session key must be at least 32 bytes")
	}
	if o.Poll <= 0 {
		o.Poll = 2 * time.Second
	}
	if o.PageSize <= 0 {
		o.PageSize = 50
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	d := &Dashboard{b: o.Backend, auth: newAuth(o.SessionKey, o.Tokens), log: o.Log, poll: o.Poll, size: o.PageSize,
		pages: map[string]*template.Template{}, mux: http.NewServeMux()}
	if err := d.parse(); err != nil {
		return nil, err
	}
	static, _ := fs.Sub(staticFS, "static")
	d.mux.Handle("GET /static/", http.StripPrefix("/static/", cacheStatic(http.FileServerFS(static))))
	d.mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/static/favicon.svg", http.StatusMovedPermanently)
	})
	d.mux.HandleFunc("GET /login", d.loginPage)
	d.mux.HandleFunc("POST /login", d.login)
	d.mux.HandleFunc("POST /logout", d.logout)
	d.mux.HandleFunc("GET /{$}", d.read(d.overview))
	d.mux.HandleFunc("GET /deployments", d.read(d.deployments))
	d.mux.HandleFunc("POST /deployments", d.write(d.apply))
	d.mux.HandleFunc("GET /deployments/{name}", d.read(d.deployment))
	d.mux.HandleFunc("POST /deployments/{name}/delete", d.write(d.delete))
	d.mux.HandleFunc("POST /deployments/{name}/undo", d.write(d.undo))
	d.mux.HandleFunc("POST /deployments/{name}/rollout/pause", d.write(d.pauseRollout))
	d.mux.HandleFunc("POST /deployments/{name}/rollout/resume", d.write(d.resumeRollout))
	d.mux.HandleFunc("GET /devices", d.read(d.devices))
	d.mux.HandleFunc("GET /devices/{id}", d.read(d.device))
	d.mux.HandleFunc("GET /devices/{id}/logs", d.read(d.logs))
	d.mux.HandleFunc("POST /devices/{id}/exec", d.write(d.exec))
	d.mux.HandleFunc("GET /clusters", d.read(d.clusters))
	d.mux.HandleFunc("GET /clusters/{name}", d.read(d.cluster))
	return d, nil
}

// csp allows scripts, styles and images from this server only: no inline
// script or style anywhere in the dashboard.
const csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; " +
	"base-uri 'none'; frame-ancestors 'none'; form-action 'self'"

func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
	d.mux.ServeHTTP(w, r)
}

func cacheStatic(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		next.ServeHTTP(w, r)
	})
}

// request is one signed-in request.
type request struct {
	w    http.ResponseWriter
	r    *http.Request
	s    session
	csrf string
}

func (q *request) admin() bool { return q.s.Role == Admin }

// live reports whether htmx asked for the live part only.
func (q *request) live() bool {
	return q.r.Header.Get("HX-Request") == "true" && q.r.Header.Get("HX-Target") == "live"
}

// read wraps a page that needs a session.
func (d *Dashboard) read(page func(*request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, err := d.auth.session(r)
		if err != nil {
			d.toLogin(w, r)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		page(&request{w: w, r: r, s: s, csrf: d.auth.csrf(s)})
	}
}

// write wraps a mutating request: signed in, CSRF-checked, admin only.
func (d *Dashboard) write(action func(*request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 4*v1.MaxDeploymentBytes)
		s, err := d.auth.session(r)
		if err != nil {
			d.toLogin(w, r)
			return
		}
		q := &request{w: w, r: r, s: s, csrf: d.auth.csrf(s)}
		if err := r.ParseForm(); err != nil {
			d.fail(q, http.StatusRequestEntityTooLarge, "Refused", "the form could not be read: "+err.Error())
			return
		}
		if err := d.auth.checkCSRF(r, s); err != nil {
			d.fail(q, http.StatusForbidden, "Refused", err.Error())
			return
		}
		if s.Role != Admin {
			d.fail(q, http.StatusForbidden, "Not allowed", fmt.Sprintf("%s is a viewer: viewers can look but not apply, delete or run commands.", s.Name))
			return
		}
		action(q)
	}
}

func (d *Dashboard) toLogin(w http.ResponseWriter, r *http.Request) {
	target := "/login?next=" + url.QueryEscape(r.URL.RequestURI())
	if r.Header.Get("HX-Request") == "true" {
		w.Header().Set("HX-Redirect", target) // htmx navigates the whole page
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if r.Method != http.MethodGet {
		http.Error(w, "sign in first", http.StatusUnauthorized)
		return
	}
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// parse reads every page template together with the layout.
func (d *Dashboard) parse() error {
	funcs := template.FuncMap{
		"ago":      ago,
		"bytes":    humanBytes,
		"pct":      func(n, of int) string { return pct(n, of) },
		"join":     strings.Join,
		"labels":   labelText,
		"phaseCSS": phaseClass,
		"add":      func(a, b int) int { return a + b },
		"num":      fmtPct,
		"batchCSS": batchClass,
		"rollCSS":  rolloutClass,
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return err
	}
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if base == "layout" {
			continue
		}
		t, err := template.New(base).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return fmt.Errorf("web: template %s: %w", n, err)
		}
		d.pages[base] = t
	}
	return nil
}

// page is what every template gets.
type page struct {
	Title    string
	Nav      string // which menu entry is current
	Self     string // this page's URL, for the live refresh
	User     string
	Role     Role
	Admin    bool
	CSRF     string
	Phase    string
	Progress string
	Stale    string
	Poll     string
	Version  string
	Flash    string
	// Hold: the view is not complete (starting, recovering), so the page
	// shows the banner and not numbers that could be wrong.
	Hold bool
	Data any
}

func (d *Dashboard) page(q *request, title, nav string, data any) page {
	p := page{Title: title, Nav: nav, User: q.s.Name, Role: q.s.Role, Admin: q.admin(),
		CSRF: q.csrf, Phase: d.b.Phase(), Version: buildinfo.Version, Flash: d.flashOf(q.r), Data: data}
	if q.r.Method == http.MethodGet {
		p.Self = q.r.URL.RequestURI() // what the live part re-requests
	}
	p.Poll = d.poll.String()
	if p.Phase != Converged {
		p.Progress = d.b.Progress()
		p.Poll = "1s"
		p.Hold = true
	}
	if t := d.b.Stale(); !t.IsZero() {
		p.Stale = t.UTC().Format(time.RFC3339)
	}
	return p
}

// render writes a page, or only its live part when htmx asked for it.
func (d *Dashboard) render(q *request, status int, name string, p page) {
	t, ok := d.pages[name]
	if !ok {
		http.Error(q.w, "no template "+name, http.StatusInternalServerError)
		return
	}
	block := "layout"
	if q.live() {
		block = "live"
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, block, p); err != nil {
		d.log.Error("render", "page", name, "err", err)
		http.Error(q.w, "render: "+err.Error(), http.StatusInternalServerError)
		return
	}
	q.w.Header().Set("Content-Type", "text/html; charset=utf-8")
	q.w.WriteHeader(status)
	_, _ = buf.WriteTo(q.w)
}

// flash is the query that shows msg once on the page redirected to. It is
// signed, so that a link made elsewhere cannot put words on the page.
func (d *Dashboard) flash(msg string) string {
	return url.Values{"msg": {msg}, "ms": {d.auth.sign([]byte("flash:" + msg))}}.Encode()
}

func (d *Dashboard) flashOf(r *http.Request) string {
	msg := r.URL.Query().Get("msg")
	if msg == "" || !hmac.Equal([]byte(r.URL.Query().Get("ms")), []byte(d.auth.sign([]byte("flash:"+msg)))) {
		return ""
	}
	return msg
}

// fail renders an error page (or, for htmx, the message alone; for a live
// refresh, the error page's live part, so that the page keeps refreshing).
func (d *Dashboard) fail(q *request, status int, title, msg string) {
	if q.r.Header.Get("HX-Request") == "true" && !q.live() {
		q.w.Header().Set("Content-Type", "text/html; charset=utf-8")
		q.w.WriteHeader(status)
		fmt.Fprintf(q.w, `<p class="error">%s: %s</p>`, template.HTMLEscapeString(title), template.HTMLEscapeString(msg))
		return
	}
	p := d.page(q, title, "", msg)
	p.Hold = false // an error says what it says, whatever the view
	d.render(q, status, "error", p)
}

// notFound answers for a deployment or device the view does not hold. While
// the view is incomplete (starting, recovering) it may just not be there
// yet: the page is held, with the banner, and keeps refreshing, instead of
// saying "not found".
func (d *Dashboard) notFound(q *request, msg string) {
	if d.b.Phase() != Converged {
		d.render(q, http.StatusOK, "error", d.page(q, "Waiting for the view", "", msg))
		return
	}
	d.fail(q, http.StatusNotFound, "Not found", msg)
}
