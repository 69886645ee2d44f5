//go:build agent

package cli

import (
	"io"

	"github.com/spf13/cobra"
)

// controlPlaneCmds: none in an agent-only build, which leaves the server,
// its operator and dashboard out of the binary (a smaller agent: see
// docs/BENCHMARKS.md).
func controlPlaneCmds(io.Writer, io.Writer) []*cobra.Command { return nil }
