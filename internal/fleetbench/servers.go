package fleetbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// clusterName is the cluster_name of a three-server bench (docs/install.md).
const clusterName = "harmony"

// member is one `harmony server` child process: the only one, or one of
// the three members of a JetStream cluster.
type member struct {
	name    string // --name; "" for a single server (its default)
	dataDir string
	nats    string // client address
	http    string
	route   string // cluster_listen ("" for a single server)

	cmd    *exec.Cmd
	done   chan error
	starts int
	// peakRSS is the highest VmHWM of the lives that ended.
	peakRSS uint64
}

func (m *member) label() string {
	if m.name == "" {
		return "server"
	}
	return "server " + m.name
}

// newMembers picks the members' directories and free loopback addresses.
func (b *bench) newMembers(dir string) error {
	for i := 0; i < b.cfg.Servers; i++ {
		m := &member{dataDir: filepath.Join(dir, "server")}
		if b.cfg.Servers > 1 {
			m.name = fmt.Sprintf("hm-%d", i+1)
			m.dataDir = filepath.Join(dir, m.name)
		}
		addrs := []*string{&m.nats, &m.http}
		if b.cfg.Servers > 1 {
			addrs = append(addrs, &m.route)
		}
		for _, addr := range addrs {
			var err error
			if *addr, err = freeAddr(); err != nil {
				return err
			}
		}
		b.members = append(b.members, m)
	}
	b.api = b.members[0]
	return nil
}

// serverArgs are a member's flags: the bench's ports and tokens, and for
// three servers what docs/install.md "Three servers" adds to each one's
// file (name, cluster_name, cluster_listen, routes of all three, replicas).
func (b *bench) serverArgs(m *member) []string {
	args := append(append([]string{}, b.cfg.Server[1:]...), "server", "--data-dir", m.dataDir, "--nats", m.nats,
		"--http", m.http, "--log-level", "warn", "--tokens-file", b.tokens)
	if b.cfg.Insecure {
		args = append(args, "--tls", "off", "--nats-auth", "off")
	}
	if len(b.members) > 1 {
		var routes []string
		for _, o := range b.members {
			routes = append(routes, o.route)
		}
		args = append(args, "--name", m.name, "--cluster-name", clusterName, "--cluster-listen", m.route,
			"--routes", strings.Join(routes, ","), "--replicas", "3")
	}
	return args
}

// startServers starts every member and waits until each is ready. For a
// cluster with TLS on it does what docs/install.md tells users: start one
// server first and copy its tls/ca.pem and tls/ca-key.pem into the other
// data directories before their first start, so that all three certificates
// come from one CA and devices trust a single ca.pem.
func (b *bench) startServers(ctx context.Context) error {
	first := b.members[0]
	if err := b.startMember(first); err != nil {
		return err
	}
	if len(b.members) > 1 && !b.cfg.Insecure {
		if err := b.waitCA(ctx, first); err != nil {
			return err
		}
		for _, m := range b.members[1:] {
			if err := shareCA(first.dataDir, m.dataDir); err != nil {
				return err
			}
		}
	}
	for _, m := range b.members[1:] {
		if err := b.startMember(m); err != nil {
			return err
		}
	}
	for _, m := range b.members {
		if err := b.waitReady(ctx, m); err != nil {
			return err
		}
	}
	return nil
}

// waitCA waits until m has made its CA (at the start of its first life,
// before it waits for the other members).
func (b *bench) waitCA(ctx context.Context, m *member) error {
	deadline := time.Now().Add(b.cfg.Timeout)
	for {
		if _, err := os.Stat(filepath.Join(m.dataDir, "tls", "ca.pem")); err == nil {
			return nil // written after its key
		}
		select {
		case err := <-m.done:
			m.cmd = nil
			return fmt.Errorf("%s exited before it made its CA: %v", m.label(), err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s made no CA in %s", m.label(), b.cfg.Timeout)
		}
	}
}

// shareCA copies the CA (certificate and key) of one data directory into
// another.
func shareCA(from, to string) error {
	dir := filepath.Join(to, "tls")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for name, mode := range map[string]os.FileMode{"ca-key.pem": 0o600, "ca.pem": 0o644} {
		data, err := os.ReadFile(filepath.Join(from, "tls", name))
		if err != nil {
			return fmt.Errorf("share the CA: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, mode); err != nil {
			return fmt.Errorf("share the CA: %w", err)
		}
	}
	return nil
}

// startMember starts m's process (on its data, if it ran before).
func (b *bench) startMember(m *member) error {
	cmd := exec.Command(b.cfg.Server[0], b.serverArgs(m)...)
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	// The server's own defaults, whatever HARMONY_* settings the bench's
	// environment holds (a test's HARMONY_TLS=off, say).
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HARMONY_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if b.cfg.Profile != "" && m == b.members[0] && m.starts == 0 {
		cmd.Env = append(cmd.Env, "HARMONY_CPU_PROFILE="+b.cfg.Profile, "HARMONY_HEAP_PROFILE="+b.cfg.Profile+".heap")
	}
	m.starts++
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", m.label(), err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	m.cmd, m.done = cmd, done
	return nil
}

// waitReady waits until m's /readyz answers 200.
func (b *bench) waitReady(ctx context.Context, m *member) error {
	deadline := time.Now().Add(b.cfg.Timeout)
	for {
		if b.scheme == "https" && b.http.Transport == nil {
			b.trustCA() // written by the first server at its first start
		}
		if resp, err := b.http.Get(b.scheme + "://" + m.http + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-m.done:
			m.cmd = nil
			return fmt.Errorf("%s exited: %v", m.label(), err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready in %s", m.label(), b.cfg.Timeout)
		}
	}
}

// stopMember stops m gracefully (SIGTERM: a cluster member hands its
// stream leaderships over first) and waits until it has exited.
func (b *bench) stopMember(m *member) {
	if m.cmd == nil {
		return
	}
	m.signalStop()
	m.waitStopped()
}

// signalStop keeps the peak memory of the life that ends and asks the
// process to stop.
func (m *member) signalStop() {
	m.peakRSS = max(m.peakRSS, vmHWM(m.cmd.Process.Pid))
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
}

func (m *member) waitStopped() {
	<-m.done
	m.cmd = nil
}

// stopServers stops every member still running, all at once (never leave
// a child running).
func (b *bench) stopServers() {
	running := b.running()
	for _, m := range running {
		m.signalStop()
	}
	for _, m := range running {
		m.waitStopped()
	}
}

// running are the members whose process runs.
func (b *bench) running() []*member {
	var out []*member
	for _, m := range b.members {
		if m.cmd != nil {
			out = append(out, m)
		}
	}
	return out
}

// waitCaughtUp waits until every KV_* stream has a leader and every
// follower is current: what docs/install.md ("Upgrades") tells users to
// wait for before stopping the next member, lest a stream lose its
// majority.
func (b *bench) waitCaughtUp(ctx context.Context, nc *nats.Conn) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(b.cfg.Timeout)
	for {
		err := caughtUp(ctx, js, len(b.members)-1)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("streams not caught up after %s: %w", b.cfg.Timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func caughtUp(ctx context.Context, js jetstream.JetStream, followers int) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	names := js.StreamNames(ctx)
	n := 0
	for name := range names.Name() {
		if !strings.HasPrefix(name, "KV_") {
			continue
		}
		s, err := js.Stream(ctx, name)
		if err != nil {
			return err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return err
		}
		if info.Cluster == nil || info.Cluster.Leader == "" {
			return fmt.Errorf("%s has no leader", name)
		}
		if len(info.Cluster.Replicas) != followers {
			return fmt.Errorf("%s: %d followers, want %d", name, len(info.Cluster.Replicas), followers)
		}
		for _, r := range info.Cluster.Replicas {
			if !r.Current || r.Offline {
				return fmt.Errorf("%s: follower %s not current", name, r.Name)
			}
		}
		n++
	}
	if err := names.Err(); err != nil {
		return err
	}
	if n == 0 {
		return errors.New("no KV_* stream listed")
	}
	return nil
}
