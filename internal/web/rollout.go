package web

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"

	"github.com/harmony-fleet/harmony/api/httpapi"
	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
)

// The deployment page's Rollout section (docs/adr/0028-progressive-rollouts.md):
// where a progressive rollout is, one line per batch with its devices by
// phase (as numbers and as a bar), the devices that failed the gate, and,
// for admins, the pause or resume button. It is part of the page's live
// part, so the buttons follow the phase.

// rolloutView is the section; the zero value (Phase "") shows nothing.
type rolloutView struct {
	// The headline is Head + ": " + Phase + Tail: "generation 5 rolling
	// out from generation 4: Progressing, batch 2 of 3".
	Head, Phase, Tail string
	Reason            string
	Batches           []batchView
	Failed            []failedDevice
	// MoreFailed is how many failed devices the list leaves out.
	MoreFailed int
	// Pause and Resume say which button an admin is offered.
	Pause, Resume bool
}

type batchView struct {
	N int // from 1
	v1.RolloutBatchStatus
	Current bool
	Bar     segBar
}

type failedDevice struct{ Device, Reason string }

// segBar is a stacked bar of a batch's devices by phase, in percent of
// the batch; what no segment covers is the background.
type segBar struct {
	Title string
	Segs  []seg
}

type seg struct{ Class, X, W string }

// maxFailedShown bounds the failed devices listed (the CLI's `harmony
// rollout status` lists them all).
const maxFailedShown = 50

// newRolloutView is the section for st.
func newRolloutView(st v1.RolloutStatus) rolloutView {
	v := rolloutView{Phase: st.Phase, Reason: st.Reason,
		Pause: st.Phase == v1.RolloutProgressing, Resume: st.Phase == v1.RolloutPaused}
	v.Head, v.Tail = st.Headline()
	for i, b := range st.Batches {
		v.Batches = append(v.Batches, batchView{N: i + 1, RolloutBatchStatus: b, Current: i+1 == st.Batch, Bar: batchBar(b)})
	}
	for _, id := range slices.Sorted(maps.Keys(st.Failed)) {
		if len(v.Failed) == maxFailedShown {
			v.MoreFailed = len(st.Failed) - maxFailedShown
			break
		}
		v.Failed = append(v.Failed, failedDevice{Device: id, Reason: st.Failed[id]})
	}
	return v
}

// batchBar draws a batch's devices from the ones done to the ones not yet
// given the change: ready, updating, failed, offline, waiting.
func batchBar(b v1.RolloutBatchStatus) segBar {
	out := segBar{Title: fmt.Sprintf("%d ready, %d updating, %d waiting, %d failed, %d offline of %d",
		b.Ready, b.Updating, b.Waiting, b.Failed, b.Offline, b.Devices)}
	x := 0.0
	for _, p := range []struct {
		class string
		n     int
	}{{"s", b.Ready}, {"p", b.Updating}, {"f", b.Failed}, {"o", b.Offline}, {"w", b.Waiting}} {
		if p.n == 0 || b.Devices == 0 {
			continue
		}
		w := 100 * float64(p.n) / float64(b.Devices)
		out.Segs = append(out.Segs, seg{Class: p.class, X: fmtPct(x), W: fmtPct(w)})
		x += w
	}
	return out
}

// batchClass colours a batch's state.
func batchClass(state string) string {
	switch state {
	case v1.BatchDone:
		return "ok"
	case v1.BatchInProgress:
		return "wait"
	default:
		return "hint"
	}
}

// rolloutClass colours a rollout's phase.
func rolloutClass(phase string) string {
	switch phase {
	case v1.RolloutSucceeded:
		return "ok"
	case v1.RolloutRolledBack:
		return "bad"
	default:
		return "wait"
	}
}

func (d *Dashboard) pauseRollout(q *request)  { d.rolloutAction(q, true) }
func (d *Dashboard) resumeRollout(q *request) { d.rolloutAction(q, false) }

// rolloutAction pauses or resumes a deployment's rollout, as `harmony
// rollout pause|resume` does, in the signed-in token's name.
func (d *Dashboard) rolloutAction(q *request, pause bool) {
	name := q.r.PathValue("name")
	call, title, done := d.b.PauseRollout, "Not paused", "rollout paused: no further device is given the change until it is resumed"
	if !pause {
		call, title, done = d.b.ResumeRollout, "Not resumed", "rollout resumed: its current batch is judged afresh"
	}
	if err := call(q.r.Context(), name, q.s.Name); err != nil {
		d.fail(q, errorStatus(err), title, err.Error())
		return
	}
	d.log.Info("dashboard: "+done, "token", q.s.Name, "deployment", name)
	http.Redirect(q.w, q.r, "/deployments/"+url.PathEscape(name)+"?"+d.flash(name+": "+done), http.StatusSeeOther)
}

// errorStatus is the HTTP status of an API error (a conflict, a store
// that does not answer), 400 for any other.
func errorStatus(err error) int {
	var e *httpapi.Error
	if errors.As(err, &e) && e.Status >= 400 && e.Status < 600 {
		return e.Status
	}
	return http.StatusBadRequest
}
