package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// clusterMember is one harmony server of a three-node cluster.
type clusterMember struct {
	name, nats, route, http string
	args                    []string
	proc                    *proc
}

// Three harmony servers whose embedded NATS servers form one JetStream
// cluster, buckets at three replicas: a deployment applied through one is
// served by the others; an agent given all three NATS URLs moves to a
// survivor when its server is killed, and the fleet keeps converging
// through the two that are left.
func TestThreeServersFormOneCluster(t *testing.T) {
	dir := t.TempDir()
	var members []*clusterMember
	for i := 1; i <= 3; i++ {
		members = append(members, &clusterMember{name: fmt.Sprintf("s%d", i),
			nats:  fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			route: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			http:  fmt.Sprintf("127.0.0.1:%d", freePort(t))})
	}
	var routes, urls []string
	for _, m := range members {
		routes = append(routes, m.route)
		urls = append(urls, "nats://"+m.nats)
	}
	for _, m := range members {
		m.args = []string{"server", "--name", m.name, "--data-dir", filepath.Join(dir, m.name), "--nats", m.nats, "--http", m.http,
			"--cluster-name", "hc", "--cluster-listen", m.route, "--routes", strings.Join(routes, ","), "--replicas", "3",
			"--heartbeat-staleness", "3s"}
		m.proc = startHarmony(t, m.args...)
	}
	for _, m := range members {
		waitReady(t, "http://"+m.http)
	}
	root := t.TempDir()
	startHarmony(t, "agent", "--http", "127.0.0.1:0", "--id", "c1", "--nats-url", strings.Join(urls, ","),
		"--state-dir", filepath.Join(root, "state"), "--label", "site=home", "--allowed-roots", filepath.Join(root, "files"),
		"--shell-jobs", "--heartbeat-interval", "300ms", "--resync-interval", "1s")

	apply := func(via *clusterMember, note string) {
		t.Helper()
		path := deploymentFile(t, "hello", "site: home", note)
		retry.Until(t, 30*time.Second, func() error {
			if out, errOut, code := cli(t, via.http, "apply", "-f", path); code != 0 {
				return fmt.Errorf("apply through %s: %s %s", via.name, out, errOut)
			}
			return nil
		})
	}
	apply(members[0], "one")
	for _, m := range members {
		waitCounts(t, m.http, "hello", 1, 1, 0)
	}

	// Kill the first server outright; the two others carry on.
	if err := members[0].proc.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-members[0].proc.done
	apply(members[1], "two")
	retry.Until(t, time.Minute, func() error {
		d, err := describe(t, members[2].http, "hello")
		if err != nil {
			return err
		}
		if d.Status.Generation < 2 || d.Status.Succeeded != 1 || d.Status.Offline != 0 {
			return fmt.Errorf("after the node loss: %+v", d.Status)
		}
		return nil
	})
	// The killed server comes back and catches up.
	members[0].proc = startHarmony(t, members[0].args...)
	waitReady(t, "http://"+members[0].http)
	waitCounts(t, members[0].http, "hello", 1, 1, 0)
}
