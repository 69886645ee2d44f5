//go:build !agent

package cli

import (
	"io"
	"os"
	"runtime/pprof"
	"time"

	"github.com/spf13/cobra"

	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/server"
)

func newServerCmd(stderr io.Writer) *cobra.Command {
	defaults := config.DefaultServer()
	var configPath string
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the control plane: NATS JetStream, operator, HTTP API and metrics",
		Long: `Run the control plane. By default it embeds a NATS JetStream server that keeps
its data under --data-dir; with --nats-url it uses an external NATS instead.

Settings come from defaults, then the --config YAML file, then HARMONY_*
environment variables, then flags; each overrides the one before.`,
		Args: noArgs,
	}
	flags := settingFlags(cmd.Flags(), defaults.Settings())
	cmd.Flags().StringVar(&configPath, "config", "", "YAML config file (env HARMONY_CONFIG)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg := config.DefaultServer()
		err := loadSettings(cmd.Flags(), configPath,
			func(p string) error { return config.LoadFile(p, &cfg) },
			cfg.Settings, flags)
		if err != nil {
			return err
		}
		if err := cfg.LoadTokensFile(); err != nil {
			return err
		}
		if err := cfg.Validate(); err != nil {
			return err
		}
		// A log reader that falls behind never blocks the server
		// (lineWriter): its lines are dropped and counted instead.
		lw := newLineWriter(stderr, logQueue)
		defer lw.Close(time.Second)
		log := newLogger(lw, cfg.LogLevel)
		// A CPU profile of the whole run, for `harmony bench fleet
		// --profile` and anyone chasing a hot spot.
		if path := os.Getenv("HARMONY_CPU_PROFILE"); path != "" {
			f, err := os.Create(path)
			if err != nil {
				return err
			}
			defer f.Close()
			if err := pprof.StartCPUProfile(f); err != nil {
				return err
			}
			defer pprof.StopCPUProfile()
		}
		// The heap in use when the server stops (its live state), for the
		// same purpose.
		if path := os.Getenv("HARMONY_HEAP_PROFILE"); path != "" {
			defer func() {
				if f, err := os.Create(path); err == nil {
					_ = pprof.WriteHeapProfile(f)
					f.Close()
				}
			}()
		}
		return server.Run(cmd.Context(), cfg, log, server.Options{})
	}
	return cmd
}
