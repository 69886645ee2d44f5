// Package buildinfo holds the version stamped into the binary at build time
// (make build sets them with -ldflags -X).
package buildinfo

import "runtime"

// Set by the linker; the defaults are for `go run` and `go test`.
var (
	Version = "dev"
	Commit  = "unknown"
)

// GoVersion is the toolchain that built the binary.
func GoVersion() string { return runtime.Version() }
