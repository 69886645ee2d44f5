package agent_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// Before its first heartbeat the agent's /health says there is none
// (heartbeat_age_seconds null), not an age of -1 seconds; once the store
// acknowledged one, the age is a number again.
func TestHealthBeforeFirstHeartbeat(t *testing.T) {
	// A mesh nobody listens on: no heartbeat can be acknowledged.
	dead := freePort(t)
	cfg := agentConfig(t, fmt.Sprintf("nats://127.0.0.1:%d", dead), t.TempDir(), t.TempDir())
	port := freePort(t)
	cfg.HTTP = fmt.Sprintf("127.0.0.1:%d", port)
	startAgent(t, cfg)
	health := func() (map[string]any, error) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/health", port))
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		var v map[string]any
		return v, json.NewDecoder(resp.Body).Decode(&v)
	}
	var v map[string]any
	retry.Until(t, 10*time.Second, func() (err error) {
		v, err = health()
		return err
	})
	age, present := v["heartbeat_age_seconds"]
	if !present || age != nil {
		t.Fatalf("heartbeat_age_seconds before any heartbeat = %v (present %v), want null: %v", age, present, v)
	}
	if _, ok := v["last_heartbeat"]; ok {
		t.Fatalf("last_heartbeat before any heartbeat: %v", v)
	}

	f := startFleet(t)
	cfg2 := agentConfig(t, f.srv.ClientURL(), t.TempDir(), t.TempDir())
	port2 := freePort(t)
	cfg2.ID = "dev-2"
	cfg2.HTTP = fmt.Sprintf("127.0.0.1:%d", port2)
	startAgent(t, cfg2)
	port = port2
	retry.Until(t, 20*time.Second, func() error {
		v, err := health()
		if err != nil {
			return err
		}
		if a, ok := v["heartbeat_age_seconds"].(float64); !ok || a < 0 {
			return fmt.Errorf("heartbeat_age_seconds = %v", v["heartbeat_age_seconds"])
		}
		return nil
	})
}
