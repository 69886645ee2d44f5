package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/harmony-fleet/harmony/api/httpapi"
)

// holdCauses says "device-gone 12, no-match 3".
func holdCauses(h httpapi.OrphanHold) string {
	var parts []string
	for _, c := range httpapi.Causes() {
		if n := h.Causes[c]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", c, n))
		}
	}
	return strings.Join(parts, ", ")
}

func printHold(w io.Writer, h httpapi.OrphanHold) {
	if h.Held == 0 {
		fmt.Fprintln(w, "No removals of orphaned desired state are held.")
		if h.Approved > 0 {
			fmt.Fprintf(w, "%d released removals are waiting for the collecting server.\n", h.Approved)
		}
		return
	}
	since := ""
	if h.Since != nil {
		since = " since " + h.Since.Local().Format(time.RFC3339)
	}
	fmt.Fprintf(w, "%d removals of orphaned desired state held%s (bound %d)\n", h.Held, since, h.Bound)
	fmt.Fprintf(w, "causes:      %s\n", holdCauses(h))
	fmt.Fprintf(w, "examples:    %s\n", strings.Join(h.Examples, " "))
	fmt.Fprintf(w, "fingerprint: %s\n", h.Fingerprint)
	fmt.Fprintln(w, "If the devices or deployments come back, the hold clears by itself; if they are really gone,")
	fmt.Fprintln(w, "'harmony orphans release' removes these keys, and the devices remove what the deployments ran.")
}

func newOrphansCmd(stdout io.Writer) *cobra.Command {
	var server endpoint
	var output string
	cmd := &cobra.Command{
		Use:   "orphans",
		Short: "Show removals of orphaned desired state the server holds back",
		Long: `Show the removals of orphaned desired state the server's orphan guard holds
back: when many devices or deployments disappear at once (a wiped or damaged
bucket, or the first pass after a restart) the server does not take it for
deletions and keeps the devices' desired state until they come back or an
admin runs 'harmony orphans release'.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := server.client(cmd)
			if err != nil {
				return err
			}
			h, err := c.Orphans(cmd.Context())
			if err != nil {
				return err
			}
			if output != "table" {
				return printAs(stdout, output, h)
			}
			printHold(stdout, h)
			return nil
		},
	}
	addOutputFlag(cmd, &output)
	addServerFlag(cmd, &server)

	var rserver endpoint
	var fingerprint string
	release := &cobra.Command{
		Use:   "release [--fingerprint F]",
		Short: "Remove the held keys: devices remove what those deployments ran (admin)",
		Long: `Release the held removals: the server that collects orphans deletes the
held desired-state keys at its next pass, and each device removes what those
deployments ran on it. Only the hold as it is shown is released: with
--fingerprint, only if the hold still has that fingerprint (from
'harmony orphans'); without, the hold read just before.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := rserver.client(cmd)
			if err != nil {
				return err
			}
			if fingerprint == "" {
				h, err := c.Orphans(cmd.Context())
				if err != nil {
					return err
				}
				if h.Held == 0 {
					return errors.New("no removals of orphaned desired state are held")
				}
				fingerprint = h.Fingerprint
			}
			ans, err := c.ReleaseOrphans(cmd.Context(), httpapi.OrphanRelease{Fingerprint: fingerprint})
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "released %d held removals (%s); the collecting server deletes them now\n", ans.Hold.Held, holdCauses(ans.Hold))
			return nil
		},
	}
	release.Flags().StringVar(&fingerprint, "fingerprint", "", "release only the hold with this fingerprint (shown by 'harmony orphans')")
	addServerFlag(release, &rserver)
	cmd.AddCommand(release)
	return cmd
}
