// Package cli builds the harmony command line. Every subcommand is a function
// of its arguments and output streams that returns an error; Main turns that
// into an exit code, so the whole CLI runs in tests without a process.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Exit codes.
const (
	ExitOK    = 0
	ExitError = 1
	ExitUsage = 2
)

// usageError marks errors in how the command was called.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// Main runs the harmony command line with args (without the program name).
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(context.WithValue(ctx, argsKey{}, args))
	if err == nil {
		return ExitOK
	}
	fmt.Fprintln(stderr, "harmony:", err)
	var ue usageError
	if errors.As(err, &ue) {
		return ExitUsage
	}
	var ce exitCodeError
	if errors.As(err, &ce) {
		return ce.code
	}
	return ExitError
}

// exitCodeError ends harmony with a code of its own: that of a command
// run on a device (harmony exec).
type exitCodeError struct {
	code int
	err  error
}

func (e exitCodeError) Error() string { return e.err.Error() }
func (e exitCodeError) Unwrap() error { return e.err }

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "harmony",
		Short:         "Keep a fleet of devices converged and its PostgreSQL clusters available",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.Args = func(_ *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usageError{fmt.Errorf("unknown command %q; see 'harmony --help'", args[0])}
		}
		return nil
	}
	root.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	root.AddCommand(
		newVersionCmd(),
		newAgentCmd(stderr),
		newApplyCmd(stdout),
		newGetCmd(stdout),
		newDescribeCmd(stdout),
		newDeleteCmd(stdout),
		newRolloutCmd(stdout),
		newLabelCmd(stdout),
		newLogsCmd(stdout),
		newExecCmd(stdout),
		newFailoverCmd(stdout),
		newTokenCmd(stdout, stderr),
		newEnrollCmd(stdout, stderr),
		newDeviceCmd(stdout),
		newOrphansCmd(stdout),
		newSecretCmd(stdout),
		newGuardCmd(stderr),
	)
	// The control plane's commands, left out of an agent-only build
	// (`go build -tags agent`, docs/adr/0012-fleet-scale.md).
	root.AddCommand(controlPlaneCmds(stdout, stderr)...)
	return root
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level)) // validated by config
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

// argsKey is the context key of the command line as given, for messages
// about how it was written.
type argsKey struct{}

// noArgs is cobra.NoArgs as a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		if err := switchWithValue(cmd, args); err != nil {
			return err
		}
		return usageError{fmt.Errorf("%s takes no arguments, got %q", cmd.CommandPath(), args)}
	}
	return nil
}

// switchWithValue explains an argument written after a switch (a boolean
// flag): `--sync-always false` is the switch turned on and an argument
// "false", because a switch takes its value only after "=".
func switchWithValue(cmd *cobra.Command, args []string) error {
	var raw []string
	if ctx := cmd.Context(); ctx != nil {
		raw, _ = ctx.Value(argsKey{}).([]string)
	}
	for i := 1; i < len(raw); i++ {
		if raw[i-1] == "--" {
			return nil
		}
		var f *pflag.Flag
		if name, ok := strings.CutPrefix(raw[i-1], "--"); ok {
			f = cmd.Flags().Lookup(name)
		} else if name, ok := strings.CutPrefix(raw[i-1], "-"); ok && len(name) == 1 {
			f = cmd.Flags().ShorthandLookup(name)
		}
		if f == nil || f.NoOptDefVal != "true" || !slices.Contains(args, raw[i]) {
			continue
		}
		return usageError{fmt.Errorf("%q: --%s is a switch, which takes a value only after \"=\"; write --%s=false to turn it off (--%s alone turns it on)",
			raw[i], f.Name, f.Name, f.Name)}
	}
	return nil
}

// CheckCommandLine reports whether args (the words after "harmony") name a
// command, with flags it has and arguments it takes, without running it:
// the examples in the documentation are checked with it.
func CheckCommandLine(args []string) error {
	root := newRoot(io.Discard, io.Discard)
	cmd, rest, err := root.Find(args)
	if err != nil {
		return err
	}
	cmd.InitDefaultHelpFlag()
	if err := cmd.ParseFlags(rest); err != nil {
		return err
	}
	if help, _ := cmd.Flags().GetBool("help"); help {
		return nil
	}
	cmd.SetContext(context.WithValue(context.Background(), argsKey{}, args))
	if err := cmd.ValidateArgs(cmd.Flags().Args()); err != nil {
		return err
	}
	if err := cmd.ValidateRequiredFlags(); err != nil {
		return err
	}
	return cmd.ValidateFlagGroups()
}
