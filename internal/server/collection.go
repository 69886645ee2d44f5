package server

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/harmony-fleet/harmony/api/httpapi"
	"github.com/harmony-fleet/harmony/internal/operator"
)

// The orphan guard's API (docs/adr/0014-orphan-collection-guard.md): the
// removals of orphaned desired state the operator holds back, and an
// admin's release of them. The release is recorded in the leases bucket,
// where the server that collects (the orphan-gc lease holder) reads it,
// whichever server received it.

// getOrphans answers what is held (any token).
func (h *handler) getOrphans(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, orphanHold(h.op.OrphanHold()))
}

// releaseOrphans releases the held removals (admin only: every method but
// GET and HEAD needs an admin token).
func (h *handler) releaseOrphans(w http.ResponseWriter, r *http.Request) {
	var body httpapi.OrphanRelease
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil && !errors.Is(err, io.EOF) {
		apiError(w, bodyError(err))
		return
	}
	by, _ := r.Context().Value(tokenNameKey{}).(string)
	hold, err := h.op.ReleaseOrphans(r.Context(), body.Fingerprint, by)
	switch {
	case errors.Is(err, operator.ErrNothingHeld), errors.Is(err, operator.ErrHoldChanged):
		apiError(w, httpapi.Errorf(httpapi.CodeConflict, "%v", err).WithField("fingerprint"))
		return
	case err != nil:
		storeError(w, err)
		return
	}
	h.log.Warn("held orphan removals released", "held", hold.Held, "fingerprint", hold.Fingerprint, "by", by)
	writeJSON(w, http.StatusAccepted, httpapi.OrphanReleaseResult{Result: httpapi.ResultReleased, Hold: orphanHold(hold)})
}

// OrphanHold is the dashboard's view of the hold (an optional capability
// of its Backend).
func (g *gate) OrphanHold() httpapi.OrphanHold {
	if h := g.h.Load(); h != nil {
		return orphanHold(h.op.OrphanHold())
	}
	return httpapi.OrphanHold{}
}

// orphanCollector exports harmony_operator_orphans_held{cause}.
type orphanCollector struct {
	op   *operator.Operator
	desc *prometheus.Desc
}

func newOrphanCollector(op *operator.Operator) *orphanCollector {
	return &orphanCollector{op: op, desc: prometheus.NewDesc("harmony_operator_orphans_held",
		"Removals of orphaned desired state the orphan guard holds until an admin releases them (harmony orphans release), by cause.",
		[]string{"cause"}, nil)}
}

func (c *orphanCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c *orphanCollector) Collect(ch chan<- prometheus.Metric) {
	h := c.op.OrphanHold()
	for _, cause := range operator.AllCauses() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(h.Causes[cause]), string(cause))
	}
}
