package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/mesh/meshtest"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// metric reads one line of a server's metrics ("" when it is missing).
func metric(t *testing.T, base, name string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, name+" ") {
			return strings.TrimPrefix(line, name+" ")
		}
	}
	return ""
}

// The attack of issue "Security II" end to end: the device-info bucket is
// wiped while the servers are down; after the restart no desired state is
// removed, both servers show the hold (API, metrics), a viewer cannot
// release it, and an admin's release through the server that does not
// collect has the collecting one remove the keys.
func TestOrphanHoldAPI(t *testing.T) {
	ns := meshtest.StartServer(t)
	cfgA, cfgB := testConfig(t, ""), testConfig(t, "")
	cfgA.NATSURLs, cfgB.NATSURLs = []string{ns.ClientURL()}, []string{ns.ClientURL()}
	cfgA.Name, cfgB.Name = "a", "b"
	a := start(t, cfgA)
	waitReady(t, a.info.HTTPURL)
	base := a.info.HTTPURL

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st := openStore(t, ns.ClientURL())
	doc := "apiVersion: harmony/v1alpha1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  resources: []\n"
	if code, out, _ := apiCall(t, base, adminToken, "POST", "/api/v1/deployments", doc); code != http.StatusOK {
		t.Fatalf("apply: %d %v", code, out)
	}
	info, err := st.Open(ctx, "device-info")
	if err != nil {
		t.Fatal(err)
	}
	desired, err := st.Open(ctx, "desired-state")
	if err != nil {
		t.Fatal(err)
	}
	const devices = 12
	for i := range devices {
		id := fmt.Sprintf("dev%02d", i)
		b, _ := v1.Marshal(v1.DeviceInfo{V: 1, ID: id})
		if _, err := info.Create(ctx, id, b); err != nil {
			t.Fatal(err)
		}
	}
	keys := func() int {
		es, err := desired.List(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		return len(es)
	}
	retry.Until(t, 10*time.Second, func() error {
		if n := keys(); n != devices {
			return fmt.Errorf("%d desired-state keys", n)
		}
		return nil
	})

	// Nothing held: anyone may look, nobody can release.
	if code, out, _ := apiCall(t, base, viewerToken, "GET", "/api/v1/orphans", ""); code != http.StatusOK || out["held"] != float64(0) {
		t.Fatalf("GET /api/v1/orphans as a viewer: %d %v", code, out)
	}
	if code, out, ecode := apiCall(t, base, adminToken, "POST", "/api/v1/orphans/release", ""); code != http.StatusConflict || ecode != "conflict" {
		t.Fatalf("a release with nothing held: %d %v", code, out)
	}
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}

	// The wipe: every device-info key gone, without a per-key delete.
	js, err := jetstream.New(meshtest.Connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(ctx, "KV_device-info"); err != nil {
		t.Fatal(err)
	}

	a, b := start(t, cfgA), start(t, cfgB) // the restart (a makes the bucket again, empty)
	defer b.stop()
	defer a.stop()
	waitReady(t, a.info.HTTPURL)
	waitReady(t, b.info.HTTPURL)
	var fingerprint string
	for _, s := range []running{a, b} {
		retry.Until(t, 20*time.Second, func() error {
			code, out, _ := apiCall(t, s.info.HTTPURL, viewerToken, "GET", "/api/v1/orphans", "")
			causes, _ := out["causes"].(map[string]any)
			if code != http.StatusOK || out["held"] != float64(devices) || causes["device-gone"] != float64(devices) {
				return fmt.Errorf("GET /api/v1/orphans: %d %v", code, out)
			}
			if fp := out["fingerprint"].(string); fingerprint != "" && fp != fingerprint {
				return fmt.Errorf("the servers hold different sets: %s and %s", fingerprint, fp)
			}
			fingerprint = out["fingerprint"].(string)
			return nil
		})
		if got := metric(t, s.info.HTTPURL, `harmony_operator_orphans_held{cause="device-gone"}`); got != fmt.Sprint(devices) {
			t.Fatalf("metric harmony_operator_orphans_held{cause=\"device-gone\"} = %q", got)
		}
	}
	if n := keys(); n != devices {
		t.Fatalf("the restart removed %d of %d desired-state keys", devices-n, devices)
	}

	// The release, through the server that does not collect.
	var other running
	retry.Until(t, 20*time.Second, func() error {
		switch ha, hb := leaseHeld(t, a.info.HTTPURL), leaseHeld(t, b.info.HTTPURL); {
		case ha && !hb:
			other = b
		case hb && !ha:
			other = a
		default:
			return errors.New("no single lease holder yet")
		}
		return nil
	})
	if code, out, ecode := apiCall(t, other.info.HTTPURL, viewerToken, "POST", "/api/v1/orphans/release", ""); code != http.StatusForbidden || ecode != "forbidden" {
		t.Fatalf("a viewer's release: %d %v", code, out)
	}
	if code, out, ecode := apiCall(t, other.info.HTTPURL, adminToken, "POST", "/api/v1/orphans/release", `{"fingerprint":"0000000000000000"}`); code != http.StatusConflict || ecode != "conflict" {
		t.Fatalf("a release of another hold: %d %v", code, out)
	}
	if n := keys(); n != devices {
		t.Fatalf("%d keys removed before the release", devices-n)
	}
	if code, out, _ := apiCall(t, other.info.HTTPURL, adminToken, "POST", "/api/v1/orphans/release", `{"fingerprint":"`+fingerprint+`"}`); code != http.StatusAccepted {
		t.Fatalf("the admin's release: %d %v", code, out)
	}
	retry.Until(t, 20*time.Second, func() error {
		if n := keys(); n != 0 {
			return fmt.Errorf("%d desired-state keys after the release", n)
		}
		for _, s := range []running{a, b} {
			if _, out, _ := apiCall(t, s.info.HTTPURL, viewerToken, "GET", "/api/v1/orphans", ""); out["held"] != float64(0) || out["approved"] != float64(0) {
				return fmt.Errorf("after the release: %v", out)
			}
		}
		return nil
	})
}
