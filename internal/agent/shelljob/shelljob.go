// Package shelljob runs ShellJob resources: a command run once per
// (deployment generation, job id), with a timeout, a given environment and a
// bounded record of its output. A shell is used only when the spec asks for
// one. The record of runs lives in the agent's state directory, so a restart
// never runs a job twice.
package shelljob

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/harmony-fleet/harmony/internal/agent/localstate"
)

// Spec is one job.
type Spec struct {
	Deployment string
	UID        string // the deployment's: a re-created deployment's generation 1 is another run
	Generation int64
	ID         string
	Command    []string
	Shell      bool // run Command[0] with /bin/sh -c
	Timeout    time.Duration
	Env        map[string]string
	Dir        string // working directory ("": the agent's)
	// Redact are values (from secrets) never to show: they are cut out
	// of the output kept, logged and reported.
	Redact []string
}

// TailBytes is how much of a job's output is kept in its record.
const TailBytes = 4096

// Runner runs jobs and remembers them.
type Runner struct {
	state *localstate.Dir
	log   *slog.Logger
	mu    sync.Mutex // one job at a time
}

// New returns a runner that records runs in state.
func New(state *localstate.Dir, log *slog.Logger) *Runner {
	return &Runner{state: state, log: log}
}

// Done returns the record of a job that already ran for this generation.
func (r *Runner) Done(s Spec) (localstate.JobRecord, bool, error) {
	return r.state.Job(s.Deployment, s.UID, s.Generation, s.ID)
}

// Run runs the job unless it already ran for this generation, records the
// outcome and returns it. A job that failed is not run again for the same
// generation: a new generation (a changed deployment) runs it again.
func (r *Runner) Run(ctx context.Context, s Spec) (localstate.JobRecord, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rec, ok, err := r.Done(s); err != nil || ok {
		return rec, err
	}
	if len(s.Command) == 0 || s.Command[0] == "" {
		return localstate.JobRecord{}, errors.New("command: must not be empty")
	}
	args := s.Command
	if s.Shell {
		args = []string{"/bin/sh", "-c", s.Command[0]}
	}
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	jctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(jctx, args[0], args[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	cmd.Env = envList(s.Env)
	cmd.Dir = s.Dir
	out := &tailBuffer{max: TailBytes}
	cmd.Stdout, cmd.Stderr = out, out
	rec := localstate.JobRecord{Deployment: s.Deployment, UID: s.UID, Generation: s.Generation, JobID: s.ID, StartedAt: time.Now().UTC().Format(time.RFC3339Nano)}
	r.log.Info("shell job starting", "deployment", s.Deployment, "generation", s.Generation, "job", s.ID, "command", args)
	err := cmd.Run()
	rec.FinishedAt = time.Now().UTC().Format(time.RFC3339Nano)
	rec.OutputTail = redact(out.String(), s.Redact)
	rec.ExitCode = cmd.ProcessState.ExitCode()
	switch {
	case ctx.Err() != nil:
		// The agent is stopping: do not record, so the job runs again.
		return rec, ctx.Err()
	case jctx.Err() != nil:
		rec.Error = fmt.Sprintf("timed out after %s", timeout)
	case err != nil:
		rec.Error = err.Error()
	}
	r.log.Info("shell job finished", "deployment", s.Deployment, "job", s.ID, "exit", rec.ExitCode, "error", rec.Error, "output_tail", rec.OutputTail)
	if err := r.state.RecordJob(rec); err != nil {
		return rec, fmt.Errorf("record job: %w", err)
	}
	return rec, nil
}

// redact replaces every value of values found in s with "[redacted]".
func redact(s string, values []string) string {
	for _, v := range values {
		if v != "" {
			s = strings.ReplaceAll(s, v, "[redacted]")
		}
	}
	return s
}

func envList(env map[string]string) []string {
	out := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out = append(out, k+"="+env[k])
	}
	return out
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf.Write(p)
	if extra := t.buf.Len() - t.max; extra > 0 {
		t.buf.Next(extra)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.buf.String()
}
