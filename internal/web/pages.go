package web

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/harmony-fleet/harmony/api/httpapi"
	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/failover"
)

func (d *Dashboard) loginPage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	q := &request{w: w, r: r}
	p := page{Title: "Sign in", Version: d.page(q, "", "", nil).Version, Data: map[string]string{"Next": safeNext(r.URL.Query().Get("next"))}}
	d.render(q, http.StatusOK, "login", p)
}

// safeNext keeps a post-login redirect on this server: a path (and query)
// only, rebuilt from its parsed form, so that no scheme, host, backslash or
// control character (browsers drop tabs: "/\t/evil" is "//evil") gets
// through.
func safeNext(next string) string {
	for _, c := range next {
		if c < 0x20 || c == 0x7f || c == '\\' {
			return "/"
		}
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || !strings.HasPrefix(u.Path, "/") || strings.HasPrefix(u.Path, "//") {
		return "/"
	}
	return (&url.URL{Path: u.Path, RawQuery: u.RawQuery}).RequestURI()
}

func (d *Dashboard) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	q := &request{w: w, r: r}
	next := safeNext(r.PostFormValue("next"))
	again := func(status int, msg string) {
		d.render(q, status, "login", page{Title: "Sign in", Flash: msg, Data: map[string]string{"Next": next}})
	}
	if o := r.Header.Get("Origin"); o != "" && !sameOrigin(o, r) {
		again(http.StatusForbidden, "Sign-in refused: the form did not come from this server.")
		return
	}
	t, err := d.auth.try(r, strings.TrimSpace(r.PostFormValue("token")))
	if errors.Is(err, ErrRateLimited) {
		again(http.StatusTooManyRequests, "Too many failed sign-ins from this address; wait a few seconds.")
		return
	}
	if err != nil {
		d.log.Warn("dashboard: failed sign-in", "client", clientAddr(r))
		again(http.StatusUnauthorized, "Unknown token.")
		return
	}
	if err := d.auth.issue(w, r, t); err != nil {
		again(http.StatusInternalServerError, err.Error())
		return
	}
	d.log.Info("dashboard: signed in", "token", t.Name, "role", t.Role, "client", clientAddr(r))
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (d *Dashboard) logout(w http.ResponseWriter, r *http.Request) {
	if s, err := d.auth.session(r); err == nil {
		if d.auth.checkCSRF(r, s) != nil {
			http.Error(w, "missing or wrong CSRF token", http.StatusForbidden)
			return
		}
	}
	clearSession(w, r)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// deploymentRow is a deployment with its roll-up and bar.
type deploymentRow struct {
	httpapi.DeploymentStatus
	State string // Succeeded, Failed, Progressing, No devices
	Bar   bar
}

// bar is a stacked progress bar in percent of the matched devices.
type bar struct {
	Succeeded, Failed, Pending, Offline string // widths, percent
	FailedX, PendingX, OfflineX         string // left edges
	Title                               string
}

func newBar(s httpapi.DeploymentStatus) bar {
	x := 0.0
	seg := func(n int) (string, string) {
		if s.Matched == 0 {
			return "0", "0"
		}
		w := 100 * float64(n) / float64(s.Matched)
		at := x
		x += w
		return fmtPct(w), fmtPct(at)
	}
	var b bar
	b.Succeeded, _ = seg(s.Succeeded)
	b.Failed, b.FailedX = seg(s.Failed)
	b.Pending, b.PendingX = seg(s.Pending)
	b.Offline, b.OfflineX = seg(s.Offline)
	b.Title = fmt.Sprintf("%d succeeded, %d failed, %d pending, %d offline of %d", s.Succeeded, s.Failed, s.Pending, s.Offline, s.Matched)
	return b
}

func fmtPct(f float64) string { return strconv.FormatFloat(math.Round(f*100)/100, 'f', -1, 64) }

func pct(n, of int) string {
	if of == 0 {
		return "0"
	}
	return fmtPct(100 * float64(n) / float64(of))
}

func deploymentState(s httpapi.DeploymentStatus) string {
	switch {
	case s.Matched == 0:
		return "No devices"
	case s.Failed > 0:
		return "Failed"
	case s.Succeeded == s.Matched:
		return "Succeeded"
	default:
		return "Progressing"
	}
}

// rows are the deployments' lines, in the order given (by name).
func rows(counts []httpapi.DeploymentStatus) []deploymentRow {
	out := make([]deploymentRow, len(counts))
	for i, s := range counts {
		out[i] = deploymentRow{DeploymentStatus: s, State: deploymentState(s), Bar: newBar(s)}
	}
	return out
}

// attention is one line of the overview's list of things to look at.
type attention struct {
	Kind, Subject, Link, Message string
}

type overviewData struct {
	Devices, Online, Offline                    int
	Deployments, Succeeded, Failed, Progressing int
	Attention                                   []attention
	More                                        int // attention lines left out
	// Hold is what the orphan guard holds back (Held 0: nothing).
	Hold httpapi.OrphanHold
	// HoldCauses describes Hold's causes, for the banner.
	HoldCauses string
}

// orphanHolder is a Backend whose operator guards the removal of orphaned
// desired state (docs/adr/0014-orphan-collection-guard.md): the overview
// shows a banner while removals are held.
type orphanHolder interface {
	OrphanHold() httpapi.OrphanHold
}

// holdCauses says "12 device gone, 3 deployment gone".
func holdCauses(h httpapi.OrphanHold) string {
	var parts []string
	for _, c := range httpapi.Causes() {
		if n := h.Causes[c]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, strings.ReplaceAll(c, "-", " ")))
		}
	}
	return strings.Join(parts, ", ")
}

const attentionMax = 20

func (d *Dashboard) overview(q *request) {
	// The operator's running counts: no pass over the fleet per request.
	sum := d.b.Summary()
	var o overviewData
	if oh, ok := d.b.(orphanHolder); ok {
		o.Hold = oh.OrphanHold()
		o.HoldCauses = holdCauses(o.Hold)
	}
	for _, r := range rows(sum.Deployments) {
		o.Deployments++
		switch r.State {
		case "Failed":
			o.Failed++
			o.Attention = append(o.Attention, attention{"Failed deployment", r.Name, "/deployments/" + url.PathEscape(r.Name),
				fmt.Sprintf("%d of %d devices failed; last error: %s", r.DeploymentStatus.Failed, r.Matched, r.LastError)})
		case "Succeeded":
			o.Succeeded++
		default:
			o.Progressing++
		}
	}
	o.Devices, o.Online, o.Offline = sum.Fleet.Devices, sum.Fleet.Online, sum.Fleet.Offline
	// Offline devices and conflicts, described only as far as shown.
	type later struct{ kind, id, key string }
	var rest []later
	for _, id := range sum.Offline {
		rest = append(rest, later{"Offline device", id, ""})
	}
	for _, key := range sum.Conflicts {
		dev, _, _ := v1.SplitDeviceKey(key)
		rest = append(rest, later{"Conflict", dev, key})
	}
	for _, l := range rest {
		if len(o.Attention) >= attentionMax {
			o.More++
			continue
		}
		if l.key == "" {
			msg := "never sent a heartbeat"
			if age, ok := d.b.HeartbeatAge(l.id); ok {
				msg = "last heartbeat " + ago(age.Seconds())
			}
			o.Attention = append(o.Attention, attention{l.kind, l.id, "/devices/" + url.PathEscape(l.id), msg})
			continue
		}
		_, dep, _ := v1.SplitDeviceKey(l.key)
		o.Attention = append(o.Attention, attention{l.kind, l.id + " / " + dep, "/devices/" + url.PathEscape(l.id), d.b.StateMessage(l.key)})
	}
	if len(o.Attention) > attentionMax {
		o.More += len(o.Attention) - attentionMax
		o.Attention = o.Attention[:attentionMax]
	}
	d.render(q, http.StatusOK, "overview", d.page(q, "Overview", "overview", o))
}

type deploymentsData struct {
	Rows []deploymentRow
	// A rejected apply: the text as it was sent, and why.
	Manifest, ApplyError string
}

func (d *Dashboard) deployments(q *request) {
	d.render(q, http.StatusOK, "deployments", d.page(q, "Deployments", "deployments",
		deploymentsData{Rows: rows(d.b.Summary().Deployments)}))
}

type deploymentData struct {
	Deployment v1.Deployment
	Spec       string
	Row        deploymentRow
	// Devices is one page of the per-device table, the ones that need
	// attention first.
	Devices     []httpapi.DeploymentDevice
	Page, Pages int
	Prev, Next  string
	// Rollout is the progressive rollout's section (rollout.go).
	Rollout rolloutView
}

// rollOrder puts failed devices first, then offline, then pending, then
// the ones that are done.
func rollOrder(r httpapi.DeploymentDevice) int {
	switch r.Phase {
	case v1.PhaseFailed, v1.PhaseConflict:
		return 0
	case httpapi.PhaseOffline:
		return 1
	case v1.PhaseReady:
		return 3
	default:
		return 2
	}
}

// attentionPage is lines [from, from+n) of a deployment's table (rolls, in
// device order) ordered by rollOrder, device order kept within each
// class: one pass counts the classes, one picks the page's lines, so that
// a page costs the deployment's devices, not a sort of them.
func attentionPage(rolls []httpapi.DeploymentDevice, from, n int) []httpapi.DeploymentDevice {
	n = max(0, min(n, len(rolls)-from))
	var start [4]int // where each class begins in the ordered table
	for _, r := range rolls {
		if c := rollOrder(r); c < 3 {
			start[c+1]++
		}
	}
	for c := 1; c < 4; c++ {
		start[c] += start[c-1]
	}
	out := make([]httpapi.DeploymentDevice, n)
	for _, r := range rolls {
		c := rollOrder(r)
		if at := start[c] - from; at >= 0 && at < n {
			out[at] = r
		}
		start[c]++
	}
	return out
}

func (d *Dashboard) deployment(q *request) {
	name := q.r.PathValue("name")
	view, ok := d.b.Deployment(name)
	if !ok {
		d.notFound(q, fmt.Sprintf("deployment %q does not exist", name))
		return
	}
	dep, st := view.Deployment, view.Status
	spec, _ := yaml.Marshal(dep)
	data := deploymentData{Deployment: dep, Spec: string(spec), Page: 1}
	rolls := st.Devices
	st.Devices = nil
	data.Pages = max(1, (len(rolls)+d.size-1)/d.size)
	if n, err := strconv.Atoi(q.r.URL.Query().Get("page")); err == nil && n > 0 {
		data.Page = min(n, data.Pages)
	}
	data.Devices = attentionPage(rolls, (data.Page-1)*d.size, d.size)
	if data.Page > 1 {
		data.Prev = fmt.Sprintf("/deployments/%s?page=%d", url.PathEscape(name), data.Page-1)
	}
	if data.Page < data.Pages {
		data.Next = fmt.Sprintf("/deployments/%s?page=%d", url.PathEscape(name), data.Page+1)
	}
	data.Row = deploymentRow{DeploymentStatus: st, State: deploymentState(st), Bar: newBar(st)}
	if ro, ok := d.b.Rollout(name); ok {
		data.Rollout = newRolloutView(ro)
	}
	d.render(q, http.StatusOK, "deployment", d.page(q, "Deployment "+name, "deployments", data))
}

func (d *Dashboard) apply(q *request) {
	body := q.r.PostFormValue("manifest")
	// A rejected manifest comes back in the form with the reason, so that
	// nothing typed is lost.
	rejected := func(msg string) {
		if q.r.Header.Get("HX-Request") == "true" {
			d.fail(q, http.StatusBadRequest, "Not applied", msg)
			return
		}
		d.render(q, http.StatusBadRequest, "deployments", d.page(q, "Deployments", "deployments",
			deploymentsData{Rows: rows(d.b.Summary().Deployments), Manifest: body, ApplyError: msg}))
	}
	if strings.TrimSpace(body) == "" {
		rejected("nothing to apply: paste one or more deployments (YAML or JSON)")
		return
	}
	res, err := d.b.Apply(q.r.Context(), []byte(body))
	if err != nil {
		rejected(err.Error())
		return
	}
	d.log.Info("dashboard: applied", "token", q.s.Name, "result", strings.Join(res, "; "))
	http.Redirect(q.w, q.r, "/deployments?"+d.flash(strings.Join(res, "; ")), http.StatusSeeOther)
}

func (d *Dashboard) delete(q *request) {
	name := q.r.PathValue("name")
	if err := d.b.Delete(q.r.Context(), name); err != nil {
		d.fail(q, http.StatusBadRequest, "Not deleted", err.Error())
		return
	}
	d.log.Info("dashboard: deleted", "token", q.s.Name, "deployment", name)
	http.Redirect(q.w, q.r, "/deployments?"+d.flash("deleted "+name), http.StatusSeeOther)
}

func (d *Dashboard) undo(q *request) {
	name := q.r.PathValue("name")
	gen, err := d.b.Undo(q.r.Context(), name)
	if err != nil {
		d.fail(q, http.StatusBadRequest, "Not undone", err.Error())
		return
	}
	d.log.Info("dashboard: undone", "token", q.s.Name, "deployment", name, "generation", gen)
	http.Redirect(q.w, q.r, "/deployments/"+name+"?"+d.flash(fmt.Sprintf("%s: the previous spec is back, as generation %d", name, gen)), http.StatusSeeOther)
}

type devicesData struct {
	Selector, State string
	Error           string
	Devices         []httpapi.Device
	Total, Matched  int
	Page, Pages     int
	Prev, Next      string
}

func (d *Dashboard) devices(q *request) {
	qs := q.r.URL.Query()
	data := devicesData{Selector: qs.Get("selector"), State: qs.Get("state"), Page: 1}
	sel, err := v1.ParseSelector(data.Selector)
	if err != nil {
		data.Error = "selector: " + err.Error()
		sel = v1.Selector{} // every device, with the error shown
	}
	if n, err := strconv.Atoi(qs.Get("page")); err == nil && n > 0 {
		data.Page = n
	}
	// Only the page's devices are worked out in full (by the Backend); a
	// page past the end (a link from a longer list) shows the last one.
	pageOf := func(page int) DevicePage {
		return d.b.Devices(DeviceQuery{Selector: sel, State: data.State, From: (page - 1) * d.size, Limit: d.size})
	}
	res := pageOf(data.Page)
	data.Pages = max(1, (res.Matched+d.size-1)/d.size)
	if data.Page > data.Pages {
		data.Page = data.Pages
		res = pageOf(data.Page)
		data.Pages = max(1, (res.Matched+d.size-1)/d.size)
		data.Page = min(data.Page, data.Pages)
	}
	data.Devices, data.Total, data.Matched = res.Items, res.Total, res.Matched
	link := func(p int) string {
		v := url.Values{}
		if data.Selector != "" {
			v.Set("selector", data.Selector)
		}
		if data.State != "" {
			v.Set("state", data.State)
		}
		v.Set("page", strconv.Itoa(p))
		return "/devices?" + v.Encode()
	}
	if data.Page > 1 {
		data.Prev = link(data.Page - 1)
	}
	if data.Page < data.Pages {
		data.Next = link(data.Page + 1)
	}
	d.render(q, http.StatusOK, "devices", d.page(q, "Devices", "devices", data))
}

type deviceData struct {
	Device httpapi.Device
	Info   v1.DeviceInfo
	Exec   bool
	States []v1.DeviceState
	Output *v1.CommandReply // logs or exec result
	Asked  string           // what Output answers
}

func (d *Dashboard) deviceData(q *request) (deviceData, bool) {
	id := q.r.PathValue("id")
	dev, info, ok := d.b.Device(id)
	if !ok {
		d.notFound(q, fmt.Sprintf("device %q is not known", id))
		return deviceData{}, false
	}
	return deviceData{Device: dev.Device, Info: info, Exec: info.Can(v1.CapabilityExec), States: dev.States}, true
}

func (d *Dashboard) device(q *request) {
	data, ok := d.deviceData(q)
	if !ok {
		return
	}
	d.render(q, http.StatusOK, "device", d.page(q, "Device "+data.Device.ID, "devices", data))
}

// logs shows the tail of one resource's output: as a fragment for htmx,
// else on the device page.
func (d *Dashboard) logs(q *request) {
	qs := q.r.URL.Query()
	req := v1.CommandRequest{Op: v1.OpLogs, Deployment: qs.Get("deployment"), Resource: qs.Get("resource"), Lines: 100}
	d.command(q, req, "logs of "+req.Deployment+"/"+req.Resource)
}

func (d *Dashboard) exec(q *request) {
	args := strings.Fields(q.r.PostFormValue("command"))
	d.log.Info("dashboard: exec", "token", q.s.Name, "device", q.r.PathValue("id"), "command", args)
	d.command(q, v1.CommandRequest{Op: v1.OpExec, Command: args}, "$ "+strings.Join(args, " "))
}

func (d *Dashboard) command(q *request, req v1.CommandRequest, asked string) {
	data, ok := d.deviceData(q)
	if !ok {
		return
	}
	reply, err := d.b.Command(q.r.Context(), data.Device.ID, req)
	if err != nil {
		reply = v1.CommandReply{OK: false, Error: err.Error()}
	}
	data.Output, data.Asked = &reply, asked
	if q.r.Header.Get("HX-Request") == "true" {
		t := d.pages["device"]
		q.w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := t.ExecuteTemplate(q.w, "output", data); err != nil {
			d.log.Error("render", "page", "device output", "err", err)
		}
		return
	}
	p := d.page(q, "Device "+data.Device.ID, "devices", data)
	p.Self = "/devices/" + url.PathEscape(data.Device.ID) // refreshing must not run the command again
	d.render(q, http.StatusOK, "device", p)
}

type clusterRow struct {
	Name  string
	View  failover.View
	Error string
}

func (d *Dashboard) clusters(q *request) {
	names, err := d.b.Clusters(q.r.Context())
	var out []clusterRow
	for _, n := range names {
		v, err := d.b.Cluster(q.r.Context(), n)
		row := clusterRow{Name: n, View: v}
		if err != nil {
			row.Error = err.Error()
		}
		out = append(out, row)
	}
	data := map[string]any{"Clusters": out, "Error": ""}
	if err != nil {
		data["Error"] = err.Error()
	}
	d.render(q, http.StatusOK, "clusters", d.page(q, "HA clusters", "clusters", data))
}

type clusterData struct {
	Name     string
	View     failover.View
	History  []failover.HistoryEntry
	Timeline timeline
	Error    string
}

func (d *Dashboard) cluster(q *request) {
	name := q.r.PathValue("name")
	v, err := d.b.Cluster(q.r.Context(), name)
	var hist []failover.HistoryEntry
	if err == nil {
		hist, err = d.b.ClusterHistory(q.r.Context(), name)
	}
	data := clusterData{Name: name, View: v, History: hist, Timeline: newTimeline(hist, time.Now())}
	if err != nil {
		data.Error = err.Error()
	}
	// Newest first in the table.
	sort.Slice(data.History, func(i, j int) bool { return data.History[i].Revision > data.History[j].Revision })
	d.render(q, http.StatusOK, "cluster", d.page(q, "Cluster "+name, "clusters", data))
}

func ago(secs float64) string {
	switch {
	case secs < 0:
		return "never"
	case secs < 1:
		return "just now"
	case secs < 120:
		return fmt.Sprintf("%.0fs ago", secs)
	case secs < 7200:
		return fmt.Sprintf("%.0fm ago", secs/60)
	default:
		return fmt.Sprintf("%.1fh ago", secs/3600)
	}
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func labelText(m map[string]string) string {
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ", ")
}

// phaseClass maps a phase to a CSS class.
func phaseClass(phase string) string {
	switch phase {
	case v1.PhaseReady, "Succeeded", "primary", "Converged":
		return "ok"
	case v1.PhaseFailed, v1.PhaseConflict, "Offline":
		return "bad"
	default:
		return "wait"
	}
}
