package mesh

import (
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

func pool(reconnects ...int) []nats.Server {
	out := make([]nats.Server, len(reconnects))
	for i, r := range reconnects {
		out[i] = nats.Server{URL: &url.URL{Scheme: "nats", Host: "s" + string(rune('a'+i)) + ":4222"}, Reconnects: r}
	}
	return out
}

// The first attempt after a disconnection waits a random pause within the
// spread; once every server was tried, at least the backoff.
func TestReconnectSpread(t *testing.T) {
	cfg := ClientConfig{ReconnectWait: 250 * time.Millisecond, ReconnectMax: 1500 * time.Millisecond, ReconnectMultiplier: 2}
	spread := 5 * time.Second
	cfg.Spread = func() time.Duration { return spread }
	var lo, hi time.Duration = time.Hour, 0
	for range 2000 {
		_, d := cfg.reconnectTo(pool(0), nats.ServerInfo{})
		if d < 0 || d >= spread {
			t.Fatalf("first pause %s, want within [0, %s)", d, spread)
		}
		lo, hi = min(lo, d), max(hi, d)
	}
	// 2,000 draws cover the window: not all at once.
	if lo > spread/10 || hi < spread*9/10 {
		t.Fatalf("first pauses from %s to %s: not spread over %s", lo, hi, spread)
	}
	for range 200 {
		_, d := cfg.reconnectTo(pool(3), nats.ServerInfo{})
		if d < cfg.ReconnectDelay(3) && d < time.Second { // 1 s: the backoff at attempt 3, no jitter
			t.Fatalf("pause after 3 attempts %s, below the backoff", d)
		}
		if d >= spread && d > cfg.ReconnectMax {
			t.Fatalf("pause after 3 attempts %s, above both the spread and the backoff's cap", d)
		}
	}
	// No spread heard: the first attempt is immediate, as without one.
	spread = 0
	if _, d := cfg.reconnectTo(pool(0), nats.ServerInfo{}); d != 0 {
		t.Fatalf("first pause %s without a spread, want none", d)
	}
	if _, d := cfg.reconnectTo(pool(2), nats.ServerInfo{}); d != cfg.ReconnectDelay(2) {
		t.Fatalf("pause %s without a spread after 2 attempts, want the backoff %s", d, cfg.ReconnectDelay(2))
	}
}

// Attempts go to the server tried least, ties at random.
func TestReconnectPicksTheLeastTried(t *testing.T) {
	cfg := ClientConfig{ReconnectWait: time.Millisecond, ReconnectMax: time.Millisecond, ReconnectMultiplier: 1}
	servers := pool(2, 0, 1)
	if s, _ := cfg.reconnectTo(servers, nats.ServerInfo{}); s != &servers[1] {
		t.Fatalf("picked %v, want the one never tried", s.URL)
	}
	seen := map[string]bool{}
	for range 200 {
		servers := pool(1, 1, 1)
		s, _ := cfg.reconnectTo(servers, nats.ServerInfo{})
		seen[s.URL.Host] = true
	}
	if len(seen) != 3 {
		t.Fatalf("ties went to %v only", seen)
	}
}
