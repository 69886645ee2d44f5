package cli

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/harmony-fleet/harmony/internal/failover/guard"
)

// newGuardCmd is the hidden `harmony guard`: the process that fences the
// local PostgreSQL when the agent stops feeding it (docs/adr/0018). The
// agent starts it itself (guard.Attach); it is not meant to be run by hand.
func newGuardCmd(stderr io.Writer) *cobra.Command {
	var (
		cfg     guard.Config
		logFile string
		detach  bool
	)
	cmd := &cobra.Command{
		Use:    "guard",
		Short:  "Fence the local PostgreSQL when the agent stops feeding its deadline",
		Hidden: true,
		Args:   noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.Validate(); err != nil {
				return usageError{err}
			}
			if detach {
				exe, err := os.Executable()
				if err != nil {
					return err
				}
				return guard.StartDetached(exe, cfg)
			}
			out := stderr
			if logFile != "" {
				f, err := os.OpenFile(logFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
				if err != nil {
					return err
				}
				defer f.Close()
				out = f
			}
			cfg.Log = slog.New(slog.NewTextHandler(out, nil)).With("component", "guard")
			// The guard outlives a first SIGTERM or SIGINT on purpose: a
			// signal must not leave an armed primary unguarded. It exits by
			// itself once disarmed and idle; a second signal or SIGKILL
			// still ends it at once (cmd/harmony).
			err := guard.Run(context.WithoutCancel(cmd.Context()), cfg)
			if errors.Is(err, guard.ErrRunning) {
				return nil // the one already running serves the socket
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Socket, "socket", "", "Unix socket the agent feeds the guard on")
	f.StringVar(&cfg.DataDir, "data-dir", "", "PostgreSQL data directory whose server to fence")
	f.StringVar(&cfg.Watchdog, "watchdog", "", "watchdog device to hold while armed (e.g. /dev/watchdog; off when empty)")
	f.DurationVar(&cfg.WatchdogInterval, "watchdog-interval", guard.DefaultWatchdogInterval, "how often to write to the watchdog device")
	f.DurationVar(&cfg.IdleExit, "idle-exit", guard.DefaultIdleExit, "exit after this long disarmed with no agent connected")
	f.StringVar(&logFile, "log", "", "append the guard's log to this file (default: standard error)")
	f.BoolVar(&detach, "detach", false, "start the guard in a session of its own and return at once")
	return cmd
}
