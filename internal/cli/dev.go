package cli

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/server"
)

func newDevCmd(stdout, stderr io.Writer) *cobra.Command {
	var (
		httpAddr string
		dataDir  string
		keep     bool
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run everything in one process on this machine, for a first look",
		Long: `Run an embedded NATS JetStream server and the control plane in one process,
with data in a temporary directory (removed on exit unless --keep or
--data-dir), and print the dashboard URL. Local agents join here as they land.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := config.DefaultServer()
			cfg.HTTP = httpAddr
			cfg.NATSListen = "127.0.0.1:0"
			if dataDir == "" {
				dir, err := os.MkdirTemp("", "harmony-dev-")
				if err != nil {
					return err
				}
				if !keep {
					defer os.RemoveAll(dir)
				}
				dataDir = dir
			}
			cfg.DataDir = dataDir
			log := newLogger(stderr, "info")
			return server.Run(cmd.Context(), cfg, log, server.Options{
				OnReady: func(info server.Info) {
					fmt.Fprintf(stdout, "Harmony dev is running (data in %s).\n", dataDir)
					fmt.Fprintf(stdout, "NATS:      %s\n", info.NATSURL)
					fmt.Fprintf(stdout, "Dashboard: %s/\n", info.HTTPURL)
					fmt.Fprintln(stdout, "Press Ctrl-C to stop.")
				},
			})
		},
	}
	cmd.Flags().StringVar(&httpAddr, "http", "127.0.0.1:8080", "address of the dashboard and API")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "keep data here instead of a temporary directory")
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the temporary data directory on exit")
	return cmd
}
