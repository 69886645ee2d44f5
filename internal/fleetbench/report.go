package fleetbench

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// WriteTable prints one result.
func WriteTable(w io.Writer, r Result) {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "devices\t%d\n", r.Devices)
	fmt.Fprintf(tw, "deployments\t%d\n", r.Deployments)
	fmt.Fprintf(tw, "apply -> all succeeded\t%s (per device p50 %s, p99 %s, max %s)\n", ms(r.ApplyTotal),
		ms(r.Apply.Quantile(0.5)), ms(r.Apply.Quantile(0.99)), ms(r.Apply.Quantile(1)))
	fmt.Fprintf(tw, "change one -> all succeeded\t%s (per device p50 %s, p99 %s, max %s)\n", ms(r.ChangeTotal),
		ms(r.Change.Quantile(0.5)), ms(r.Change.Quantile(0.99)), ms(r.Change.Quantile(1)))
	fmt.Fprintf(tw, "server restart -> Converged\t%s\n", ms(r.Restart))
	fmt.Fprintf(tw, "server CPU, first rollout\t%s\n", ms(r.RolloutCPU))
	fmt.Fprintf(tw, "server CPU, idle\t%.1f %% of a core\n", 100*r.IdleCPUShare)
	fmt.Fprintf(tw, "server peak RSS\t%.0f MiB\n", float64(r.PeakRSS)/(1<<20))
	fmt.Fprintf(tw, "NATS, first rollout\t%.0f msgs/s in, %.0f out; %.1f MB/s in, %.1f out\n", r.RolloutRate.InMsgs, r.RolloutRate.OutMsgs,
		r.RolloutRate.InBytes/1e6, r.RolloutRate.OutBytes/1e6)
	fmt.Fprintf(tw, "NATS, idle\t%.0f msgs/s in, %.0f out; %.2f MB/s in, %.2f out\n", r.IdleRate.InMsgs, r.IdleRate.OutMsgs,
		r.IdleRate.InBytes/1e6, r.IdleRate.OutBytes/1e6)
	fmt.Fprintf(tw, "JetStream consumers\t%d (%d connections)\n", r.Consumers, r.Connections)
	tw.Flush()
}
