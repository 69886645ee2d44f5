package fleetbench

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"golang.org/x/sync/errgroup"

	"github.com/harmony-fleet/harmony/internal/identity"
)

// enrollParallel is how many enrollments the bench has in flight.
const enrollParallel = 16

// trustCA makes the bench's HTTP client trust the CA the first server made
// in its data directory (and nothing else; the others share it), once the
// file is there.
func (b *bench) trustCA() {
	pem, err := os.ReadFile(filepath.Join(b.api.dataDir, "tls", "ca.pem"))
	if err != nil {
		return
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return
	}
	b.http.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost: enrollParallel}
}

func (b *bench) seedFile(device string) string { return filepath.Join(b.seeds, device+".nk") }

// enrollDevices gives every simulated device its own identity the way a
// user does it: a one-time token made for the device (POST
// /api/v1/enrollment-tokens, as `harmony token create --device`), then the
// device's enrollment with its new public key (POST /api/v1/enroll, as
// `harmony enroll --token`); the seed stays with the device.
func (b *bench) enrollDevices(ctx context.Context) error {
	if err := os.MkdirAll(b.seeds, 0o700); err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(enrollParallel)
	for i := 0; i < b.cfg.Devices; i++ {
		id := deviceID(i)
		g.Go(func() error {
			var tok struct {
				Token string `json:"token"`
			}
			if err := b.postJSON(gctx, "/api/v1/enrollment-tokens", identity.TokenRequest{Device: id, Expires: "1h"}, true, &tok); err != nil {
				return fmt.Errorf("token for %s: %w", id, err)
			}
			seed, pub, err := identity.NewSeed()
			if err != nil {
				return err
			}
			var ans identity.EnrollAnswer
			if err := b.postJSON(gctx, "/api/v1/enroll", identity.Request{Device: id, PublicKey: pub, Token: tok.Token}, false, &ans); err != nil {
				return fmt.Errorf("enroll %s: %w", id, err)
			}
			if ans.Status != "enrolled" {
				return fmt.Errorf("enroll %s: status %q", id, ans.Status)
			}
			return os.WriteFile(b.seedFile(id), seed, 0o600)
		})
	}
	return g.Wait()
}

// postJSON posts v as JSON (with the bench's admin token when auth) and
// decodes the answer into out.
func (b *bench) postJSON(ctx context.Context, path string, v any, auth bool, out any) error {
	body, _ := json.Marshal(v)
	req, _ := http.NewRequestWithContext(ctx, "POST", b.scheme+"://"+b.api.http+path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if auth {
		req.Header.Set("Authorization", "Bearer "+b.token)
	}
	resp, err := b.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("POST %s: %s: %s", path, resp.Status, msg)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
