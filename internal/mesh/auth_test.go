package mesh_test

import (
	"fmt"
	"strings"
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

// TestSubscriptionsPerConnection: a connection cannot hold more than
// MaxSubscriptionsPerConnection subscriptions (a device opening millions
// on its inbox prefix would take the server's memory).
func TestSubscriptionsPerConnection(t *testing.T) {
	dev := newUser(t)
	s, err := mesh.StartServer(mesh.ServerConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0",
		Nkeys: []*server.NkeyUser{{Nkey: publicKey(t, dev), Permissions: mesh.DevicePermissions("dev-a", mesh.FleetBuckets{DesiredState: "desired-state"})}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	errs := make(chan error, 16)
	nc, err := nats.Connect(s.ClientURL(), nats.Nkey(publicKey(t, dev), dev.Sign), nats.NoReconnect(),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}),
		nats.ClosedHandler(func(c *nats.Conn) {
			select {
			case errs <- c.LastError():
			default:
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	for i := range mesh.MaxSubscriptionsPerConnection + 10 {
		if _, err := nc.SubscribeSync(fmt.Sprintf("%s.%d", mesh.DeviceInboxPrefix("dev-a"), i)); err != nil {
			break // closed by the server
		}
	}
	_ = nc.Flush()
	select {
	case err := <-errs:
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), "maximum subscriptions") {
			t.Fatalf("error %v, want the subscriptions limit", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%d subscriptions on one connection were all taken", mesh.MaxSubscriptionsPerConnection+10)
	}
}
