package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// `harmony rollout undo` after a change every device took: the earlier
// spec comes back as a new generation, and the device applies it like any
// change (its file rewritten, its container replaced by one with the old
// environment), with the steps and defaults docs/operator.md gives.
func TestRolloutUndoRestoresThePreviousGeneration(t *testing.T) {
	e := newFleetEnv(t)
	cli := cliAt("http://"+e.httpAddr, "")
	old := e.apply(e.resources("0644", "old", true)...)
	e.waitStatus("the first generation", ready(old))
	oldID := e.containerID()
	changed := e.apply(e.resources("0600", "new", true)...)
	e.waitStatus("the change", ready(changed))
	if e.containerID() == oldID {
		t.Fatal("the change did not replace the container")
	}

	out, err := cli("rollout", "history", "deployment/web")
	if err != nil || !strings.Contains(out, "2 (current)") || !strings.Contains(out, "\n1 ") {
		t.Fatalf("rollout history: %s %v", out, err)
	}
	if out, err = cli("rollout", "undo", "deployment/web"); err != nil || !strings.Contains(out, "deployment/web rolled back (generation 3)") {
		t.Fatalf("rollout undo: %s %v", out, err)
	}
	e.waitStatus("the undo", ready(3))
	st, err := os.Stat(filepath.Join(e.root, "app.conf"))
	if err != nil || st.Mode().Perm() != 0o644 {
		t.Fatalf("app.conf after the undo: %v %v", st, err)
	}
	env, err := exec.Command("podman", "container", "inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}", e.container).Output()
	if err != nil || !strings.Contains(string(env), "MODE=old") {
		t.Fatalf("the container after the undo: %s %v", env, err)
	}

	// Going "back" to the current generation is refused, naming the field.
	if _, err := cli("rollout", "undo", "deployment/web", "--to-generation", "3"); err == nil || !strings.Contains(err.Error(), "toGeneration: 3 is the current generation") {
		t.Fatalf("undo to the current generation: %v", err)
	}
}
