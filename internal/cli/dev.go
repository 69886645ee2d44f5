//go:build !agent

package cli

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/harmony-fleet/harmony/internal/agent"
	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/server"
)

func newDevCmd(stdout, stderr io.Writer) *cobra.Command {
	var (
		httpAddr string
		dataDir  string
		keep     bool
		devices  int
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run everything in one process on this machine, for a first look",
		Long: `Run an embedded NATS JetStream server, the control plane and --devices local
agents in one process. Each agent has its own temporary root: File resources
may write only under <data-dir>/devices/<id>/root. Data lives in a temporary
directory, removed on exit unless --keep or --data-dir. Prints the dashboard
URL.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if devices < 0 || devices > 100 {
				return usageError{fmt.Errorf("--devices %d: must be 0 to 100", devices)}
			}
			cfg := config.DefaultServer()
			cfg.HTTP = httpAddr
			cfg.TLS = "off"      // a first look on this machine only (127.0.0.1)
			cfg.NATSAuth = "off" // agents started by hand join without enrolling
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
			g, ctx := errgroup.WithContext(cmd.Context())
			ready := make(chan server.Info, 1)
			g.Go(func() error {
				return server.Run(ctx, cfg, log.With("role", "server"), server.Options{OnReady: func(i server.Info) { ready <- i }})
			})
			var info server.Info
			select {
			case info = <-ready:
			case <-ctx.Done():
				return g.Wait()
			}
			for i := 1; i <= devices; i++ {
				id := fmt.Sprintf("dev-%d", i)
				acfg := config.DefaultAgent()
				acfg.ID = id
				acfg.NATSURLs = []string{info.NATSURL}
				acfg.StateDir = filepath.Join(dataDir, "devices", id, "state")
				root := filepath.Join(dataDir, "devices", id, "root")
				if err := os.MkdirAll(root, 0o755); err != nil {
					return err
				}
				acfg.AllowedRoots = []string{root}
				acfg.Labels = map[string]string{"env": "dev", "device": id}
				acfg.HeartbeatInterval = config.Duration(2 * time.Second)
				acfg.ResyncInterval = config.Duration(10 * time.Second)
				acfg.HTTP = "" // several agents in one process: no per-agent endpoints
				a, err := agent.New(acfg, log.With("role", "agent", "device", id), agent.Options{})
				if err != nil {
					return err
				}
				g.Go(func() error { return a.Run(ctx) })
			}
			fmt.Fprintf(stdout, "Harmony dev is running (data in %s) with %d local device(s).\n", dataDir, devices)
			fmt.Fprintf(stdout, "NATS:      %s\n", info.NATSURL)
			fmt.Fprintf(stdout, "API:       %s/api/v1  (harmony get devices --server %s)\n", info.HTTPURL, info.HTTPURL)
			fmt.Fprintf(stdout, "Dashboard: %s/\n", info.HTTPURL)
			if tok, err := os.ReadFile(filepath.Join(dataDir, "admin-token")); err == nil {
				fmt.Fprintf(stdout, "Admin token: %s  (sign in with it)\n", strings.TrimSpace(string(tok)))
				fmt.Fprintf(stdout, "CLI:       export HARMONY_SERVER=%s HARMONY_TOKEN=$(cat %s)\n", info.HTTPURL, filepath.Join(dataDir, "admin-token"))
			}
			fmt.Fprintln(stdout, "Press Ctrl-C to stop.")
			return g.Wait()
		},
	}
	cmd.Flags().StringVar(&httpAddr, "http", "127.0.0.1:8080", "address of the dashboard and API")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "keep data here instead of a temporary directory")
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the temporary data directory on exit")
	cmd.Flags().IntVar(&devices, "devices", 3, "how many local agents to run")
	return cmd
}
