// Package meshtest starts real embedded NATS servers for tests: one node, or a
// JetStream cluster of several nodes in one process, on random loopback ports
// with t.TempDir storage, stopped by t.Cleanup.
package meshtest

import (
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/harmony-fleet/harmony/internal/mesh"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// StartServer starts one embedded JetStream server listening on a random
// loopback port, with sync-always durability as in production.
func StartServer(t testing.TB) *mesh.Server {
	t.Helper()
	s, err := mesh.StartServer(mesh.ServerConfig{
		Name:       "test",
		DataDir:    t.TempDir(),
		Listen:     "127.0.0.1:0",
		SyncAlways: true,
	})
	if err != nil {
		t.Fatalf("start nats: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// Single is one embedded JetStream server that can be stopped and started
// again on the same data directory and port (a server outage).
type Single struct {
	t   testing.TB
	cfg mesh.ServerConfig

	mu  sync.Mutex
	srv *mesh.Server // nil while stopped
}

// StartSingle starts a restartable server on a free loopback port.
func StartSingle(t testing.TB) *Single {
	t.Helper()
	port := freePorts(t, 1)[0]
	s := &Single{t: t, cfg: mesh.ServerConfig{Name: "single", DataDir: t.TempDir(), Listen: fmt.Sprintf("127.0.0.1:%d", port), SyncAlways: true}}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// URL is the server's client URL (the same across restarts).
func (s *Single) URL() string { return "nats://" + s.cfg.Listen }

// Start starts the server if it is stopped.
func (s *Single) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return
	}
	srv, err := mesh.StartServer(s.cfg)
	if err != nil {
		s.t.Fatalf("start nats: %v", err)
	}
	s.srv = srv
}

// Stop shuts the server down if it runs.
func (s *Single) Stop() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
	}
}

// Cluster is a JetStream cluster whose members can be stopped and restarted
// on their own data directories.
type Cluster struct {
	t       testing.TB
	Configs []mesh.ServerConfig

	mu      sync.Mutex
	servers []*mesh.Server // nil while stopped
}

// StartCluster starts n clustered servers and waits until JetStream has a
// meta leader.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	routePorts := freePorts(t, n)
	clientPorts := freePorts(t, n)
	var routes []string
	for _, p := range routePorts {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	c := &Cluster{t: t, servers: make([]*mesh.Server, n)}
	dir := t.TempDir()
	for i := 0; i < n; i++ {
		c.Configs = append(c.Configs, mesh.ServerConfig{
			Name:          fmt.Sprintf("n%d", i+1),
			DataDir:       filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
			Listen:        fmt.Sprintf("127.0.0.1:%d", clientPorts[i]),
			SyncAlways:    true,
			ClusterName:   "test",
			ClusterListen: fmt.Sprintf("127.0.0.1:%d", routePorts[i]),
			Routes:        routes,
		})
	}
	// Members start one after another in the background of NewServer; each
	// StartServer returns once its client port accepts connections.
	for i := range c.Configs {
		c.Start(i)
	}
	t.Cleanup(func() {
		for i := range c.Configs {
			c.Stop(i)
		}
	})
	c.WaitForMetaLeader()
	return c
}

// URLs are the client URLs of every member, for a connection that fails over.
func (c *Cluster) URLs() []string {
	var out []string
	for _, cfg := range c.Configs {
		out = append(out, "nats://"+cfg.Listen)
	}
	return out
}

// Start (re)starts member i on its data directory.
func (c *Cluster) Start(i int) {
	c.t.Helper()
	s, err := mesh.StartServer(c.Configs[i])
	if err != nil {
		c.t.Fatalf("start %s: %v", c.Configs[i].Name, err)
	}
	c.mu.Lock()
	c.servers[i] = s
	c.mu.Unlock()
}

// Stop shuts member i down, if it runs.
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	s := c.servers[i]
	c.servers[i] = nil
	c.mu.Unlock()
	if s != nil {
		s.Shutdown()
	}
}

// running returns the members that run now.
func (c *Cluster) running() map[int]*mesh.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[int]*mesh.Server{}
	for i, s := range c.servers {
		if s != nil {
			out[i] = s
		}
	}
	return out
}

// WaitForMetaLeader waits until the running members have a meta leader that
// sees every running member as an online JetStream peer, so that streams of
// any replica count up to that can be placed.
func (c *Cluster) WaitForMetaLeader() {
	c.t.Helper()
	retry.Until(c.t, 60*time.Second, func() error {
		running := c.running()
		for _, s := range running {
			if s.NATS().JetStreamIsLeader() {
				if peers := s.NATS().JetStreamClusterPeers(); len(peers) < len(running) {
					return fmt.Errorf("meta leader sees %d of %d peers", len(peers), len(running))
				}
				return nil
			}
		}
		return fmt.Errorf("no meta leader yet")
	})
}

// StreamLeader returns the index of the member leading stream (in the
// global account), or -1.
func (c *Cluster) StreamLeader(stream string) int {
	for i, s := range c.running() {
		if s.NATS().JetStreamIsStreamLeader("$G", stream) {
			return i
		}
	}
	return -1
}

// Connect opens a client connection to every member that fails over between
// them and is closed at cleanup.
func (c *Cluster) Connect() *nats.Conn {
	c.t.Helper()
	nc, err := mesh.Connect(mesh.ClientConfig{Name: "test", URLs: c.URLs(), ReconnectWait: 50 * time.Millisecond})
	if err != nil {
		c.t.Fatalf("connect: %v", err)
	}
	c.t.Cleanup(nc.Close)
	return nc
}

// Connect opens a connection to one server, closed at cleanup.
func Connect(t testing.TB, s *mesh.Server) *nats.Conn {
	t.Helper()
	nc, err := mesh.Connect(mesh.ClientConfig{Name: "test", URLs: []string{s.ClientURL()}, ReconnectWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("free port: %v", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}
