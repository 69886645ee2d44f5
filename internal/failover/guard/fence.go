package guard

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is one process, named by its PID and start time (clock ticks since
// boot), so a PID the kernel reused is never taken for it.
type proc struct {
	PID   int
	Start uint64
	PPID  int
	State byte
	Comm  string
}

// readProc reads /proc/PID/stat.
func readProc(pid int) (proc, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return proc{}, err
	}
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return proc{}, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	// Fields after the command: state(3) ppid(4) ... starttime(22).
	f := strings.Fields(s[end+1:])
	if len(f) < 20 {
		return proc{}, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	ppid, err1 := strconv.Atoi(f[1])
	start, err2 := strconv.ParseUint(f[19], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return proc{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return proc{PID: pid, Start: start, PPID: ppid, State: f[0][0], Comm: s[open+1 : end]}, nil
}

// gone reports whether p has exited: no such process, a zombie, or its PID
// now names another process.
func (p proc) gone() bool {
	q, err := readProc(p.PID)
	return err != nil || q.Start != p.Start || q.State == 'Z' || q.State == 'X'
}

func allPIDs() ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// sameDir reports whether process pid's working directory is dir. A
// PostgreSQL server and every one of its backends run in their data
// directory.
func sameDir(pid int, dir os.FileInfo) (bool, error) {
	fi, err := os.Stat("/proc/" + strconv.Itoa(pid) + "/cwd")
	if err != nil {
		return false, err
	}
	return os.SameFile(fi, dir), nil
}

// postmasterPID reads the first line of DATA_DIR/postmaster.pid.
func postmasterPID(dataDir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("postmaster.pid: bad PID %q", first)
	}
	return pid, nil
}

// FenceReport says what a fence did.
type FenceReport struct {
	// Postmaster: the PID found in postmaster.pid (0: none).
	Postmaster int
	// Stopped: every process SIGSTOPped and then SIGKILLed, the
	// postmaster first; StoppedAt: when the last was stopped (Now()).
	Stopped   []int
	StoppedAt time.Duration
	// Skipped explains why nothing was killed (no postmaster.pid, a PID
	// that is not this data directory's postmaster, a postmaster gone).
	Skipped string
}

func (r FenceReport) String() string {
	if r.Skipped != "" {
		return "nothing to fence: " + r.Skipped
	}
	return fmt.Sprintf("postmaster %d and %d other processes stopped and killed: %v", r.Postmaster, len(r.Stopped)-1, r.Stopped)
}

// targets finds the processes of the server: the postmaster, all its
// descendants, and any process named postgres whose working directory is
// the data directory (a backend whose postmaster is already gone still
// serves its client).
func targets(pm proc, dir os.FileInfo) (map[int]proc, error) {
	pids, err := allPIDs()
	if err != nil {
		return nil, err
	}
	self := os.Getpid()
	all := map[int]proc{}
	children := map[int][]int{}
	for _, pid := range pids {
		p, err := readProc(pid)
		if err != nil {
			continue // exited meanwhile
		}
		all[pid] = p
		children[p.PPID] = append(children[p.PPID], pid)
	}
	out := map[int]proc{pm.PID: pm}
	queue := []int{pm.PID}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		for _, c := range children[pid] {
			if _, seen := out[c]; !seen {
				out[c] = all[c]
				queue = append(queue, c)
			}
		}
	}
	for pid, p := range all {
		if p.Comm != "postgres" {
			continue
		}
		if same, _ := sameDir(pid, dir); same {
			out[pid] = p
		}
	}
	delete(out, self)
	delete(out, 1)
	return out, nil
}

// identify returns the data directory's postmaster, or a reason there is
// none to fence.
func identify(dataDir string, dir os.FileInfo) (proc, string, error) {
	pid, err := postmasterPID(dataDir)
	if errors.Is(err, os.ErrNotExist) {
		return proc{}, "no postmaster.pid", nil
	}
	if err != nil {
		return proc{}, "", err
	}
	pm, err := readProc(pid)
	if err != nil || pm.State == 'Z' || pm.State == 'X' {
		return proc{}, fmt.Sprintf("postmaster %d is gone", pid), nil
	}
	same, err := sameDir(pid, dir)
	switch {
	case err == nil && !same:
		// The PID was reused after the server died without removing its
		// file: killing it would hit an unrelated process.
		return proc{}, fmt.Sprintf("process %d (%s) does not run in the data directory", pid, pm.Comm), nil
	case err != nil && errors.Is(err, os.ErrPermission) && pm.Comm == "postgres":
		// No right to read another user's working directory: the name
		// must do (the guard should run as root or as the server's user).
	case err != nil:
		return proc{}, fmt.Sprintf("process %d: cannot tell it is the postmaster: %v", pid, err), nil
	}
	return pm, "", nil
}

// fence stops the PostgreSQL server of dataDir for good: it SIGSTOPs the
// postmaster, then every process of the server (until a pass finds no new
// one), so no process can acknowledge a commit any more while the others
// are being found; then it SIGKILLs them all and waits (bounded by ctx)
// until every one is gone. It returns nil only when none is left.
func fence(ctx context.Context, dataDir string) (FenceReport, error) {
	var rep FenceReport
	dir, err := os.Stat(dataDir)
	if err != nil {
		return rep, fmt.Errorf("data directory: %w", err)
	}
	pm, skipped, err := identify(dataDir, dir)
	if err != nil || skipped != "" {
		rep.Skipped = skipped
		return rep, err
	}
	rep.Postmaster = pm.PID
	// The postmaster first: once it is stopped it forks no new backend.
	// Then its children as the kernel lists them (one read), before the
	// slower scan of every process for the rest.
	_ = syscall.Kill(pm.PID, syscall.SIGSTOP)
	stopped := map[int]proc{pm.PID: pm}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pm.PID, pm.PID)); err == nil {
		for _, f := range strings.Fields(string(b)) {
			pid, err := strconv.Atoi(f)
			if err != nil {
				continue
			}
			if p, err := readProc(pid); err == nil && p.PPID == pm.PID {
				_ = syscall.Kill(pid, syscall.SIGSTOP)
				stopped[pid] = p
			}
		}
	}
	for pass := 0; pass < 10; pass++ {
		found, err := targets(pm, dir)
		if err != nil {
			return rep, err
		}
		fresh := 0
		for pid, p := range found {
			if _, ok := stopped[pid]; ok {
				continue
			}
			stopped[pid] = p
			_ = syscall.Kill(pid, syscall.SIGSTOP)
			fresh++
		}
		if fresh == 0 {
			break
		}
	}
	rep.StoppedAt = Now()
	for pid, p := range stopped {
		if !p.gone() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if pid != pm.PID {
			rep.Stopped = append(rep.Stopped, pid)
		}
	}
	slices.Sort(rep.Stopped)
	rep.Stopped = append([]int{pm.PID}, rep.Stopped...)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		var left []int
		for pid, p := range stopped {
			if !p.gone() {
				left = append(left, pid)
			}
		}
		if len(left) == 0 {
			return rep, nil
		}
		select {
		case <-ctx.Done():
			return rep, fmt.Errorf("processes %v still alive after SIGKILL: %w", left, ctx.Err())
		case <-tick.C:
		}
	}
}
