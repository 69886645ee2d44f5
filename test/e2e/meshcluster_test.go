package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/harmony-fleet/harmony/internal/testutil/netproxy"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// clusterMember is one harmony server of a three-node cluster.
type clusterMember struct {
	name, nats, route, http string
	args                    []string
	proc                    *proc
}

// meshCluster is three harmony servers whose embedded NATS servers form one
// JetStream cluster (buckets at three replicas). Every link goes through a
// proxy: each route from member i to member j has its own, and clients
// reach member i through clients[i], so that one member can be cut off
// from the two others and from the clients on their side. The servers do
// not tell clients about each other (--no-advertise): a client uses the
// URLs it was given, as it would behind NAT.
type meshCluster struct {
	t       testing.TB
	dir     string
	auth    bool // --nats-auth identities: the test connects as member 1's admin
	members []*clusterMember
	routes  map[[2]int]*netproxy.Proxy
	clients []*netproxy.Proxy
}

// newMeshCluster starts the three servers; extra flags are added to each
// (a flag given again overrides the default here).
func newMeshCluster(t testing.TB, extra ...string) *meshCluster {
	t.Helper()
	dir := t.TempDir()
	c := &meshCluster{t: t, dir: dir, routes: map[[2]int]*netproxy.Proxy{}, auth: slices.Contains(extra, "identities")}
	for i := 1; i <= 3; i++ {
		c.members = append(c.members, &clusterMember{name: fmt.Sprintf("s%d", i),
			nats:  fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			route: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			http:  fmt.Sprintf("127.0.0.1:%d", freePort(t))})
	}
	for i, m := range c.members {
		c.clients = append(c.clients, netproxy.Start(t, m.nats))
		for j, to := range c.members {
			if i != j {
				c.routes[[2]int{i, j}] = netproxy.Start(t, to.route)
			}
		}
	}
	// The address each member gives the others (for routes they learn by
	// gossip) is a proxy into it that a partition of member 3 cuts only
	// when it leads into member 3.
	advertise := []string{c.routes[[2]int{1, 0}].Addr(), c.routes[[2]int{0, 1}].Addr(), c.routes[[2]int{0, 2}].Addr()}
	for i, m := range c.members {
		var routes []string
		for j := range c.members {
			if i != j {
				routes = append(routes, c.routes[[2]int{i, j}].Addr())
			}
		}
		m.args = []string{"server", "--name", m.name, "--data-dir", filepath.Join(dir, m.name), "--nats", m.nats, "--http", m.http,
			"--cluster-name", "hc", "--cluster-listen", m.route, "--routes", strings.Join(routes, ","),
			"--cluster-advertise", advertise[i], "--no-advertise", "--replicas", "3", "--heartbeat-staleness", "3s"}
		m.args = append(m.args, extra...)
		m.proc = startHarmony(t, m.args...)
	}
	for _, m := range c.members {
		waitMemberReady(t, m)
	}
	// Formed: through every member, every fleet stream has a leader and
	// two current followers.
	for i := range c.members {
		c.waitCurrent(c.js(i), fleetStreams...)
	}
	return c
}

// url is the client URL of member i (through its proxy).
func (c *meshCluster) url(i int) string { return "nats://" + c.clients[i].Addr() }

// urls are the client URLs of the given members, all when none is given.
func (c *meshCluster) urls(members ...int) []string {
	if len(members) == 0 {
		members = []int{0, 1, 2}
	}
	var out []string
	for _, i := range members {
		out = append(out, c.url(i))
	}
	return out
}

// partition cuts member i off from the two others and from the clients
// that reach it through its shared proxy (a blackhole: no resets).
func (c *meshCluster) partition(i int) {
	for k, p := range c.routes {
		if k[0] == i || k[1] == i {
			p.Cut()
		}
	}
	c.clients[i].Cut()
}

// heal undoes partition.
func (c *meshCluster) heal() {
	for _, p := range c.routes {
		p.Heal()
	}
	for _, p := range c.clients {
		p.Heal()
	}
}

// kill SIGKILLs member i's server; start runs it again on its data.
func (c *meshCluster) kill(i int) {
	m := c.members[i]
	_ = m.proc.cmd.Process.Signal(syscall.SIGKILL)
	<-m.proc.done
}

// stop stops member i's server gracefully (SIGTERM) and waits for it.
func (c *meshCluster) stop(i int) {
	if code := c.members[i].proc.signalAndWait(c.t, syscall.SIGTERM); code != 0 {
		c.t.Fatalf("%s exit code %d after SIGTERM; stderr:\n%s", c.members[i].name, code, c.members[i].proc.stderr)
	}
}

func (c *meshCluster) start(i int) {
	m := c.members[i]
	m.proc = startHarmony(c.t, m.args...)
	waitReady(c.t, "http://"+m.http)
}

// js connects to the members given (all when none) for inspecting streams.
func (c *meshCluster) js(members ...int) jetstream.JetStream {
	c.t.Helper()
	opts := []nats.Option{nats.MaxReconnects(-1)}
	if c.auth {
		// Each member accepts every member's admin identity once it has
		// read the identities bucket: keep trying until then.
		o, err := nats.NkeyOptionFromSeed(filepath.Join(c.dir, c.members[0].name, "nats-admin.nk"))
		if err != nil {
			c.t.Fatal(err)
		}
		opts = append(opts, o, nats.RetryOnFailedConnect(true), nats.IgnoreAuthErrorAbort())
	}
	nc, err := nats.Connect(strings.Join(c.urls(members...), ","), opts...)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		c.t.Fatal(err)
	}
	return js
}

// leader names the member that leads stream.
func (c *meshCluster) leader(js jetstream.JetStream, stream string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return "", err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return "", err
	}
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return "", fmt.Errorf("%s has no leader", stream)
	}
	return info.Cluster.Leader, nil
}

// moveLeaders makes member to the leader of every stream given, by asking
// the current leader to step down in its favour.
func (c *meshCluster) moveLeaders(js jetstream.JetStream, to string, streams ...string) {
	c.t.Helper()
	req, _ := json.Marshal(map[string]any{"placement": map[string]string{"preferred": to}})
	for _, s := range streams {
		retry.Until(c.t, 30*time.Second, func() error {
			l, err := c.leader(js, s)
			if err != nil {
				return err
			}
			if l == to {
				return nil
			}
			msg, err := js.Conn().Request("$JS.API.STREAM.LEADER.STEPDOWN."+s, req, 2*time.Second)
			if err != nil {
				return fmt.Errorf("step down %s: %w", s, err)
			}
			return fmt.Errorf("%s led by %s, asked to move to %s: %s", s, l, to, msg.Data)
		})
	}
}

// waitCurrent waits until every replica of every stream given is current
// and the stream has a leader: a member that came back has caught up.
func (c *meshCluster) waitCurrent(js jetstream.JetStream, streams ...string) {
	c.t.Helper()
	retry.Until(c.t, time.Minute, func() error {
		for _, name := range streams {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			s, err := js.Stream(ctx, name)
			if err != nil {
				cancel()
				return err
			}
			info, err := s.Info(ctx)
			cancel()
			if err != nil {
				return err
			}
			if info.Cluster == nil || info.Cluster.Leader == "" {
				return fmt.Errorf("%s has no leader", name)
			}
			if len(info.Cluster.Replicas) != 2 {
				return fmt.Errorf("%s: %d followers", name, len(info.Cluster.Replicas))
			}
			for _, r := range info.Cluster.Replicas {
				if !r.Current || r.Offline {
					return fmt.Errorf("%s: replica %s not current", name, r.Name)
				}
			}
		}
		return nil
	})
}

// fleetStreams are the streams of the fleet buckets.
var fleetStreams = []string{"KV_deployments", "KV_desired-state", "KV_device-info", "KV_device-state", "KV_device-heartbeat", "KV_device-labels", "KV_device-presence", "KV_leases"}

// waitMemberReady is waitReady that says why when the member's process
// ended meanwhile (its log's tail).
func waitMemberReady(t testing.TB, m *clusterMember) {
	t.Helper()
	retry.Until(t, 30*time.Second, func() error {
		select {
		case err := <-m.proc.done:
			m.proc.done <- err
			t.Fatalf("member %s exited (%v) before it was ready:\n%s", m.name, err, tail(m.proc.stderr.String(), 4000))
		default:
		}
		resp, err := http.Get("http://" + m.http + "/readyz")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("member %s: readyz %d", m.name, resp.StatusCode)
		}
		return nil
	})
}
