package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/harmony-fleet/harmony/api/httpapi"
)

// newRolloutCmd: what a deployment's changes were, and going back to one.
func newRolloutCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout",
		Short: "A deployment's kept generations, and undoing a change",
	}
	cmd.AddCommand(newRolloutHistoryCmd(stdout), newRolloutUndoCmd(stdout))
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
