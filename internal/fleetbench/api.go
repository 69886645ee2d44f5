package fleetbench

// What the bench asks the servers' HTTP API: apply, the roll-up, metrics.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/harmony-fleet/harmony/api/httpapi"
)

// apply applies all M deployments with the given note in one request.
func (b *bench) apply(note string) error {
	var docs []string
	for k := 0; k < b.cfg.Deployments; k++ {
		docs = append(docs, b.doc(k, note))
	}
	return b.post(strings.Join(docs, "---\n"))
}

func (b *bench) applyOne(k int, note string) error { return b.post(b.doc(k, note)) }

func (b *bench) doc(k int, note string) string {
	sel := `{fleet: sim}`
	if k > 0 {
		sel = fmt.Sprintf(`{shard: "%d"}`, k-1)
	}
	rollout := ""
	if k == 0 {
		rollout = rolloutYAML(b.cfg.RolloutBatches)
	}
	return fmt.Sprintf(`apiVersion: harmony/v1alpha1
kind: Deployment
metadata: {name: %s}
spec:
  selector: {matchLabels: %s}
  resources:
  - id: motd
    kind: File
    spec: {path: /etc/motd, content: %q}
`, depName(k), sel, note) + rollout
}

func (b *bench) post(body string) error {
	req, _ := http.NewRequest("POST", b.scheme+"://"+b.api.http+"/api/v1/deployments", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+b.token)
	req.Header.Set("Content-Type", "application/yaml")
	resp, err := b.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("apply: %s: %s", resp.Status, msg)
	}
	return nil
}

// fleetCounts is the fleet's line of GET /api/v1/status.
type fleetCounts = httpapi.FleetCounts

// fleet reads the fleet's counts from m's GET /api/v1/status.
func (b *bench) fleet(m *member) (fleetCounts, error) {
	var v struct {
		Fleet fleetCounts `json:"fleet"`
	}
	err := b.getJSON(m, "/api/v1/status", &v)
	return v.Fleet, err
}

// rollupView is what the API's roll-up says: every deployment's counts and
// the fleet's.
type rollupView struct {
	Fleet       fleetCounts
	Deployments map[string]depCounts
}

type depCounts struct {
	Generation                                   int64
	Matched, Succeeded, Failed, Pending, Offline int
}

func (r rollupView) same(want rollupView) error {
	if r.Fleet != want.Fleet {
		return fmt.Errorf("fleet %+v, want %+v", r.Fleet, want.Fleet)
	}
	for name, w := range want.Deployments {
		if got := r.Deployments[name]; got != w {
			return fmt.Errorf("deployment %s %+v, want %+v", name, got, w)
		}
	}
	return nil
}

// rollup reads m's GET /api/v1/status and GET /api/v1/deployments.
func (b *bench) rollup(m *member) (rollupView, error) {
	var out rollupView
	var err error
	if out.Fleet, err = b.fleet(m); err != nil {
		return out, err
	}
	var v struct {
		Items []httpapi.DeploymentView `json:"items"`
	}
	if err := b.getJSON(m, "/api/v1/deployments", &v); err != nil {
		return out, err
	}
	out.Deployments = map[string]depCounts{}
	for _, it := range v.Items {
		st := it.Status
		out.Deployments[st.Name] = depCounts{Generation: st.Generation, Matched: st.Matched, Succeeded: st.Succeeded,
			Failed: st.Failed, Pending: st.Pending, Offline: st.Offline}
	}
	return out, nil
}

// rolledOut: the roll-up counts every device online and every matched
// device succeeded on every deployment at generation gen (deployment 0 at
// gen0 when that is not -1).
func (b *bench) rolledOut(gen, gen0 int64) func(rollupView) error {
	return func(r rollupView) error {
		if r.Fleet.Online != b.cfg.Devices {
			return fmt.Errorf("%d of %d devices online", r.Fleet.Online, b.cfg.Devices)
		}
		if len(r.Deployments) != b.cfg.Deployments {
			return fmt.Errorf("%d of %d deployments", len(r.Deployments), b.cfg.Deployments)
		}
		matched := 0
		for name, d := range r.Deployments {
			g := gen
			if name == depName(0) && gen0 >= 0 {
				g = gen0
			}
			if d.Generation != g || d.Succeeded != d.Matched {
				return fmt.Errorf("deployment %s: %d of %d succeeded at generation %d (want %d)", name, d.Succeeded, d.Matched, d.Generation, g)
			}
			matched += d.Matched
		}
		want := b.cfg.Devices
		if b.cfg.Deployments > 1 {
			want *= 2 // every device has deployment 0 and its shard's
		}
		if matched != want {
			return fmt.Errorf("%d devices matched over all deployments, want %d", matched, want)
		}
		return nil
	}
}

// waitRollup polls the roll-up of every server given until check passes
// on each.
func (b *bench) waitRollup(ctx context.Context, members []*member, check func(rollupView) error) error {
	deadline := time.Now().Add(b.cfg.Timeout)
	for {
		var err error
		for _, m := range members {
			var r rollupView
			if r, err = b.rollup(m); err == nil {
				err = check(r)
			}
			if err != nil {
				if len(members) > 1 {
					err = fmt.Errorf("%s: %w", m.label(), err)
				}
				break
			}
		}
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("roll-up after %s: %w", b.cfg.Timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (b *bench) getJSON(m *member, path string, v any) error {
	req, _ := http.NewRequest("GET", b.scheme+"://"+m.http+path, nil)
	req.Header.Set("Authorization", "Bearer "+b.token)
	resp, err := b.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, msg)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// metrics scrapes every running server's /metrics (only unlabelled
// samples) and sums them.
func (b *bench) metrics() (map[string]float64, error) {
	out := map[string]float64{}
	for _, m := range b.running() {
		if err := b.scrape(m, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// scrape adds m's unlabelled samples to sum.
func (b *bench) scrape(m *member, sum map[string]float64) error {
	resp, err := b.http.Get(b.scheme + "://" + m.http + "/metrics")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	for _, line := range bytes.Split(data, []byte("\n")) {
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		var name string
		var v float64
		if _, err := fmt.Sscanf(string(line), "%s %g", &name, &v); err == nil && !strings.Contains(name, "{") {
			sum[name] += v
		}
	}
	return nil
}

func (b *bench) metricsOrEmpty() map[string]float64 {
	m, _ := b.metrics()
	return m
}

func rate(a, b map[string]float64, d time.Duration) Rate {
	s := d.Seconds()
	if s <= 0 || a == nil || b == nil {
		return Rate{}
	}
	f := func(name string) float64 { return (b[name] - a[name]) / s }
	return Rate{InMsgs: f("harmony_nats_in_msgs_total"), OutMsgs: f("harmony_nats_out_msgs_total"),
		InBytes: f("harmony_nats_in_bytes_total"), OutBytes: f("harmony_nats_out_bytes_total")}
}
