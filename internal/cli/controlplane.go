//go:build !agent

package cli

import (
	"io"

	"github.com/spf13/cobra"
)

// controlPlaneCmds are server, dev and bench.
func controlPlaneCmds(stdout, stderr io.Writer) []*cobra.Command {
	return []*cobra.Command{newServerCmd(stderr), newDevCmd(stdout, stderr), newBenchCmd(stdout, stderr)}
}
