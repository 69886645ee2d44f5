//go:build !agent

package cli

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/fleetbench"
)

func newBenchCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Measure Harmony on this machine", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() }}
	var (
		sizes                  string
		deployments            int
		heartbeat, idle, limit time.Duration
		csvDir, svgDir, prof   string
		runs, servers, batches int
		insecure               bool
	)
	fleet := &cobra.Command{
		Use:   "fleet --devices N[,N...] --deployments M",
		Short: "Roll deployments out to N simulated devices on one server (or three) and report what it cost",
		Long: `Start a harmony server (a child process, on a temporary data directory and
free loopback ports, with its defaults: TLS on and every device under its own
NATS identity; --insecure turns both off to compare) and N simulated devices
in this process: the real agent with its own NATS connection, desired-state
watch, status and heartbeats, only the reconcilers replaced by instant ones.
--servers 3 starts three servers on this machine forming one JetStream
cluster as docs/install.md sets one up; devices get all three addresses and
spread over them.
Each device is enrolled first with a one-time token of its own (not timed).
Start every device at once, apply M deployments (one selecting every device,
the others one shard each, so every device has two), change the first, stay
idle, restart each server in turn on its data, and report: start to all
online, apply and change to all succeeded as the API's roll-up counts it (and
per device p50/p99/max), restart to every device back online with the
roll-up restored (the longest restart), server CPU and peak memory (VmHWM of
each life), NATS messages and bytes per second, JetStream consumers, open
descriptors, and what one device costs the servers (memory, idle CPU, idle
messages, descriptors). With three servers the figures are summed over them,
with the busiest or largest server beside. Each size runs --runs times; a
failed run is reported as failed and the others go on; the summary gives
min/median/max.
--rollout-batches N gives the first deployment a spec.rollout of N batches
(N-1 of ⌈100/N⌉ percent, then 100; gate readyForSeconds 0): its creation
still goes everywhere at once, the change goes batch by batch, and the bench
reports each batch's time (polling the rollout status every 150 ms) and the
server's CPU during the change (the operator runs inside the server). --csv and --svg write the series (docs/BENCHMARKS.md).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var ns []int
			for _, s := range strings.Split(sizes, ",") {
				n, err := strconv.Atoi(strings.TrimSpace(s))
				if err != nil || n < 1 || n > 50000 {
					return usageError{fmt.Errorf("--devices %q: want numbers from 1 to 50000, comma-separated", s)}
				}
				ns = append(ns, n)
			}
			if deployments < 1 || deployments > 1000 {
				return usageError{fmt.Errorf("--deployments %d: want 1 to 1000", deployments)}
			}
			if servers != 1 && servers != 3 {
				return usageError{fmt.Errorf("--servers %d: want 1 or 3", servers)}
			}
			if batches < 0 || batches > v1.MaxRolloutBatches {
				return usageError{fmt.Errorf("--rollout-batches %d: want 0 (off) to %d", batches, v1.MaxRolloutBatches)}
			}
			if runs < 1 {
				return usageError{fmt.Errorf("--runs %d: want at least 1", runs)}
			}
			var results []fleetbench.Result
			failed := 0
			for _, n := range ns {
				for k := 0; k < runs; k++ {
					res, err := fleetbench.Run(cmd.Context(), fleetbench.Config{Devices: n, Deployments: deployments,
						Heartbeat: heartbeat, Idle: idle, Timeout: limit, Progress: stderr, Profile: prof, Insecure: insecure, Servers: servers,
						RolloutBatches: batches})
					if cmd.Context().Err() != nil {
						return cmd.Context().Err()
					}
					if err != nil {
						failed++
						fmt.Fprintf(stderr, "%d devices, run %d: FAILED: %v\n", n, k+1, err)
					}
					results = append(results, res)
					fleetbench.WriteTable(stdout, res)
				}
			}
			fleetbench.WriteSummary(stdout, results)
			if csvDir != "" {
				if err := fleetbench.WriteCSV(csvDir, results); err != nil {
					return err
				}
			}
			if svgDir != "" {
				if err := fleetbench.WriteSVG(svgDir, results); err != nil {
					return err
				}
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d runs failed", failed, len(results))
			}
			return nil
		},
	}
	fleet.Flags().IntVar(&runs, "runs", 1, "runs per fleet size")
	fleet.Flags().IntVar(&batches, "rollout-batches", 0, "roll the change out in this many batches (0: at once, no spec.rollout)")
	fleet.Flags().IntVar(&servers, "servers", 1, "servers: 1, or 3 forming one JetStream cluster (docs/install.md)")
	fleet.Flags().BoolVar(&insecure, "insecure", false, "run the server with TLS and NATS identities off (to compare)")
	fleet.Flags().StringVar(&sizes, "devices", "1000", "fleet sizes, comma-separated")
	fleet.Flags().IntVar(&deployments, "deployments", 10, "deployments (the first selects every device)")
	fleet.Flags().DurationVar(&heartbeat, "heartbeat", 10*time.Second, "simulated agents' heartbeat interval")
	fleet.Flags().DurationVar(&idle, "idle", 10*time.Second, "idle window for the server's CPU and traffic (0: skip)")
	fleet.Flags().DurationVar(&limit, "timeout", 5*time.Minute, "bound on each wait")
	fleet.Flags().StringVar(&csvDir, "csv", "", "write the series as CSV files into this directory")
	fleet.Flags().StringVar(&svgDir, "svg", "", "draw the series as SVG files into this directory")
	fleet.Flags().StringVar(&prof, "profile", "", "write the server's CPU profile (until its restart) to this file")
	cmd.AddCommand(fleet)
	return cmd
}
