package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/harmony-fleet/harmony/internal/buildinfo"
)

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print version, commit and Go version",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "harmony %s (commit %s, %s)\n",
				buildinfo.Version, buildinfo.Commit, buildinfo.GoVersion())
			return err
		},
	}
}
