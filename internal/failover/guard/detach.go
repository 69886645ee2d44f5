package guard

import (
	"os"
	"os/exec"
	"syscall"
)

// Args is the command line of `harmony guard` for c, after the command
// name: --socket, --data-dir and, when set, --watchdog,
// --watchdog-interval and --idle-exit.
func (c Config) Args() []string {
	args := []string{"--socket", c.Socket, "--data-dir", c.DataDir}
	if c.Watchdog != "" {
		args = append(args, "--watchdog", c.Watchdog)
		if c.WatchdogInterval > 0 {
			args = append(args, "--watchdog-interval", c.WatchdogInterval.String())
		}
	}
	if c.IdleExit > 0 {
		args = append(args, "--idle-exit", c.IdleExit.String())
	}
	return args
}

// StartDetached starts `exe guard <c.Args()>` in a session of its own, with
// this process's standard output and error, and returns without waiting:
// the caller is the short-lived middle process of a double fork, so the
// guard is re-parented to init (or the nearest subreaper), which reaps it.
func StartDetached(exe string, c Config) error {
	cmd := exec.Command(exe, append([]string{"guard"}, c.Args()...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	return cmd.Process.Release()
}
