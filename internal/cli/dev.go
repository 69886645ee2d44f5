//go:build !agent

package cli

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/agent"
	"github.com/harmony-fleet/harmony/internal/agent/units"
	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/server"
)

func newDevCmd(stdout, stderr io.Writer) *cobra.Command {
	var (
		httpAddr string
		dataDir  string
		keep     bool
		devices  int
		bus      string
		unitDir  string
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run everything in one process on this machine, for a first look",
		Long: `Run an embedded NATS JetStream server, the control plane and --devices local
agents in one process, so that the examples of the docs run as written.

Each device has its own root, <data-dir>/devices/<id>/root: a File at
/etc/harmony/motd is written at <root>/etc/harmony/motd (status shows the path
as written; the allowed roots are the agent's defaults, /etc/harmony and
/srv/harmony). Shell jobs (run in the device's root) and exec are on and run
as the user running harmony dev; SystemdUnits may install unit files, in
--systemd-unit-dir of the systemd at --systemd-bus (default: this machine's);
Containers run in this machine's podman, named <id>-<name>. A Container without
podman, or a SystemdUnit without systemd, is Failed with a message saying so.
Devices are labelled env=dev, device=<id>, arch=<this machine's>, and
site=home (dev-1, dev-2) or site=office (dev-3).

Data lives in a temporary directory, removed on exit unless --keep or
--data-dir. Prints the dashboard URL.`,
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
			var first config.Agent
			for i := 1; i <= devices; i++ {
				id := fmt.Sprintf("dev-%d", i)
				root := filepath.Join(dataDir, "devices", id, "root")
				if err := os.MkdirAll(root, 0o755); err != nil {
					return err
				}
				acfg := devAgentConfig(id, i, info.NATSURL, filepath.Join(dataDir, "devices", id, "state"), root, bus, unitDir)
				if i == 1 {
					first = acfg
				}
				a, err := agent.New(acfg, log.With("role", "agent", "device", id), agent.Options{ContainerPrefix: id + "-"})
				if err != nil {
					return err
				}
				g.Go(func() error { return a.Run(ctx) })
			}
			fmt.Fprintf(stdout, "Harmony dev is running (data in %s) with %d local device(s).\n", dataDir, devices)
			if devices > 0 {
				devNotes(stdout, first)
			}
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
	cmd.Flags().StringVar(&bus, "systemd-bus", "", "D-Bus address of the systemd the devices' SystemdUnits go to (default: the system bus)")
	cmd.Flags().StringVar(&unitDir, "systemd-unit-dir", config.DefaultAgent().SystemdUnitDir, "directory of that systemd's unit files")
	return cmd
}

// devAgentConfig is the configuration of local device number n
// (docs/adr/0022-harmony-dev.md): the agent's defaults, File paths under
// its own root, what runs commands allowed (they run as the user running
// dev, on this machine), labels the docs' examples select on.
func devAgentConfig(id string, n int, natsURL, stateDir, root, bus, unitDir string) config.Agent {
	acfg := config.DefaultAgent()
	acfg.ID = id
	acfg.NATSURLs = []string{natsURL}
	acfg.StateDir = stateDir
	acfg.RootDir = root // AllowedRoots stay /etc/harmony, /srv/harmony, under root
	acfg.Capabilities = []string{v1.CapabilityShellJob, v1.CapabilityExec, v1.CapabilitySystemdUnitFiles}
	acfg.SystemdBus = bus
	acfg.SystemdUnitDir = unitDir
	site := "home"
	if n%3 == 0 {
		site = "office"
	}
	acfg.Labels = map[string]string{"env": "dev", "device": id, "site": site, "arch": runtime.GOARCH}
	acfg.HeartbeatInterval = config.Duration(2 * time.Second)
	acfg.ResyncInterval = config.Duration(10 * time.Second)
	acfg.RetryInitial = config.Duration(time.Second)
	acfg.RetryMax = config.Duration(10 * time.Second)
	acfg.HTTP = "" // several agents in one process: no per-agent endpoints
	return acfg
}

// devNotes says what the local devices may do and what this machine lacks.
func devNotes(w io.Writer, cfg config.Agent) {
	who := "this user"
	if u, err := user.Current(); err == nil {
		who = u.Username
	}
	fmt.Fprintf(w, "Files:     /etc/harmony/... and /srv/harmony/... of each device are under %s\n",
		filepath.Join(filepath.Dir(filepath.Dir(cfg.RootDir)), "<id>", "root"))
	fmt.Fprintf(w, "Commands:  shell jobs and exec run as %s on this machine (in the device's root)\n", who)
	if p, err := exec.LookPath(cfg.Podman); err == nil {
		fmt.Fprintf(w, "Podman:    %s of this machine runs the containers, named <device>-<name>\n", p)
	} else {
		fmt.Fprintln(w, "Podman:    not installed on this machine: Container resources will be Failed")
	}
	if err := units.CheckBus(cfg.SystemdBus); err != nil {
		fmt.Fprintf(w, "Systemd:   %v: SystemdUnit resources will be Failed (give --systemd-bus and --systemd-unit-dir)\n", err)
	} else {
		bus := cfg.SystemdBus
		if bus == "" {
			bus = "the system bus"
		}
		fmt.Fprintf(w, "Systemd:   units go to %s of the systemd at %s\n", cfg.SystemdUnitDir, bus)
	}
}
