package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/harmony-fleet/harmony/api/httpapi"
	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
)

func newApplyCmd(stdout io.Writer) *cobra.Command {
	var server endpoint
	var file string
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "apply -f FILE|-",
		Short: "Create or update deployments from YAML (several documents per file)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return usageError{errors.New("-f FILE (or - for standard input) is required")}
			}
			var data []byte
			var err error
			if file == "-" {
				data, err = io.ReadAll(io.LimitReader(cmd.InOrStdin(), 4*v1.MaxDeploymentBytes))
			} else {
				data, err = os.ReadFile(file)
			}
			if err != nil {
				return err
			}
			c, err := server.client(cmd)
			if err != nil {
				return err
			}
			res, err := c.Apply(cmd.Context(), data)
			if err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			for _, it := range res.Items {
				fmt.Fprintf(stdout, "deployment/%s %s (generation %d)\n", it.Name, it.Result, it.Generation)
			}
			if !wait {
				return nil
			}
			for _, it := range res.Items {
				if err := waitRollout(cmd.Context(), c, stdout, cmd.ErrOrStderr(), it.Name, it.Generation, timeout); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "YAML file, or - for standard input")
	cmd.Flags().BoolVar(&wait, "wait", false, "show progress until the rollout converges; fail if it fails")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long --wait waits")
	addServerFlag(cmd, &server)
	return cmd
}

// waitRollout polls a deployment until every matched device succeeded at
// the generation, one failed at it, or the timeout passes. A deployment
// that matches no device is rolled out at once, with a warning on stderr.
func waitRollout(ctx context.Context, c *httpapi.Client, stdout, stderr io.Writer, name string, gen int64, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	last := ""
	for {
		v, err := c.Deployment(ctx, name)
		if httpapi.IsCode(err, httpapi.CodeUnauthorized) || httpapi.IsCode(err, httpapi.CodeForbidden) {
			return err // asking again does not help
		}
		if err == nil && v.Status.Generation >= gen {
			p := progressAt(v.Status, gen)
			line := fmt.Sprintf("deployment/%s: %d/%d succeeded, %d failed, %d pending, %d offline",
				name, p.Succeeded, p.Matched, p.Failed, p.Pending, p.Offline)
			if p.Matched == 0 {
				line = fmt.Sprintf("deployment/%s: matches no device", name)
			}
			// A rollout in batches: where it is, and whether it stopped.
			var ro v1.RolloutStatus
			if v.Deployment.Spec.Rollout != nil || v.Status.Generation > gen { // a rollback's spec may have none
				if ro, err = c.Rollout(ctx, name); err == nil && ro.To == gen && ro.Batch > 0 {
					line += fmt.Sprintf(" (%s, batch %d of %d)", ro.Phase, ro.Batch, len(ro.Batches))
				}
			}
			if line != last {
				fmt.Fprintln(stdout, line)
				last = line
			}
			switch {
			case p.Matched == 0:
				fmt.Fprintf(stderr, "warning: deployment/%s matches no device (selector %s): nothing was rolled out\n",
					name, joinMap(v.Deployment.Spec.Selector.MatchLabels, "="))
				return nil
			case ro.To == gen && ro.Phase == v1.RolloutPaused:
				return fmt.Errorf("deployment/%s: the rollout of generation %d is paused: %s (harmony rollout status deployment/%s)", name, gen, ro.Reason, name)
			case ro.To == gen && ro.Phase == v1.RolloutRolledBack:
				return fmt.Errorf("deployment/%s: generation %d was rolled back (generation %d holds the earlier spec): %s", name, gen, ro.RollbackGeneration, ro.Reason)
			case p.Failed > 0:
				return fmt.Errorf("deployment/%s failed at generation %d: %s", name, gen, p.LastError)
			case p.Succeeded == p.Matched:
				fmt.Fprintf(stdout, "deployment/%s rolled out\n", name)
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("deployment/%s did not converge within %s", name, timeout)
		case <-tick.C:
		}
	}
}

// progressAt counts a deployment's devices toward generation gen from
// their lines: a device succeeded or failed only by a report for gen or a
// later generation; a report for an older one (the failure a corrected
// file is meant to fix) is pending.
func progressAt(s httpapi.DeploymentStatus, gen int64) httpapi.DeploymentStatus {
	p := httpapi.DeploymentStatus{Name: s.Name, Generation: s.Generation, Matched: len(s.Devices)}
	for _, d := range s.Devices {
		current := d.ObservedGeneration >= gen
		refused := d.RefusedGeneration >= gen
		switch {
		case !d.Online || d.Phase == httpapi.PhaseOffline:
			p.Offline++
		case current && d.Phase == v1.PhaseReady:
			p.Succeeded++
		case (current || refused) && (d.Phase == v1.PhaseFailed || d.Phase == v1.PhaseConflict):
			p.Failed++
			p.LastError = d.Device + ": " + d.Message
		default:
			p.Pending++
		}
	}
	return p
}

func newGetCmd(stdout io.Writer) *cobra.Command {
	var server endpoint
	var output, selector string
	cmd := &cobra.Command{
		Use:       "get deployments|devices",
		Short:     "List deployments or devices",
		ValidArgs: []string{"deployments", "devices"},
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError{errors.New("want one of: deployments, devices")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := server.client(cmd)
			if err != nil {
				return err
			}
			switch strings.TrimSuffix(args[0], "s") {
			case "deployment":
				res, err := c.Deployments(cmd.Context())
				if err != nil {
					return err
				}
				if output != "table" {
					return printAs(stdout, output, res.Items)
				}
				tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tGENERATION\tMATCHED\tSUCCEEDED\tFAILED\tPENDING\tOFFLINE")
				for _, d := range res.Items {
					s := d.Status
					fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\n", s.Name, s.Generation, s.Matched, s.Succeeded, s.Failed, s.Pending, s.Offline)
				}
				return tw.Flush()
			case "device":
				res, err := c.Devices(cmd.Context(), selector)
				if err != nil {
					return err
				}
				if output != "table" {
					return printAs(stdout, output, res.Items)
				}
				tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tSTATUS\tHEARTBEAT\tLABELS\tDEPLOYMENTS")
				for _, d := range res.Items {
					status := "Online"
					if !d.Online {
						status = "Offline"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.ID, status, age(d.HeartbeatAgeSecs), joinMap(d.Labels, "="), joinMap(d.Deployments, ":"))
				}
				return tw.Flush()
			}
			return usageError{fmt.Errorf("%q: want deployments or devices", args[0])}
		},
	}
	addServerFlag(cmd, &server)
	addOutputFlag(cmd, &output)
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "devices: only those with these labels (k=v,k2=v2)")
	return cmd
}

func joinMap(m map[string]string, sep string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+sep+m[k])
	}
	if len(parts) == 0 {
		return "<none>"
	}
	return strings.Join(parts, ",")
}

func newDescribeCmd(stdout io.Writer) *cobra.Command {
	var server endpoint
	var output string
	cmd := &cobra.Command{
		Use:   "describe deployment|device NAME",
		Short: "Show one deployment or device in detail",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return usageError{errors.New("want: describe deployment|device NAME")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := server.client(cmd)
			if err != nil {
				return err
			}
			switch strings.TrimSuffix(args[0], "s") {
			case "deployment":
				v, err := c.Deployment(cmd.Context(), args[1])
				if err != nil {
					return err
				}
				if output != "table" {
					return printAs(stdout, output, v)
				}
				s := v.Status
				tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintf(tw, "Name:\t%s\nGeneration:\t%d\nSelector:\t%s\nResources:\t%d\n", s.Name, s.Generation,
					joinMap(v.Deployment.Spec.Selector.MatchLabels, "="), len(v.Deployment.Spec.Resources))
				fmt.Fprintf(tw, "Matched:\t%d\nSucceeded:\t%d\nFailed:\t%d\nPending:\t%d\nOffline:\t%d\n", s.Matched, s.Succeeded, s.Failed, s.Pending, s.Offline)
				if s.LastError != "" {
					fmt.Fprintf(tw, "Last error:\t%s\n", s.LastError)
				}
				fmt.Fprintln(tw, "\nDEVICE\tONLINE\tPHASE\tOBSERVED\tMESSAGE")
				for _, d := range s.Devices {
					fmt.Fprintf(tw, "%s\t%v\t%s\t%d\t%s\n", d.Device, d.Online, d.Phase, d.ObservedGeneration, d.Message)
				}
				return tw.Flush()
			case "device":
				d, err := c.Device(cmd.Context(), args[1])
				if err != nil {
					return err
				}
				if output != "table" {
					return printAs(stdout, output, d)
				}
				tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
				status := "Online"
				if !d.Online {
					status = "Offline"
				}
				fmt.Fprintf(tw, "Name:\t%s\nStatus:\t%s (heartbeat %s ago)\nLabels:\t%s\n", d.ID, status, age(d.HeartbeatAgeSecs), joinMap(d.Labels, "="))
				fmt.Fprintf(tw, "Inventory:\t%s %s/%s, %d CPUs, %d MiB, agent %s\n", d.Inventory.Hostname, d.Inventory.OS, d.Inventory.Arch,
					d.Inventory.CPUs, d.Inventory.MemoryBytes>>20, d.Inventory.AgentVersion)
				fmt.Fprintln(tw, "\nDEPLOYMENT\tRESOURCE\tKIND\tPHASE\tMESSAGE")
				for _, st := range d.States {
					fmt.Fprintf(tw, "%s\t\t\t%s (generation %d)\t%s\n", st.Deployment, st.Phase, st.ObservedGeneration, st.Message)
					for _, r := range st.Resources {
						msg := r.Message
						if r.Field != "" && !strings.HasPrefix(msg, r.Field+":") {
							msg = r.Field + ": " + msg
						}
						fmt.Fprintf(tw, "\t%s\t%s\t%s\t%s\n", r.ID, r.Kind, r.Phase, msg)
					}
				}
				return tw.Flush()
			}
			return usageError{fmt.Errorf("%q: want deployment or device", args[0])}
		},
	}
	addServerFlag(cmd, &server)
	addOutputFlag(cmd, &output)
	return cmd
}

func newDeleteCmd(stdout io.Writer) *cobra.Command {
	var server endpoint
	cmd := &cobra.Command{
		Use:   "delete deployment NAME",
		Short: "Delete a deployment (its resources are removed from the devices)",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 || strings.TrimSuffix(args[0], "s") != "deployment" {
				return usageError{errors.New("want: delete deployment NAME")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := server.client(cmd)
			if err != nil {
				return err
			}
			if _, err := c.DeleteDeployment(cmd.Context(), args[1]); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "deployment/%s deleted\n", args[1])
			return nil
		},
	}
	addServerFlag(cmd, &server)
	return cmd
}

func newLabelCmd(stdout io.Writer) *cobra.Command {
	var server endpoint
	cmd := &cobra.Command{
		Use:   "label device ID k=v|k- ...",
		Short: "Set (k=v) or remove (k-) a device's labels from the control plane",
		Long: `Set or remove device labels from the control plane. These win over the
labels the agent reports for the same key: k=v sets a label whatever the agent
says, k- removes it even if the agent reports it.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 3 || args[0] != "device" {
				return usageError{errors.New("want: label device ID k=v|k- [k=v|k-]")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := server.client(cmd)
			if err != nil {
				return err
			}
			patch := httpapi.LabelPatch{Set: map[string]string{}}
			for _, a := range args[2:] {
				if k, ok := strings.CutSuffix(a, "-"); ok && !strings.Contains(a, "=") {
					patch.Remove = append(patch.Remove, k)
					continue
				}
				k, v, ok := strings.Cut(a, "=")
				if !ok {
					return usageError{fmt.Errorf("%q: want k=v or k-", a)}
				}
				patch.Set[k] = v
			}
			if _, err := c.PatchLabels(cmd.Context(), args[1], patch); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "device/%s labeled\n", args[1])
			return nil
		},
	}
	addServerFlag(cmd, &server)
	return cmd
}

func newLogsCmd(stdout io.Writer) *cobra.Command {
	var server endpoint
	var deployment string
	var lines int
	cmd := &cobra.Command{
		Use:   "logs DEVICE RESOURCE",
		Short: "Print the last lines of a container's or a job's output on a device",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return usageError{errors.New("want: logs DEVICE RESOURCE")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := server.client(cmd)
			if err != nil {
				return err
			}
			reply, err := c.Logs(cmd.Context(), args[0], httpapi.LogsRequest{Resource: args[1], Deployment: deployment, Lines: lines})
			if err != nil {
				return err
			}
			_, err = io.WriteString(stdout, reply.Output)
			return err
		},
	}
	cmd.Flags().IntVar(&lines, "tail", 100, "how many lines")
	cmd.Flags().StringVar(&deployment, "deployment", "", "the resource's deployment, when several have that id")
	addServerFlag(cmd, &server)
	return cmd
}

func newExecCmd(stdout io.Writer) *cobra.Command {
	var server endpoint
	cmd := &cobra.Command{
		Use:   "exec DEVICE -- CMD [ARG...]",
		Short: "Run a command on a device (when its agent allows exec)",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 || cmd.ArgsLenAtDash() != 1 {
				return usageError{errors.New("want: exec DEVICE -- CMD [ARG]")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := server.client(cmd)
			if err != nil {
				return err
			}
			reply, err := c.Exec(cmd.Context(), args[0], httpapi.ExecRequest{Command: args[1:]})
			var e *httpapi.Error
			if errors.As(err, &e) && e.Reply != nil {
				// The command ran and failed: its output still helps, and
				// its exit code is ours, as with ssh.
				io.WriteString(stdout, e.Reply.Output)
				if e.Reply.ExitCode > 0 {
					return exitCodeError{code: min(e.Reply.ExitCode, 255), err: err}
				}
				return err
			}
			if err != nil {
				return err
			}
			_, err = io.WriteString(stdout, reply.Output)
			return err
		},
	}
	addServerFlag(cmd, &server)
	return cmd
}
