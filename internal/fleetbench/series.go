package fleetbench

import (
	"encoding/csv"
	"fmt"
	"html"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

func msf(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64)
}

// WriteCSV writes fleet.csv (one row per run) and latency-<N>.csv (every
// device's latency after the first apply and after the change). Server
// figures are summed over the servers; the _max columns are the busiest or
// largest server's; batch_ms and batch_devices hold one figure per batch
// of a batched change, ";"-separated.
func WriteCSV(dir string, results []Result) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	rows := [][]string{{"devices", "deployments", "secure", "servers", "error", "start_ms", "apply_total_ms", "apply_p50_ms", "apply_p99_ms", "apply_max_ms",
		"change_total_ms", "change_p50_ms", "change_p99_ms", "change_max_ms", "ready_ms", "restart_ms", "rollout_cpu_ms",
		"idle_cpu_share", "peak_rss_bytes", "consumers", "rollout_in_msgs_s", "rollout_out_msgs_s",
		"rollout_in_bytes_s", "rollout_out_bytes_s", "idle_in_msgs_s", "idle_out_msgs_s",
		"idle_cpu_share_max", "peak_rss_max_bytes", "base_rss_bytes", "connections", "fds_before", "fds_online",
		"rss_per_device_bytes", "idle_cpu_share_per_device", "idle_in_msgs_s_per_device", "fds_per_device",
		"change_cpu_ms", "rollout_batches", "batch_ms", "batch_devices", "status_polls", "status_poll_cpu_ms"}}
	for _, r := range results {
		rows = append(rows, []string{strconv.Itoa(r.Devices), strconv.Itoa(r.Deployments), strconv.FormatBool(!r.Insecure), strconv.Itoa(r.Servers), r.Err, msf(r.Start),
			msf(r.ApplyTotal), msf(r.Apply.Quantile(.5)), msf(r.Apply.Quantile(.99)), msf(r.Apply.Quantile(1)),
			msf(r.ChangeTotal), msf(r.Change.Quantile(.5)), msf(r.Change.Quantile(.99)), msf(r.Change.Quantile(1)),
			msf(r.Ready), msf(r.Restart), msf(r.RolloutCPU), strconv.FormatFloat(r.IdleCPUShare, 'f', 4, 64),
			strconv.FormatUint(r.PeakRSS, 10), strconv.Itoa(r.Consumers),
			fmt.Sprintf("%.0f", r.RolloutRate.InMsgs), fmt.Sprintf("%.0f", r.RolloutRate.OutMsgs),
			fmt.Sprintf("%.0f", r.RolloutRate.InBytes), fmt.Sprintf("%.0f", r.RolloutRate.OutBytes),
			fmt.Sprintf("%.0f", r.IdleRate.InMsgs), fmt.Sprintf("%.0f", r.IdleRate.OutMsgs),
			strconv.FormatFloat(r.IdleCPUShareMax, 'f', 4, 64), strconv.FormatUint(r.PeakRSSMax, 10), strconv.FormatUint(r.BaseRSS, 10),
			strconv.Itoa(r.Connections), strconv.Itoa(r.FDsBefore), strconv.Itoa(r.FDsOnline),
			fmt.Sprintf("%.0f", r.RSSPerDevice), strconv.FormatFloat(r.IdleCPUPerDevice, 'g', 4, 64),
			fmt.Sprintf("%.3f", r.IdleMsgsPerDevice), fmt.Sprintf("%.3f", r.FDsPerDevice),
			msf(r.ChangeCPU), strconv.Itoa(r.RolloutBatches), joinList(r.Batches, msf), joinList(r.BatchDevices, strconv.Itoa),
			strconv.Itoa(r.StatusPolls), strconv.FormatFloat(float64(r.StatusPollCPU)/float64(time.Millisecond), 'f', 2, 64)})
	}
	if err := writeCSV(filepath.Join(dir, "fleet.csv"), rows); err != nil {
		return err
	}
	for _, r := range results {
		rows := [][]string{{"device", "apply_ms", "change_ms"}}
		for i := range r.Apply {
			c := ""
			if i < len(r.Change) {
				c = msf(r.Change[i])
			}
			rows = append(rows, []string{deviceID(i), msf(r.Apply[i]), c})
		}
		if err := writeCSV(filepath.Join(dir, fmt.Sprintf("latency-%d.csv", r.Devices)), rows); err != nil {
			return err
		}
	}
	return nil
}

// joinList is a list in one CSV field, ";"-separated (each batch's figure).
func joinList[T any](xs []T, f func(T) string) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = f(x)
	}
	return strings.Join(s, ";")
}

func writeCSV(path string, rows [][]string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	if err := w.WriteAll(rows); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// WriteSVG draws convergence.svg (time to all succeeded and to Converged
// after a restart, against fleet size) and latency-<N>.svg (the share of
// devices succeeded against time since the apply).
func WriteSVG(dir string, results []Result) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	sec := func(d time.Duration) float64 { return d.Seconds() }
	var apply, change, restart []point
	for _, r := range results {
		x := float64(r.Devices)
		apply = append(apply, point{x, sec(r.ApplyTotal)})
		change = append(change, point{x, sec(r.ChangeTotal)})
		restart = append(restart, point{x, sec(r.Restart)})
	}
	c := chart{title: "Time until every device succeeded, and restart to Converged", xLabel: "devices", yLabel: "seconds",
		series: []series{{"apply M deployments", apply, "#1f77b4"}, {"change one deployment", change, "#ff7f0e"}, {"server restart to Converged", restart, "#2ca02c"}}}
	if err := os.WriteFile(filepath.Join(dir, "convergence.svg"), []byte(c.svg()), 0o644); err != nil {
		return err
	}
	for _, r := range results {
		c := chart{title: fmt.Sprintf("Devices succeeded over time (%d devices)", r.Devices), xLabel: "seconds since the apply",
			yLabel: "share of devices", series: []series{{"apply", cdf(r.Apply), "#1f77b4"}, {"change one", cdf(r.Change), "#ff7f0e"}}}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("latency-%d.svg", r.Devices)), []byte(c.svg()), 0o644); err != nil {
			return err
		}
	}
	return nil
}

type point struct{ x, y float64 }

type series struct {
	name   string
	points []point
	color  string
}

type chart struct {
	title, xLabel, yLabel string
	series                []series
}

// cdf turns latencies into (seconds, share of devices done) steps.
func cdf(l Latencies) []point {
	s := append(Latencies(nil), l...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	// At most 400 points: enough for the eye.
	step := max(1, len(s)/400)
	pts := []point{{0, 0}}
	for i := 0; i < len(s); i += step {
		pts = append(pts, point{s[i].Seconds(), float64(i+1) / float64(len(s))})
	}
	if len(s) > 0 {
		pts = append(pts, point{s[len(s)-1].Seconds(), 1})
	}
	return pts
}

func (c chart) svg() string {
	const w, h, left, right, top, bottom = 640.0, 400.0, 70.0, 20.0, 40.0, 60.0
	maxX, maxY := 0.0, 0.0
	for _, s := range c.series {
		for _, p := range s.points {
			maxX, maxY = math.Max(maxX, p.x), math.Max(maxY, p.y)
		}
	}
	maxX, maxY = nice(maxX), nice(maxY)
	px := func(x float64) float64 { return left + x/maxX*(w-left-right) }
	py := func(y float64) float64 { return h - bottom - y/maxY*(h-top-bottom) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="12">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.0f" y="24" font-size="14">%s</text>`+"\n", left, html.EscapeString(c.title))
	for i := 0; i <= 5; i++ {
		x, y := maxX*float64(i)/5, maxY*float64(i)/5
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", left, py(y), w-right, py(y))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, py(y)+4, tick(y))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", px(x), h-bottom+18, tick(x))
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", (left+w-right)/2, h-bottom+38, html.EscapeString(c.xLabel))
	fmt.Fprintf(&b, `<text x="16" y="%.1f" transform="rotate(-90 16 %.1f)" text-anchor="middle">%s</text>`+"\n", (top+h-bottom)/2, (top+h-bottom)/2, html.EscapeString(c.yLabel))
	for i, s := range c.series {
		var pts []string
		for _, p := range s.points {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(p.x), py(p.y)))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", s.color, strings.Join(pts, " "))
		for _, p := range s.points {
			if len(s.points) <= 20 {
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", px(p.x), py(p.y), s.color)
			}
		}
		ly := top + 10 + float64(i)*16
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="12" height="3" fill="%s"/><text x="%.1f" y="%.1f">%s</text>`+"\n",
			left+10, ly, s.color, left+28, ly+5, html.EscapeString(s.name))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// nice rounds an axis maximum up to 1, 2 or 5 times a power of ten.
func nice(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func tick(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e9 {
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}
