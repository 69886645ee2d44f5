package operator

import (
	"sort"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
)

// Device is what the operator knows of one device.
type Device struct {
	Info v1.DeviceInfo
	// Overrides are labels set from the control plane: a value sets the
	// label, nil removes it. They win over what the agent reports.
	Overrides map[string]*string
}

// Labels are the device's effective labels: the agent's, then the control
// plane's overrides on top.
func (d Device) Labels() map[string]string {
	out := map[string]string{}
	for k, v := range d.Info.Labels {
		out[k] = v
	}
	for k, v := range d.Overrides {
		if v == nil {
			delete(out, k)
		} else {
			out[k] = *v
		}
	}
	return out
}

// Render returns, for every (device, deployment) match, the desired-state
// key and its canonical bytes. It is pure: the same deployments and devices
// always give the same bytes, so several operators render identically.
func Render(deployments map[string]v1.Deployment, devices map[string]Device) (map[string][]byte, error) {
	out := map[string][]byte{}
	names := make([]string, 0, len(deployments))
	for n := range deployments {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, id := range sortedDeviceIDs(devices) {
		labels := devices[id].Labels()
		for _, n := range names {
			d := deployments[n]
			if !d.Spec.Selector.Matches(labels) {
				continue
			}
			b, err := desiredBytes(id, n, d)
			if err != nil {
				return nil, err
			}
			out[v1.DeviceKey(id, n)] = b
		}
	}
	return out, nil
}

func sortedDeviceIDs(devices map[string]Device) []string {
	ids := make([]string, 0, len(devices))
	for id := range devices {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// desiredBytes is the canonical desired-state value of one match.
func desiredBytes(id, name string, d v1.Deployment) ([]byte, error) {
	resources := d.Spec.Resources
	if resources == nil {
		resources = []v1.Resource{}
	}
	return v1.Marshal(v1.DesiredState{V: v1.FormatVersion, Device: id, Deployment: name,
		Generation: d.Metadata.Generation, Resources: resources})
}
