package cli

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/harmony-fleet/harmony/api/httpapi"
	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
)

// newRolloutCmd: what a deployment's changes were, and going back to one.
func newRolloutCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout",
		Short: "A deployment's rollout (status, pause, resume), its kept generations, and undoing a change",
	}
	cmd.AddCommand(newRolloutStatusCmd(stdout), newRolloutPauseCmd(stdout, true), newRolloutPauseCmd(stdout, false),
		newRolloutHistoryCmd(stdout), newRolloutUndoCmd(stdout))
	return cmd
}

// deploymentArg reads deployment/NAME (or deployment NAME).
func deploymentArg(args []string, want string) (string, error) {
	if len(args) == 1 {
		if kind, name, ok := strings.Cut(args[0], "/"); ok && strings.TrimSuffix(kind, "s") == "deployment" && name != "" {
			return name, nil
		}
	}
	if len(args) == 2 && strings.TrimSuffix(args[0], "s") == "deployment" && args[1] != "" {
		return args[1], nil
	}
	return "", usageError{errors.New("want: " + want)}
}

// onDeployment is a rollout subcommand on deployment/NAME: run gets the
// name and a client of the server.
func onDeployment(use, short string, server *endpoint, run func(cmd *cobra.Command, c *httpapi.Client, name string) error) *cobra.Command {
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  func(_ *cobra.Command, args []string) error { _, err := deploymentArg(args, "rollout "+use); return err },
		RunE: func(cmd *cobra.Command, args []string) error {
			name, _ := deploymentArg(args, use)
			c, err := server.client(cmd)
			if err != nil {
				return err
			}
			return run(cmd, c, name)
		},
	}
	addServerFlag(cmd, server)
	return cmd
}

func newRolloutStatusCmd(stdout io.Writer) *cobra.Command {
	var server endpoint
	var output string
	cmd := onDeployment("status deployment/NAME", "Show a deployment's rollout: batch k of n, each batch's devices by phase, why it is paused", &server,
		func(cmd *cobra.Command, c *httpapi.Client, name string) error {
			st, err := c.Rollout(cmd.Context(), name)
			if err != nil {
				return err
			}
			if output != "table" {
				return printAs(stdout, output, st)
			}
			return printRollout(stdout, st)
		})
	addOutputFlag(cmd, &output)
	return cmd
}

// printRollout writes a rollout's status for people.
func printRollout(w io.Writer, st v1.RolloutStatus) error {
	if st.Phase == "" {
		_, err := fmt.Fprintf(w, "deployment/%s: generation %d; no rollout (the deployment has no spec.rollout, or its last change was an undo)\n", st.Name, st.Generation)
		return err
	}
	head, tail := st.Headline()
	fmt.Fprintf(w, "deployment/%s: %s: %s%s\n", st.Name, head, st.Phase, tail)
	if st.Reason != "" {
		fmt.Fprintf(w, "reason: %s\n", st.Reason)
	}
	if len(st.Batches) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "BATCH\tSTATE\tDEVICES\tREADY\tUPDATING\tWAITING\tFAILED\tOFFLINE\t")
		for i, b := range st.Batches {
			fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t\n", i+1, b.State, b.Devices, b.Ready, b.Updating, b.Waiting, b.Failed, b.Offline)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	for _, id := range slices.Sorted(maps.Keys(st.Failed)) {
		fmt.Fprintf(w, "failed: %s: %s\n", id, st.Failed[id])
	}
	return nil
}

func newRolloutPauseCmd(stdout io.Writer, pause bool) *cobra.Command {
	var server endpoint
	use, short, done := "pause deployment/NAME", "Give a rollout's change to no further device until it is resumed", "paused"
	if !pause {
		use, short, done = "resume deployment/NAME", "Go on with a paused rollout (its current batch is judged afresh)", "resumed"
	}
	return onDeployment(use, short, &server,
		func(cmd *cobra.Command, c *httpapi.Client, name string) error {
			call := c.PauseRollout
			if !pause {
				call = c.ResumeRollout
			}
			st, err := call(cmd.Context(), name)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "deployment/%s rollout %s\n", name, done)
			return printRollout(stdout, st)
		})
}

func newRolloutHistoryCmd(stdout io.Writer) *cobra.Command {
	var server endpoint
	var output string
	cmd := onDeployment("history deployment/NAME", "List the generations of a deployment the store keeps (the last few changes)", &server,
		func(cmd *cobra.Command, c *httpapi.Client, name string) error {
			h, err := c.History(cmd.Context(), name)
			if err != nil {
				return err
			}
			if output != "table" {
				return printAs(stdout, output, h)
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "GENERATION\tSTORED\tSPEC\t")
			for _, g := range h.Generations {
				mark := ""
				if g.Current {
					mark = " (current)"
				}
				fmt.Fprintf(tw, "%d%s\t%s\t%s\t\n", g.Generation, mark, g.Stored.Local().Format(time.DateTime), g.SpecHash[:min(12, len(g.SpecHash))])
			}
			return tw.Flush()
		})
	addOutputFlag(cmd, &output)
	return cmd
}

func newRolloutUndoCmd(stdout io.Writer) *cobra.Command {
	var server endpoint
	var to int64
	cmd := onDeployment("undo deployment/NAME [--to-generation N]", "Make an earlier generation's spec the deployment's again (as a new generation)", &server,
		func(cmd *cobra.Command, c *httpapi.Client, name string) error {
			res, err := c.Undo(cmd.Context(), name, httpapi.UndoRequest{ToGeneration: to})
			if err != nil {
				return err
			}
			if res.Result == httpapi.ResultUnchanged {
				fmt.Fprintf(stdout, "deployment/%s unchanged: that generation's spec is the current one (generation %d)\n", name, res.Generation)
				return nil
			}
			fmt.Fprintf(stdout, "deployment/%s rolled back (generation %d)\n", name, res.Generation)
			return nil
		})
	cmd.Long = `Make a kept generation's spec the deployment's again: by default the newest
earlier generation whose spec differs from the current one, or --to-generation N
(see 'harmony rollout history'). It is stored as a new generation, like an apply
of that spec: it is checked as an apply is, every matched device applies it like
any other change, and a ShellJob in it runs again.`
	cmd.Flags().Int64Var(&to, "to-generation", 0, "the kept generation to go back to (default: the one before)")
	return cmd
}
