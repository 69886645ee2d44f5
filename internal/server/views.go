package server

import (
	"sort"

	"github.com/harmony-fleet/harmony/api/httpapi"
	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/operator"
)

// The operator's read model as the HTTP API shows it (api/httpapi). The
// API's handlers (api.go, collection.go) and the dashboard's Backend
// (dashboard.go) answer through these functions only, so that a page and
// the API cannot show a deployment, a device or the fleet differently.
// They convert what they are given and read nothing else: the caller picks
// the narrow read (Rollup, Deployment, Device) or the snapshot.

// fleetCounts is the fleet's line of the status answer, from the running
// roll-up.
func fleetCounts(r operator.Rollup) httpapi.FleetCounts {
	return httpapi.FleetCounts{Devices: r.Online + r.Offline, Online: r.Online, Offline: r.Offline}
}

// deploymentStatus is a deployment's roll-up as the API shows it (with the
// devices' lines when the roll-up has them: a running count has none).
func deploymentStatus(s operator.DeploymentStatus) httpapi.DeploymentStatus {
	out := httpapi.DeploymentStatus{Name: s.Name, Generation: s.Generation, Matched: s.Matched, Succeeded: s.Succeeded,
		Failed: s.Failed, Pending: s.Pending, Offline: s.Offline, LastError: s.LastError}
	if s.Devices != nil {
		out.Devices = make([]httpapi.DeploymentDevice, len(s.Devices))
		for i, d := range s.Devices {
			out.Devices[i] = httpapi.DeploymentDevice(d)
		}
	}
	return out
}

// deploymentView is a deployment with its roll-up.
func deploymentView(d v1.Deployment, s operator.DeploymentStatus) httpapi.DeploymentView {
	return httpapi.DeploymentView{Deployment: d, Status: deploymentStatus(s)}
}

// deploymentCounts is every deployment's running counts (no device lines),
// sorted by name.
func deploymentCounts(r operator.Rollup) []httpapi.DeploymentStatus {
	out := make([]httpapi.DeploymentStatus, 0, len(r.Deployments))
	for _, name := range sortedNames(r.Deployments) {
		out = append(out, deploymentStatus(r.Deployments[name]))
	}
	return out
}

// deviceLine is one device's line of the device list.
func deviceLine(s operator.DeviceStatus) httpapi.Device { return httpapi.Device(s) }

// deviceView is one device with its status for every deployment.
func deviceView(d operator.DeviceDetail) httpapi.DeviceView {
	view := httpapi.DeviceView{Device: deviceLine(d.Status), States: d.States}
	if view.States == nil {
		view.States = []v1.DeviceState{}
	}
	return view
}

// matchingDevices is the ids of the snapshot's devices that sel selects
// and keep (when not nil) accepts, sorted. It looks at labels only, so
// that a page works out in full only the devices it shows (devicesOf).
func matchingDevices(s operator.Snapshot, sel v1.Selector, keep func(id string) bool) []string {
	var ids []string
	for id, d := range s.Devices {
		if sel.Matches(d.Labels()) && (keep == nil || keep(id)) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// devicesOf is the lines of the snapshot's devices ids (those it holds),
// sorted by id, never nil.
func devicesOf(s operator.Snapshot, ids []string) []httpapi.Device {
	sub := s
	sub.Devices = make(map[string]operator.Device, len(ids))
	for _, id := range ids {
		if d, ok := s.Devices[id]; ok {
			sub.Devices[id] = d
		}
	}
	out := make([]httpapi.Device, 0, len(sub.Devices))
	for _, d := range operator.Devices(sub) {
		out = append(out, deviceLine(d))
	}
	return out
}

// orphanHold is the orphan guard's hold as the API shows it.
func orphanHold(h operator.OrphanHold) httpapi.OrphanHold {
	out := httpapi.OrphanHold{Held: h.Held, Causes: make(map[string]int, len(h.Causes)), Since: h.Since,
		Examples: h.Examples, Fingerprint: h.Fingerprint, Approved: h.Approved, Bound: h.Bound}
	for c, n := range h.Causes {
		out.Causes[string(c)] = n
	}
	return out
}
