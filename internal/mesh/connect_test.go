package mesh_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/mesh"
	"github.com/harmony-fleet/harmony/internal/mesh/meshtest"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// lockedBuffer is a log destination the connection's callbacks write to
// from their own goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitForLine polls the log until it has a line containing want.
func waitForLine(t *testing.T, buf *lockedBuffer, want string) string {
	t.Helper()
	var found string
	retry.Until(t, 10*time.Second, func() error {
		for _, line := range strings.Split(buf.String(), "\n") {
			if strings.Contains(line, want) {
				found = line
				return nil
			}
		}
		return fmt.Errorf("no log line with %q in %q", want, buf.String())
	})
	return found
}

// The "nats connected" line names the server actually reached: the URL
// dialed, with its real port, or in-process for the embedded server (which
// nats.go would report as its default nats://127.0.0.1:4222).
func TestConnectedLogNamesTheServerReached(t *testing.T) {
	s := meshtest.StartServer(t) // listens on a random port
	url := s.ClientURL()

	var buf lockedBuffer
	nc, err := mesh.Connect(mesh.ClientConfig{Name: "dialed", URLs: []string{url}, Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if line := waitForLine(t, &buf, "nats connected"); !strings.Contains(line, "url="+url) {
		t.Errorf("dialed: %q, want url=%s", line, url)
	}

	var inproc lockedBuffer
	nc2, err := mesh.Connect(mesh.ClientConfig{Name: "in-process", InProcess: s, Logger: slog.New(slog.NewTextHandler(&inproc, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	if line := waitForLine(t, &inproc, "nats connected"); !strings.Contains(line, "url=in-process") || strings.Contains(line, "4222") {
		t.Errorf("in-process: %q, want url=in-process", line)
	}
}
