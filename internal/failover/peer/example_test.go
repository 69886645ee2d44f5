package peer_test

import (
	"context"
	"log/slog"
	"net"
	"time"

	"github.com/harmony-fleet/harmony/internal/failover/peer"
)

// How an agent runs the failsafe: one server for the others' requests, one
// client for its own. members maps the keys published in the members'
// heartbeats to their nodes.
func Example() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	id, err := peer.LoadIdentity("/etc/harmony/nkey.seed") // the agent's nats_nkey
	if err != nil {
		return
	}
	members := map[string]string{} // public key -> node, from the heartbeats
	srv, err := peer.NewServer(peer.ServerConfig{
		Identity: id,
		Cluster:  "orders",
		Trusted: func(pub string) (string, bool) {
			node, ok := members[pub] // under the loop's lock in real code
			return node, ok
		},
		Handle: func(ctx context.Context, from string, req peer.Request) peer.Response {
			return peer.Response{Granted: true, Lease: 2 * time.Second}
		},
		Log: slog.Default(),
	})
	if err != nil {
		return
	}
	ln, err := net.Listen("tcp", ":8009")
	if err != nil {
		return
	}
	go func() { _ = srv.Serve(ctx, ln) }()

	client := peer.NewClient(id)
	defer client.Close()
	actx, acancel := context.WithTimeout(ctx, 250*time.Millisecond)
	defer acancel()
	sent := time.Now() // the lease counts from before the request
	resp, err := client.Ask(actx, "db-2.internal:8009", "U...db-2's key", peer.Request{Cluster: "orders", From: "db-1", Epoch: 7})
	if err == nil && resp.Granted {
		_ = sent.Add(resp.Lease) // db-2 will not promote before this (on our clock)
	}
}
