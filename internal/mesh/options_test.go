package mesh

import (
	"crypto/tls"
	"slices"
	"testing"
)

// The device listener's TLS: handshakes admitted at a bounded rate, and the
// classic key exchange unless the hybrid one is asked for; the caller's
// tls.Config is never changed.
func TestServerTLSOptions(t *testing.T) {
	base := &tls.Config{MinVersion: tls.VersionTLS12}
	opts, err := serverOptions(ServerConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0", TLS: base})
	if err != nil {
		t.Fatal(err)
	}
	if opts.TLSRateLimit != DefaultTLSHandshakes {
		t.Fatalf("TLS handshake limit %d, want %d", opts.TLSRateLimit, DefaultTLSHandshakes)
	}
	if !slices.Equal(opts.TLSConfig.CurvePreferences, []tls.CurveID{tls.X25519, tls.CurveP256}) {
		t.Fatalf("curves %v, want X25519 then P-256", opts.TLSConfig.CurvePreferences)
	}
	if base.CurvePreferences != nil {
		t.Fatal("the caller's tls.Config was changed")
	}
	opts, err = serverOptions(ServerConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0", TLS: base, HybridKeyExchange: true, TLSHandshakes: 50})
	if err != nil {
		t.Fatal(err)
	}
	if opts.TLSConfig.CurvePreferences != nil || opts.TLSRateLimit != 50 {
		t.Fatalf("hybrid: curves %v (want Go's default, X25519MLKEM768 first), limit %d (want 50)", opts.TLSConfig.CurvePreferences, opts.TLSRateLimit)
	}
}
