package fleetbench

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"text/tabwriter"
	"time"
)

// WriteTable prints one result.
func WriteTable(w io.Writer, r Result) {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "devices\t%d (%s)\n", r.Devices, mode(r))
	if r.Servers > 1 {
		fmt.Fprintf(tw, "servers\t%d (one JetStream cluster; server figures summed over them)\n", r.Servers)
	}
	fmt.Fprintf(tw, "deployments\t%d\n", r.Deployments)
	if r.Err != "" {
		fmt.Fprintf(tw, "FAILED\t%s\n", r.Err)
	}
	fmt.Fprintf(tw, "start -> all online\t%s\n", ms(r.Start))
	fmt.Fprintf(tw, "apply -> all succeeded (roll-up)\t%s (per device p50 %s, p99 %s, max %s)\n", ms(r.ApplyTotal),
		ms(r.Apply.Quantile(0.5)), ms(r.Apply.Quantile(0.99)), ms(r.Apply.Quantile(1)))
	change := "change one -> all succeeded (roll-up)"
	if r.RolloutBatches > 0 {
		change = "change one -> all succeeded (roll-up), rollout Succeeded"
	}
	fmt.Fprintf(tw, "%s\t%s (per device p50 %s, p99 %s, max %s)\n", change, ms(r.ChangeTotal),
		ms(r.Change.Quantile(0.5)), ms(r.Change.Quantile(0.99)), ms(r.Change.Quantile(1)))
	for i, d := range r.Batches {
		fmt.Fprintf(tw, "  batch %d of %d\t%s (%d devices)\n", i+1, r.RolloutBatches, ms(d), r.BatchDevices[i])
	}
	restart := "server restart"
	if r.Servers > 1 {
		restart = "rolling restart, longest"
	}
	fmt.Fprintf(tw, "%s -> ready\t%s\n", restart, ms(r.Ready))
	fmt.Fprintf(tw, "%s -> all online, roll-up restored\t%s\n", restart, ms(r.Restart))
	fmt.Fprintf(tw, "server CPU, first rollout\t%s\n", ms(r.RolloutCPU))
	fmt.Fprintf(tw, "server CPU, change one\t%s (the operator's and the rest of the server's)\n", ms(r.ChangeCPU))
	if r.RolloutBatches > 0 {
		fmt.Fprintf(tw, "rollout status requests\t%d during the change, %.1f ms of server CPU each (measured after)\n",
			r.StatusPolls, float64(r.StatusPollCPU)/float64(time.Millisecond))
	}
	mib := func(b uint64) float64 { return float64(b) / (1 << 20) }
	if r.Servers > 1 {
		fmt.Fprintf(tw, "server CPU, idle\t%.1f %% of a core (busiest server %.1f %%)\n", 100*r.IdleCPUShare, 100*r.IdleCPUShareMax)
		fmt.Fprintf(tw, "server peak RSS (VmHWM)\t%.0f MiB (largest server %.0f MiB; %.0f MiB with 0 devices)\n", mib(r.PeakRSS), mib(r.PeakRSSMax), mib(r.BaseRSS))
	} else {
		fmt.Fprintf(tw, "server CPU, idle\t%.1f %% of a core\n", 100*r.IdleCPUShare)
		fmt.Fprintf(tw, "server peak RSS (VmHWM)\t%.0f MiB (%.0f MiB with 0 devices)\n", mib(r.PeakRSS), mib(r.BaseRSS))
	}
	fmt.Fprintf(tw, "NATS, first rollout\t%.0f msgs/s in, %.0f out; %.1f MB/s in, %.1f out\n", r.RolloutRate.InMsgs, r.RolloutRate.OutMsgs,
		r.RolloutRate.InBytes/1e6, r.RolloutRate.OutBytes/1e6)
	fmt.Fprintf(tw, "NATS, idle\t%.0f msgs/s in, %.0f out; %.2f MB/s in, %.2f out\n", r.IdleRate.InMsgs, r.IdleRate.OutMsgs,
		r.IdleRate.InBytes/1e6, r.IdleRate.OutBytes/1e6)
	fmt.Fprintf(tw, "JetStream consumers\t%d (%d connections)\n", r.Consumers, r.Connections)
	fmt.Fprintf(tw, "server open descriptors\t%d with every device online, %d before\n", r.FDsOnline, r.FDsBefore)
	fmt.Fprintf(tw, "per device: server RSS\t%.1f KiB\n", r.RSSPerDevice/(1<<10))
	fmt.Fprintf(tw, "per device: idle server CPU\t%.1f µs a second (%.4f %% of a core)\n", 1e6*r.IdleCPUPerDevice, 100*r.IdleCPUPerDevice)
	fmt.Fprintf(tw, "per device: idle NATS\t%.2f msgs/s in\n", r.IdleMsgsPerDevice)
	fmt.Fprintf(tw, "per device: server descriptors\t%.2f\n", r.FDsPerDevice)
	tw.Flush()
}

func mode(r Result) string {
	m := "TLS and identities on"
	if r.Insecure {
		m = "TLS and identities off"
	}
	if r.Servers > 1 {
		m += fmt.Sprintf(", %d servers", r.Servers)
	}
	if r.RolloutBatches > 0 {
		m += fmt.Sprintf(", the change in %d batches", r.RolloutBatches)
	}
	return m
}

// WriteSummary prints, per fleet size, min/median/max of every figure over
// the runs that completed, and how many runs failed (never dropped).
func WriteSummary(w io.Writer, results []Result) {
	bySize := map[int][]Result{}
	var sizes []int
	for _, r := range results {
		if _, ok := bySize[r.Devices]; !ok {
			sizes = append(sizes, r.Devices)
		}
		bySize[r.Devices] = append(bySize[r.Devices], r)
	}
	sort.Ints(sizes)
	for _, n := range sizes {
		runs := bySize[n]
		var ok []Result
		failed := 0
		for _, r := range runs {
			if r.Err == "" {
				ok = append(ok, r)
			} else {
				failed++
			}
		}
		fmt.Fprintf(w, "\n%d devices, %d deployments, %s: %d runs, %d failed\n", n, runs[0].Deployments, mode(runs[0]), len(runs), failed)
		for _, r := range runs {
			if r.Err != "" {
				fmt.Fprintf(w, "  failed: %s\n", r.Err)
			}
		}
		if len(ok) == 0 {
			continue
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "| metric\t| min\t| median\t| max\t| runs\t|")
		sec := func(f func(Result) time.Duration) func(Result) float64 {
			return func(r Result) float64 { return f(r).Seconds() }
		}
		type row struct {
			name, format string
			f            func(Result) float64
		}
		rows := []row{
			{"start -> all online (s)", "%.2f", sec(func(r Result) time.Duration { return r.Start })},
			{"apply -> all succeeded, roll-up (s)", "%.2f", sec(func(r Result) time.Duration { return r.ApplyTotal })},
			{"change one -> all succeeded, roll-up (s)", "%.2f", sec(func(r Result) time.Duration { return r.ChangeTotal })},
			{"restart -> ready (s)", "%.2f", sec(func(r Result) time.Duration { return r.Ready })},
			{"restart -> all online, roll-up restored (s)", "%.2f", sec(func(r Result) time.Duration { return r.Restart })},
			{"server CPU, first rollout (s)", "%.2f", sec(func(r Result) time.Duration { return r.RolloutCPU })},
			{"server CPU, change one (s)", "%.2f", sec(func(r Result) time.Duration { return r.ChangeCPU })},
			{"idle server CPU (% of a core)", "%.1f", func(r Result) float64 { return 100 * r.IdleCPUShare }},
			{"server peak RSS (MiB)", "%.0f", func(r Result) float64 { return float64(r.PeakRSS) / (1 << 20) }},
		}
		if n := ok[0].RolloutBatches; n > 0 {
			// Each batch's time after the change's total; what a status
			// request costs after the change's CPU.
			var batches []row
			for i := range n {
				batches = append(batches, row{fmt.Sprintf("change one: batch %d of %d (s)", i+1, n), "%.2f", func(r Result) float64 {
					if i < len(r.Batches) {
						return r.Batches[i].Seconds()
					}
					return 0 // a completed run has every batch
				}})
			}
			rows = slices.Insert(rows, 3, batches...)
			at := slices.IndexFunc(rows, func(r row) bool { return r.name == "server CPU, change one (s)" })
			rows = slices.Insert(rows, at+1, row{"rollout status: server CPU per request (ms)", "%.1f",
				func(r Result) float64 { return float64(r.StatusPollCPU) / float64(time.Millisecond) }})
		}
		if ok[0].Servers > 1 {
			rows = append(rows,
				row{"idle CPU, busiest server (% of a core)", "%.1f", func(r Result) float64 { return 100 * r.IdleCPUShareMax }},
				row{"peak RSS, largest server (MiB)", "%.0f", func(r Result) float64 { return float64(r.PeakRSSMax) / (1 << 20) }})
		}
		rows = append(rows,
			row{"JetStream consumers", "%.0f", func(r Result) float64 { return float64(r.Consumers) }},
			row{"per device: server RSS (KiB)", "%.1f", func(r Result) float64 { return r.RSSPerDevice / (1 << 10) }},
			row{"per device: idle server CPU (µs/s)", "%.1f", func(r Result) float64 { return 1e6 * r.IdleCPUPerDevice }},
			row{"per device: idle NATS (msgs/s in)", "%.2f", func(r Result) float64 { return r.IdleMsgsPerDevice }},
			row{"per device: server descriptors", "%.2f", func(r Result) float64 { return r.FDsPerDevice }})
		for _, row := range rows {
			v := make([]float64, len(ok))
			for i, r := range ok {
				v[i] = row.f(r)
			}
			sort.Float64s(v)
			f := row.format
			fmt.Fprintf(tw, "| %s\t| "+f+"\t| "+f+"\t| "+f+"\t| %d\t|\n", row.name, v[0], v[(len(v)-1)/2], v[len(v)-1], len(v))
		}
		tw.Flush()
	}
}
