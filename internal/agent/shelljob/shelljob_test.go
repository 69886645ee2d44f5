package shelljob

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/agent/localstate"
)

func runner(t *testing.T) (*Runner, string) {
	dir := t.TempDir()
	st, err := localstate.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return New(st, slog.New(slog.DiscardHandler)), dir
}

func TestRunsOncePerGeneration(t *testing.T) {
	r, dir := runner(t)
	marker := filepath.Join(t.TempDir(), "count")
	s := Spec{Deployment: "web", Generation: 1, ID: "migrate", Shell: true,
		Command: []string{"echo run >> " + marker + "; echo out; echo err >&2"}, Timeout: 10 * time.Second}
	rec, err := r.Run(context.Background(), s)
	if err != nil || rec.ExitCode != 0 || !strings.Contains(rec.OutputTail, "out") || !strings.Contains(rec.OutputTail, "err") {
		t.Fatalf("first run: %+v %v", rec, err)
	}
	// Same generation, even through a fresh runner on the same state (an
	// agent restart): not run again.
	st2, _ := localstate.Open(dir)
	r2 := New(st2, slog.New(slog.DiscardHandler))
	if _, err := r2.Run(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	s.Generation = 2
	if _, err := r2.Run(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(marker)
	if got := strings.Count(string(b), "run"); got != 2 {
		t.Fatalf("job ran %d times for generations 1,1,2; want 2", got)
	}
}

func TestNoShellUnlessAsked(t *testing.T) {
	r, _ := runner(t)
	rec, err := r.Run(context.Background(), Spec{Deployment: "d", Generation: 1, ID: "j", Command: []string{"echo", "$HOME; id"}})
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(rec.OutputTail) != "$HOME; id" {
		t.Fatalf("arguments were interpreted by a shell: %q", rec.OutputTail)
	}
}

func TestTimeoutKillsTheProcessGroup(t *testing.T) {
	r, _ := runner(t)
	start := time.Now()
	rec, err := r.Run(context.Background(), Spec{Deployment: "d", Generation: 1, ID: "slow", Shell: true,
		Command: []string{"sleep 60 & sleep 60"}, Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(rec.Error, "timed out") {
		t.Fatalf("record %+v, want a timeout", rec)
	}
	if time.Since(start) > 30*time.Second {
		t.Fatal("the job's children kept it alive")
	}
}

func TestFailureRecordedWithExitCode(t *testing.T) {
	r, _ := runner(t)
	rec, err := r.Run(context.Background(), Spec{Deployment: "d", Generation: 1, ID: "f", Command: []string{"sh", "-c", "echo boom; exit 3"}})
	if err != nil {
		t.Fatal(err)
	}
	if rec.ExitCode != 3 || rec.Error == "" || !strings.Contains(rec.OutputTail, "boom") {
		t.Fatalf("record %+v", rec)
	}
}

func TestOutputTailBounded(t *testing.T) {
	r, _ := runner(t)
	rec, err := r.Run(context.Background(), Spec{Deployment: "d", Generation: 1, ID: "big", Shell: true,
		Command: []string{"head -c 100000 /dev/zero | tr '\\0' a; echo END"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.OutputTail) > TailBytes || !strings.HasSuffix(strings.TrimSpace(rec.OutputTail), "END") {
		t.Fatalf("tail of %d bytes, ends %q", len(rec.OutputTail), rec.OutputTail[len(rec.OutputTail)-10:])
	}
}
