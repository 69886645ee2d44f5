package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
	"github.com/harmony-fleet/harmony/internal/web"
)

// BenchmarkDashboard10k measures the dashboard's pages on a real server
// (embedded NATS, operator) whose store holds 10,000 simulated devices:
// each has its device info, a heartbeat and a status for the one
// deployment that targets them all (half Ready, a tenth Failed). It
// reports the server time per page as seen by a loopback client (ns/op)
// and the HTML bytes per page (the assets, fetched once and cached, are
// reported by the "assets" case). The "api-" cases are the HTTP API's
// answers for one deployment (its table of 10,000 devices) and one
// device, with a bearer token (JSON bytes).
func BenchmarkDashboard10k(b *testing.B) {
	const devices = 10000
	cfg := testConfig(b, b.TempDir())
	cfg.SyncAlways = false // loading 30,000 keys is not what is measured
	cfg.HeartbeatStaleness = config.Duration(time.Hour)
	const secret = "bench-admin-secret-0123456789abcdef"
	cfg.Tokens = []config.Token{{Name: "bench", Role: "admin", SHA256: web.HashToken(secret)}}
	srv := start(b, cfg)
	st := openStore(b, srv.info.NATSURL)
	load(b, st, devices)

	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar}
	base := srv.info.HTTPURL
	resp, err := client.PostForm(base+"/login", url.Values{"token": {secret}})
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	get := func(path string, live bool) (int, error) {
		req, _ := http.NewRequest("GET", base+path, nil)
		if strings.HasPrefix(path, "/api/") {
			req.Header.Set("Authorization", "Bearer "+secret)
		}
		if live {
			req.Header.Set("HX-Request", "true")
			req.Header.Set("HX-Target", "live")
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("GET %s: %d %.300s", path, resp.StatusCode, body)
		}
		return len(body), err
	}
	// The operator has the whole fleet in view.
	retry.Until(b, 2*time.Minute, func() error {
		req, _ := http.NewRequest("GET", base+"/", nil)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(body), fmt.Sprintf(`id="devices-online">%d online`, devices)) {
			return fmt.Errorf("overview does not show %d devices online yet", devices)
		}
		return nil
	})
	for _, c := range []struct {
		name, path string
		live       bool
	}{
		{"overview", "/", false},
		{"overview-live", "/", true},
		{"deployments", "/deployments", false},
		{"deployment", "/deployments/fleet", false},
		{"devices", "/devices", false},
		{"devices-filtered", "/devices?selector=site%3Doffice&state=online&page=7", false},
		{"device", "/devices/dev-04242", false},
		{"api-deployment", "/api/v1/deployments/fleet", false},
		{"api-device", "/api/v1/devices/dev-04242", false},
	} {
		b.Run(c.name, func(b *testing.B) {
			n := 0
			for b.Loop() {
				var err error
				if n, err = get(c.path, c.live); err != nil {
					b.Fatal(err)
				}
			}
			unit := "html-bytes"
			if strings.HasPrefix(c.path, "/api/") {
				unit = "json-bytes"
			}
			b.ReportMetric(float64(n), unit)
		})
	}
	b.Run("assets", func(b *testing.B) {
		total := 0
		for b.Loop() {
			total = 0
			for _, p := range []string{"/static/htmx.min.js", "/static/app.css", "/static/favicon.svg"} {
				n, err := get(p, false)
				if err != nil {
					b.Fatal(err)
				}
				total += n
			}
		}
		b.ReportMetric(float64(total), "bytes")
	})
}

// load writes n devices, their heartbeats and their status for deployment
// "fleet" (which selects every device) straight into the store.
func load(b *testing.B, st store.Store, n int) {
	b.Helper()
	ctx := context.Background()
	open := func(name string) store.KV {
		kv, err := st.Open(ctx, name)
		if err != nil {
			b.Fatal(err)
		}
		return kv
	}
	info, beats, states, deps := open("device-info"), open("device-heartbeat"), open("device-state"), open("deployments")
	var d v1.Deployment
	d.APIVersion, d.Kind = v1.APIVersion, "Deployment"
	d.Metadata.Name, d.Metadata.Generation = "fleet", 1
	d.Spec.Resources = []v1.Resource{{ID: "motd", Kind: "File", Spec: []byte(`{"path":"/etc/motd","content":"hi"}`)}}
	dep, _ := v1.Marshal(v1.StoredDeployment{V: v1.FormatVersion, Deployment: d})
	if _, err := deps.Create(ctx, "fleet", dep); err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				id := fmt.Sprintf("dev-%05d", i)
				site := []string{"home", "office"}[i%2]
				di, _ := v1.Marshal(v1.DeviceInfo{V: v1.FormatVersion, ID: id, Labels: map[string]string{"site": site},
					Inventory: v1.Inventory{Hostname: id, OS: "linux", Arch: "arm64", CPUs: 4, MemoryBytes: 4 << 30}})
				hb, _ := v1.Marshal(v1.Heartbeat{V: v1.FormatVersion, Boot: "b", Seq: 1})
				phase := v1.PhaseProgressing
				switch {
				case i%10 == 0:
					phase = v1.PhaseFailed
				case i%2 == 0:
					phase = v1.PhaseReady
				}
				ds, _ := v1.Marshal(v1.DeviceState{V: v1.FormatVersion, Device: id, Deployment: "fleet", ObservedGeneration: 1, Phase: phase,
					Resources: []v1.ResourceStatus{{ID: "motd", Kind: "File", Phase: phase, Since: time.Now()}}})
				for _, kv := range []struct {
					kv    store.KV
					key   string
					value []byte
				}{{info, id, di}, {beats, id, hb}, {states, v1.DeviceKey(id, "fleet"), ds}} {
					if _, err := kv.kv.Create(ctx, kv.key, kv.value); err != nil {
						errs <- fmt.Errorf("%s %s: %w", kv.kv.Bucket(), kv.key, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}
