package pg

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// serverProcesses are the PostgreSQL server processes of this data
// directory (Linux: the postgres program running in it), the postmaster
// and its children, also children left behind by a killed postmaster.
func (i *Instance) serverProcesses() []int {
	dir, err := filepath.EvalSymlinks(i.DataDir)
	if err != nil {
		return nil
	}
	return i.postgresIn(dir)
}

// postgresIn are the processes of this instance's postgres program whose
// working directory reads cwd.
func (i *Instance) postgresIn(cwd string) []int {
	prog, err := filepath.EvalSymlinks(filepath.Join(i.BinDir, "postgres"))
	if err != nil {
		return nil
	}
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		base := filepath.Join("/proc", e.Name())
		if exe, err := os.Readlink(filepath.Join(base, "exe")); err != nil || exe != prog {
			continue
		}
		if wd, err := os.Readlink(filepath.Join(base, "cwd")); err != nil || wd != cwd {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// postmasterUnreaped: the killed postmaster of postmaster.pid is still a
// process, if only a zombie its new parent has not reaped yet. PostgreSQL
// takes any process with that id for a running postmaster and refuses to
// start on the data directory.
func (i *Instance) postmasterUnreaped() bool {
	pid, err := i.postmasterPID()
	if err != nil {
		return false
	}
	_, err = os.Stat(filepath.Join("/proc", strconv.Itoa(pid)))
	return err == nil
}

// reapOrphans waits until no server process of the stopped data directory
// is left: the children of a killed postmaster notice its death and exit
// by themselves, and while they live they hold its shared memory (crash
// recovery, which pg_rewind runs, refuses to start). After wait they are
// killed. It also waits for the dead postmaster to be reaped.
func (i *Instance) reapOrphans(ctx context.Context, wait time.Duration) {
	deadline := time.Now().Add(wait)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		pids := i.serverProcesses()
		if len(pids) == 0 && !i.postmasterUnreaped() {
			return
		}
		if time.Now().After(deadline) {
			for _, pid := range pids {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if time.Now().After(deadline.Add(5 * time.Second)) {
			return // unkillable (another user's?): let pg_rewind say so
		}
	}
}

// KillOrphanedServer kills the server processes still running in the data
// directory after it was removed (their working directory reads
// "<dir> (deleted)"), waits up to five seconds for them to be gone (they
// hold the port and the socket a new server needs), and returns how many
// it found: a server whose files are gone must not keep answering.
func (i *Instance) KillOrphanedServer(ctx context.Context) int {
	gone := filepath.Clean(i.DataDir) + " (deleted)"
	pids := i.postgresIn(gone)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for len(i.postgresIn(gone)) > 0 && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return len(pids)
		case <-tick.C:
		}
	}
	return len(pids)
}
