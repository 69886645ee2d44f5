package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// A server whose log nobody reads (a journald that stopped taking lines, a
// pipe to a hung process) keeps working: its stderr is a pipe shrunk to one
// page that the test never drains, and it logs at debug level, so the pipe
// is full within its first lines. The server still gets ready, takes an
// apply through the API, and stops on SIGTERM.
func TestServerOutlivesAStuckLogReader(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	if _, err := unix.FcntlInt(w.Fd(), unix.F_SETPIPE_SZ, os.Getpagesize()); err != nil {
		t.Fatalf("shrink the pipe: %v", err)
	}
	dir := t.TempDir()
	natsAddr, httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t)), fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cmd := exec.Command(binary, "server", "--data-dir", filepath.Join(dir, "server"), "--nats", natsAddr,
		"--http", httpAddr, "--log-level", "debug")
	cmd.Stderr = w
	p := startProc(t, &proc{cmd: cmd, stderr: &bytes.Buffer{}}) // its stderr is the pipe, not this buffer
	w.Close()                                                   // the child holds the write end
	waitReady(t, "http://"+httpAddr)
	path := deploymentFile(t, "hello", "site: home", "stuck log")
	if out, errOut, code := cli(t, httpAddr, "apply", "-f", path); code != 0 {
		t.Fatalf("apply with the log stuck: %s %s", out, errOut)
	}
	if out, errOut, code := cli(t, httpAddr, "get", "deployments"); code != 0 {
		t.Fatalf("get with the log stuck: %s %s", out, errOut)
	}
	if code := p.signalAndWait(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("server exit code %d with the log stuck", code)
	}
}
