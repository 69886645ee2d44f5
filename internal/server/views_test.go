package server

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/api/httpapi"
	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/operator"
	"github.com/harmony-fleet/harmony/internal/web"
)

// The dashboard names the operator's phases without importing it.
func TestDashboardPhasesAreTheOperators(t *testing.T) {
	if web.Recovering != string(operator.Recovering) || web.Converged != string(operator.Converged) {
		t.Fatalf("web has %q and %q, the operator %q and %q", web.Recovering, web.Converged, operator.Recovering, operator.Converged)
	}
}

func viewsFleet(n int) operator.Snapshot {
	s := operator.Snapshot{Deployments: map[string]v1.Deployment{}, Devices: map[string]operator.Device{},
		States: map[string]v1.DeviceState{}, HeartbeatAge: map[string]time.Duration{}, Staleness: 30 * time.Second}
	office := "office"
	for i := range n {
		id := fmt.Sprintf("dev-%03d", i)
		d := operator.Device{Info: v1.DeviceInfo{ID: id, Labels: map[string]string{"site": "home"}}}
		if i%3 == 0 {
			d.Overrides = map[string]*string{"site": &office} // the control plane's label wins
		}
		s.Devices[id] = d
		if i%7 != 6 { // every seventh never sent a heartbeat
			s.HeartbeatAge[id] = time.Duration(i%4) * 20 * time.Second // 60s: offline
		}
	}
	var d v1.Deployment
	d.Metadata.Name, d.Metadata.Generation = "web", 2
	d.Spec.Selector.MatchLabels = map[string]string{"site": "office"}
	s.Deployments["web"] = d
	for i := 0; i < n; i += 3 {
		id := fmt.Sprintf("dev-%03d", i)
		phase := []string{v1.PhaseReady, v1.PhaseFailed, v1.PhaseConflict, v1.PhaseProgressing}[i%4]
		s.States[v1.DeviceKey(id, "web")] = v1.DeviceState{Device: id, Deployment: "web", ObservedGeneration: 2, Phase: phase, Message: "m-" + id}
	}
	return s
}

// The device list's pages, put together, are the API's device list: the
// same devices, in the same order, shown the same way.
func TestDevicePagesAreTheAPIsList(t *testing.T) {
	s := viewsFleet(100)
	for _, selector := range []string{"", "site=office", "site=home", "site=nowhere"} {
		sel, err := v1.ParseSelector(selector)
		if err != nil {
			t.Fatal(err)
		}
		api := devicesOf(s, matchingDevices(s, sel, nil))
		// What the API answered when it worked every device out in full.
		full := []httpapi.Device{}
		for _, d := range operator.Devices(s) {
			if sel.Matches(d.Labels) {
				full = append(full, httpapi.Device(d))
			}
		}
		if !reflect.DeepEqual(api, full) {
			t.Fatalf("%q: the selected devices %v, all devices filtered %v", selector, api, full)
		}
		for _, state := range []string{"", web.StateOnline, web.StateOffline} {
			var want []httpapi.Device
			for _, d := range api {
				if state == "" || d.Online == (state == web.StateOnline) {
					want = append(want, d)
				}
			}
			for _, size := range []int{1, 7, 50, 1000} {
				var got []httpapi.Device
				for from := 0; ; from += size {
					p := devicePage(s, web.DeviceQuery{Selector: sel, State: state, From: from, Limit: size})
					if p.Total != len(s.Devices) || p.Matched != len(want) {
						t.Fatalf("%q %q: total %d matched %d, want %d and %d", selector, state, p.Total, p.Matched, len(s.Devices), len(want))
					}
					if len(p.Items) > size {
						t.Fatalf("%q %q: %d items on a page of %d", selector, state, len(p.Items), size)
					}
					got = append(got, p.Items...)
					if from >= p.Matched {
						break
					}
				}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("%q %q, pages of %d: got %v\nwant %v", selector, state, size, got, want)
				}
			}
		}
	}
	if p := devicePage(s, web.DeviceQuery{From: -5, Limit: 3}); len(p.Items) != 3 || p.Items[0].ID != "dev-000" {
		t.Errorf("a negative From: %v", p.Items)
	}
}

// The overview's and the deployment list's counts are the API's.
func TestSummaryIsTheAPIsCounts(t *testing.T) {
	s := viewsFleet(100)
	roll := operator.RollupOf(s)
	sum := summary(roll)
	if sum.Fleet != fleetCounts(roll) || sum.Fleet.Devices != 100 || sum.Fleet.Online+sum.Fleet.Offline != 100 {
		t.Errorf("fleet counts %+v, roll-up %d online %d offline", sum.Fleet, roll.Online, roll.Offline)
	}
	agg := operator.Aggregate(s)
	want := deploymentStatus(agg["web"])
	want.Devices = nil
	if len(sum.Deployments) != 1 || !reflect.DeepEqual(sum.Deployments[0], want) {
		t.Errorf("deployments %+v, want [%+v]", sum.Deployments, want)
	}
	if !slices.Equal(sum.Offline, roll.OfflineIDs) || !slices.Equal(sum.Conflicts, roll.Conflicts) || len(sum.Conflicts) == 0 {
		t.Errorf("offline %v conflicts %v; roll-up %v %v", sum.Offline, sum.Conflicts, roll.OfflineIDs, roll.Conflicts)
	}
}
