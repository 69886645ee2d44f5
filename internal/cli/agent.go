package cli

import (
	"errors"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/harmony-fleet/harmony/internal/agent"
	"github.com/harmony-fleet/harmony/internal/config"
)

func newAgentCmd(stderr io.Writer) *cobra.Command {
	defaults := config.DefaultAgent()
	var configPath string
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the device agent: register, heartbeat, reconcile desired state",
		Long: `Run the agent of one device. It reports the device's labels and inventory,
heartbeats, follows the device's desired state and reconciles its resources
(File, Container, SystemdUnit, ShellJob), reporting typed status. Its last
desired state is kept under --state-dir and enforced without the mesh.

Settings come from defaults, then the --config YAML file, then HARMONY_*
environment variables, then flags; each overrides the one before.`,
		Args: noArgs,
	}
	flags := settingFlags(cmd.Flags(), defaults.Settings())
	cmd.Flags().StringVar(&configPath, "config", "", "YAML config file (env HARMONY_CONFIG)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg := config.DefaultAgent()
		err := loadSettings(cmd.Flags(), configPath,
			func(p string) error { return config.LoadFile(p, &cfg) },
			cfg.Settings, flags)
		if err != nil {
			return err
		}
		if cfg.ID == "" {
			if h, err := os.Hostname(); err == nil && config.ValidateDNSSubdomain(strings.ToLower(h)) == nil {
				cfg.ID = strings.ToLower(h)
			}
		}
		if err := cfg.Validate(); err != nil {
			return err
		}
		lw := newLineWriter(stderr, logQueue)
		defer lw.Close(time.Second)
		log := newLogger(lw, cfg.LogLevel)
		for {
			a, err := agent.New(cfg, log, agent.Options{ContainerPrefix: cfg.ContainerPrefix})
			if err != nil {
				return err
			}
			// A rotated identity (harmony enroll again) needs a new
			// connection: run a new agent with it.
			if err := a.Run(cmd.Context()); !errors.Is(err, agent.ErrIdentityRotated) {
				return err
			}
		}
	}
	return cmd
}
