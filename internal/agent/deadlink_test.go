package agent_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/mesh/meshtest"
	"github.com/harmony-fleet/harmony/internal/testutil/netproxy"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// TestAgentNoticesADeadLinkByItsHeartbeats: the link the agent uses is
// blackholed by a proxy whose kernel still acknowledges (so neither the
// kernel's keepalives nor anything but a round trip can tell), with pings
// at their default of two minutes: two unanswered heartbeats make the agent
// check the link, find it dead and reconnect through the other address,
// where its heartbeats go on.
func TestAgentNoticesADeadLinkByItsHeartbeats(t *testing.T) {
	srv := meshtest.StartServer(t)
	f := fleetOn(t, srv)
	addr := strings.TrimPrefix(srv.ClientURL(), "nats://")
	first, second := netproxy.Start(t, addr), netproxy.Start(t, addr)
	second.Refuse() // the agent starts on the first
	cfg := agentConfig(t, "nats://"+first.Addr(), t.TempDir(), t.TempDir())
	cfg.NATSURLs = append(cfg.NATSURLs, "nats://"+second.Addr())
	cfg.StoreTimeout = config.Duration(time.Second)
	if got := cfg.PingInterval(); got != 2*time.Minute {
		t.Fatalf("ping interval %s, want the default of 2 min (this test is about noticing without pings)", got)
	}
	startAgent(t, cfg)
	hb := f.kvs[cfg.Buckets.DeviceHeartbeat]
	ctx := context.Background()
	retry.Until(t, 10*time.Second, func() error {
		_, err := hb.Get(ctx, cfg.ID)
		return err
	})
	second.Heal()
	first.Cut()
	cut := time.Now()
	e, err := hb.Get(ctx, cfg.ID)
	if err != nil {
		t.Fatal(err)
	}
	before := e.Revision
	retry.Until(t, 30*time.Second, func() error {
		e, err := hb.Get(ctx, cfg.ID)
		if err != nil {
			return err
		}
		if e.Revision <= before+1 { // one beat may have been under way
			return fmt.Errorf("heartbeat at revision %d, %d after the cut", e.Revision, before)
		}
		return nil
	})
	t.Logf("heartbeats resumed through the other address %s after the cut", time.Since(cut).Round(time.Millisecond))
}
