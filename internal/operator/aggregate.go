package operator

import (
	"sort"
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
)

// DeploymentStatus is the roll-up of one deployment over its devices.
type DeploymentStatus struct {
	Name       string    `json:"name"`
	Generation int64     `json:"generation"`
	Matched    int       `json:"matched"`
	Succeeded  int       `json:"succeeded"`
	Failed     int       `json:"failed"`
	Pending    int       `json:"pending"`
	Offline    int       `json:"offline"`
	LastError  string    `json:"lastError,omitempty"`
	Devices    []DevRoll `json:"devices,omitempty"`
}

// DevRoll is one device's line in a deployment.
type DevRoll struct {
	Device             string `json:"device"`
	Online             bool   `json:"online"`
	Phase              string `json:"phase"`
	ObservedGeneration int64  `json:"observedGeneration"`
	RefusedGeneration  int64  `json:"refusedGeneration,omitempty"`
	Message            string `json:"message,omitempty"`
}

// DeviceStatus is one device.
type DeviceStatus struct {
	ID               string            `json:"id"`
	Labels           map[string]string `json:"labels"`
	Inventory        v1.Inventory      `json:"inventory"`
	Online           bool              `json:"online"`
	HeartbeatAgeSecs float64           `json:"heartbeatAgeSeconds"`
	Deployments      map[string]string `json:"deployments"` // name -> phase
}

// Snapshot is everything aggregation needs, taken at one instant.
type Snapshot struct {
	Deployments map[string]v1.Deployment
	Devices     map[string]Device
	States      map[string]v1.DeviceState // by <device>.<deployment>
	// HeartbeatAge is, per device, how long ago its heartbeat last advanced
	// (absent: never seen).
	HeartbeatAge map[string]time.Duration
	Staleness    time.Duration
}

// Online says whether a device's heartbeat is fresh.
func (s Snapshot) Online(id string) bool {
	age, ok := s.HeartbeatAge[id]
	return ok && age <= s.Staleness
}

// Aggregate recomputes every deployment's counts from the snapshot. A device
// whose heartbeat is stale counts as offline, whatever its last status said.
func Aggregate(s Snapshot) map[string]DeploymentStatus {
	out := map[string]DeploymentStatus{}
	for name, d := range s.Deployments {
		ds := DeploymentStatus{Name: name, Generation: d.Metadata.Generation}
		for _, id := range sortedDeviceIDs(s.Devices) {
			if !d.Spec.Selector.Matches(s.Devices[id].Labels()) {
				continue
			}
			ds.Matched++
			roll := DevRoll{Device: id, Online: s.Online(id), Phase: v1.PhasePending}
			st, has := s.States[v1.DeviceKey(id, name)]
			has = has && st.UID == d.Metadata.UID // not an earlier deployment's
			if has {
				roll.Phase, roll.ObservedGeneration, roll.Message = st.Phase, st.ObservedGeneration, st.Message
			}
			switch {
			case !roll.Online:
				ds.Offline++
				roll.Phase = "Offline"
			case has && st.ObservedGeneration == d.Metadata.Generation && st.Phase == v1.PhaseReady:
				ds.Succeeded++
			case has && (st.Phase == v1.PhaseFailed || st.Phase == v1.PhaseConflict):
				ds.Failed++
				ds.LastError = id + ": " + st.Message
			default:
				ds.Pending++
			}
			ds.Devices = append(ds.Devices, roll)
		}
		out[name] = ds
	}
	return out
}

// Devices lists every device with its liveness and per-deployment phase.
func Devices(s Snapshot) []DeviceStatus {
	var out []DeviceStatus
	for _, id := range sortedDeviceIDs(s.Devices) {
		dev := s.Devices[id]
		ds := DeviceStatus{ID: id, Labels: dev.Labels(), Inventory: dev.Info.Inventory, Online: s.Online(id),
			HeartbeatAgeSecs: -1, Deployments: map[string]string{}}
		if age, ok := s.HeartbeatAge[id]; ok {
			ds.HeartbeatAgeSecs = age.Seconds()
		}
		for name, d := range s.Deployments {
			if !d.Spec.Selector.Matches(ds.Labels) {
				continue
			}
			phase := v1.PhasePending
			if st, ok := s.States[v1.DeviceKey(id, name)]; ok {
				phase = st.Phase
			}
			if !ds.Online {
				phase = "Offline"
			}
			ds.Deployments[name] = phase
		}
		out = append(out, ds)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
