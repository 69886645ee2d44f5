package mesh_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/harmony-fleet/harmony/internal/mesh"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// TestConnectionsPerDevice: one device identity holds at most
// MaxConnsPerDevice connections at once (a stolen identity cannot take the
// server's descriptors from everyone); a closed one frees its place; the
// cap does not apply to unlimited identities (the server's, an admin's).
func TestConnectionsPerDevice(t *testing.T) {
	dev, admin := newUser(t), newUser(t)
	s, err := mesh.StartServer(mesh.ServerConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0", MaxConnsPerDevice: 3,
		Nkeys: []*server.NkeyUser{
			{Nkey: publicKey(t, dev), Permissions: mesh.DevicePermissions("dev-a", mesh.FleetBuckets{DesiredState: "desired-state"})},
			{Nkey: publicKey(t, admin)},
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	if s.MaxConnections() <= 0 {
		t.Fatalf("MaxConnections = %d", s.MaxConnections())
	}
	connect := func(kp interface {
		Sign([]byte) ([]byte, error)
	}, pub string) (*nats.Conn, error) {
		nc, err := nats.Connect(s.ClientURL(), nats.Nkey(pub, kp.Sign), nats.NoReconnect())
		if err == nil {
			t.Cleanup(nc.Close)
		}
		return nc, err
	}
	var open []*nats.Conn
	for i := range 3 {
		nc, err := connect(dev, publicKey(t, dev))
		if err != nil {
			t.Fatalf("connection %d of the device: %v", i+1, err)
		}
		open = append(open, nc)
	}
	if _, err := connect(dev, publicKey(t, dev)); err == nil {
		t.Fatal("a fourth connection of the device was let in")
	}
	open[0].Close()
	retry.Until(t, 10*time.Second, func() error {
		nc, err := connect(dev, publicKey(t, dev))
		if err == nil {
			open[0] = nc
		}
		return err
	})
	for i := range 10 {
		if _, err := connect(admin, publicKey(t, admin)); err != nil {
			t.Fatalf("admin connection %d: %v", i+1, err)
		}
	}
}
