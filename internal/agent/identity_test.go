package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/mesh"
	"github.com/harmony-fleet/harmony/internal/relay"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// identity makes an nkey user and writes its seed to a 0600 file.
func identity(t *testing.T) (public, seedFile string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	public, _ = kp.PublicKey()
	seed, _ := kp.Seed()
	seedFile = filepath.Join(t.TempDir(), "seed.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	return public, seedFile
}

// The real agent works under a device identity that reaches its own keys
// only through the relay (mesh.DevicePermissions; what it may not do is
// tested in internal/mesh and internal/relay): it registers, heartbeats,
// converges its desired state, reports status and answers commands.
func TestAgentRunsWithADeviceIdentity(t *testing.T) {
	b := config.DefaultServer().Buckets
	serverPub, serverSeed := identity(t)
	devPub, devSeed := identity(t)
	srv, err := mesh.StartServer(mesh.ServerConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0", Nkeys: []*natsserver.NkeyUser{
		{Nkey: serverPub},
		{Nkey: devPub, Permissions: mesh.DevicePermissions("dev-1", mesh.FleetBuckets{DesiredState: b.DesiredState,
			DeviceInfo: b.DeviceInfo, DeviceState: b.DeviceState, DeviceHeartbeat: b.DeviceHeartbeat})},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)

	// The control plane's side, as the server identity.
	f := fleetAs(t, mesh.ClientConfig{URLs: []string{srv.ClientURL()}, NkeySeedFile: serverSeed})
	f.srv = srv
	nc := f.nc
	// The relay, as harmony server runs it: the device reaches its keys
	// only through it.
	rl := relay.NewServer(nc, relay.Fleet{DesiredState: f.kvs[b.DesiredState], DeviceInfo: f.kvs[b.DeviceInfo],
		DeviceState: f.kvs[b.DeviceState], DeviceHeartbeat: f.kvs[b.DeviceHeartbeat]}, slog.New(slog.DiscardHandler),
		relay.Options{})
	rctx, rcancel := context.WithCancel(context.Background())
	rdone := make(chan struct{})
	go func() { defer close(rdone); _ = rl.Run(rctx) }()
	t.Cleanup(func() { rcancel(); <-rdone })
	<-rl.Ready()

	root := t.TempDir()
	cfg := agentConfig(t, srv.ClientURL(), root, t.TempDir())
	cfg.NATSNkey = devSeed
	startAgent(t, cfg)

	retry.Until(t, 20*time.Second, func() error {
		if _, err := f.kvs[b.DeviceInfo].Get(context.Background(), "dev-1"); err != nil {
			return fmt.Errorf("device info: %w", err)
		}
		if _, err := f.kvs[b.DeviceHeartbeat].Get(context.Background(), "dev-1"); err != nil {
			return fmt.Errorf("heartbeat: %w", err)
		}
		return nil
	})
	motd := filepath.Join(root, "motd")
	f.putDesired(t, v1.DesiredState{V: 1, Device: "dev-1", Deployment: "web", Generation: 1,
		Resources: []v1.Resource{fileRes("motd", motd, "v1\n", "")}})
	f.waitStatus(t, "web", readyAt(1))
	// A second generation: the watch and the status CAS keep working.
	f.putDesired(t, v1.DesiredState{V: 1, Device: "dev-1", Deployment: "web", Generation: 2,
		Resources: []v1.Resource{fileRes("motd", motd, "v2\n", "")}})
	f.waitStatus(t, "web", readyAt(2))
	if b, err := os.ReadFile(motd); err != nil || string(b) != "v2\n" {
		t.Fatalf("motd = %q (%v)", b, err)
	}
	// Commands reach it and its answer comes back.
	req, _ := json.Marshal(v1.CommandRequest{Op: v1.OpPing})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := nc.RequestWithContext(ctx, v1.CommandSubject("dev-1"), req)
	if err != nil {
		t.Fatalf("ping: %v", err)
	}
	var reply v1.CommandReply
	if err := json.Unmarshal(m.Data, &reply); err != nil || !reply.OK {
		t.Fatalf("ping reply %s (%v)", m.Data, err)
	}
}
