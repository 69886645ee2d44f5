package v1alpha1

import (
	"fmt"
	"time"
)

// Phases of a deployment on a device and of one resource.
const (
	PhasePending     = "Pending"
	PhaseProgressing = "Progressing"
	PhaseReady       = "Ready"
	PhaseFailed      = "Failed"
	PhaseConflict    = "Conflict"
	PhaseUnsupported = "Unsupported" // resources only: a kind this agent does not know
	PhaseInvalid     = "Invalid"     // resources only: the spec failed validation
)

// Inventory is what an agent reports about its machine.
type Inventory struct {
	Hostname     string `json:"hostname"`
	OS           string `json:"os"`
	Arch         string `json:"arch"`
	CPUs         int    `json:"cpus"`
	MemoryBytes  uint64 `json:"memoryBytes"`
	AgentVersion string `json:"agentVersion"`
}

// DeviceInfo is the value of device-info/<device>.
type DeviceInfo struct {
	V         int               `json:"v"`
	ID        string            `json:"id"`
	Labels    map[string]string `json:"labels,omitempty"`
	Inventory Inventory         `json:"inventory"`
	// Capabilities are what the agent's config allows beyond the defaults
	// (Capability*).
	Capabilities []string  `json:"capabilities,omitempty"`
	UpdatedAt    time.Time `json:"updatedAt"`
}

// Capabilities an agent may allow, each off unless its config allows it,
// and announces when it does (docs/adr/0015-agent-capabilities.md). The
// agent's config and its refusals use the same names.
const (
	CapabilityShellJob             = "shell_jobs"            // runs ShellJob resources
	CapabilityExec                 = "exec"                  // answers exec commands
	CapabilitySystemdUnitFiles     = "systemd_unit_files"    // installs SystemdUnit resources with a unit file
	CapabilitySpecialFileModes     = "special_file_modes"    // writes File resources with setuid, setgid or sticky bits
	CapabilityPrivilegedContainers = "privileged_containers" // runs privileged containers
	CapabilityHostNetwork          = "host_network"          // runs containers on the host network
)

// Can reports whether the device announced a capability (also under the
// name agents used before ADR 0015: "shelljob" for shell_jobs).
func (d DeviceInfo) Can(capability string) bool {
	for _, c := range d.Capabilities {
		if c == capability || (c == "shelljob" && capability == CapabilityShellJob) {
			return true
		}
	}
	return false
}

// Validate checks a device info value.
func (d *DeviceInfo) Validate() error {
	e := newErrs()
	if err := ValidateDeviceID(d.ID); err != nil {
		e.at("id").add("%v", err)
	}
	validateLabels(e.at("labels"), d.Labels)
	if len(d.Capabilities) > 16 {
		e.at("capabilities").add("at most 16, got %d", len(d.Capabilities))
	}
	for i, c := range d.Capabilities {
		if len(c) == 0 || len(c) > 32 {
			e.at(fmt.Sprintf("capabilities[%d]", i)).add("must be 1 to 32 characters")
		}
	}
	return e.err()
}

// DecodeDeviceInfo reads and validates a device-info value.
func DecodeDeviceInfo(data []byte) (DeviceInfo, error) {
	var d DeviceInfo
	if err := decodeStored(data, MaxDeviceInfoBytes, &d, func() int { return d.V }); err != nil {
		return d, err
	}
	return d, d.Validate()
}

// DesiredState is the value of desired-state/<device>.<deployment>: what the
// server rendered for one device.
type DesiredState struct {
	V          int    `json:"v"`
	Device     string `json:"device"`
	Deployment string `json:"deployment"`
	// UID is the deployment's (Metadata.UID): with Generation it names
	// this desired state across the deployment's deletion and re-creation.
	UID        string     `json:"uid,omitempty"`
	Generation int64      `json:"generation"`
	Resources  []Resource `json:"resources"`
	// Secrets are the versions of the secrets the resources use, by
	// name: a rotated secret changes them, and so rolls to the device.
	// Values are never here; the device reads them from the secrets
	// bucket, which lets it read only the secrets named here.
	Secrets map[string]string `json:"secrets,omitempty"`
}

// Validate checks the envelope and every resource. Resources of unknown kind
// are not errors here: the agent reports them as Unsupported.
func (d *DesiredState) Validate() error {
	e := newErrs()
	if err := ValidateDeviceID(d.Device); err != nil {
		e.at("device").add("%v", err)
	}
	if err := ValidateDeploymentName(d.Deployment); err != nil {
		e.at("deployment").add("%v", err)
	}
	if d.Generation < 1 {
		e.at("generation").add("%d: must be at least 1", d.Generation)
	}
	if len(d.Resources) > MaxResources {
		e.at("resources").add("%d resources is more than the limit of %d", len(d.Resources), MaxResources)
	}
	for _, name := range sortedKeys(d.Secrets) {
		if err := ValidateSecretName(name); err != nil {
			e.at("secrets").at(name).add("%v", err)
		}
		if v := d.Secrets[name]; len(v) > 64 {
			e.at("secrets").at(name).add("version of %d characters is longer than 64", len(v))
		}
	}
	ids := map[string]bool{}
	for i, r := range d.Resources {
		if err := validateLabel(r.ID); err != nil {
			e.at("resources").index(i).at("id").add("%v", err)
		} else if ids[r.ID] {
			e.at("resources").index(i).at("id").add("%q is used twice", r.ID)
		}
		ids[r.ID] = true
	}
	return e.err()
}

// DecodeDesiredState reads a desired-state value: size, encoding, nesting,
// format version and envelope are checked; resource specs are decoded one by
// one later (DecodeSpec), so one bad resource does not hide the others.
func DecodeDesiredState(data []byte) (DesiredState, error) {
	var d DesiredState
	if err := decodeStored(data, MaxDesiredStateBytes, &d, func() int { return d.V }); err != nil {
		return d, err
	}
	return d, d.Validate()
}

// ResourceStatus is the observed state of one resource.
type ResourceStatus struct {
	ID        string            `json:"id"`
	Kind      string            `json:"kind"`
	Phase     string            `json:"phase"`
	Message   string            `json:"message,omitempty"`
	Field     string            `json:"field,omitempty"` // the field at fault, when Invalid
	Since     time.Time         `json:"since"`
	NextRetry *time.Time        `json:"nextRetry,omitempty"`
	Details   map[string]string `json:"details,omitempty"`
	// Conditions are Ready, Progressing and Degraded, each True or False
	// with the reason and the time (the agent's clock) it last changed.
	Conditions []Condition `json:"conditions,omitempty"`
	// Restarts counts the restarts of the resource's container seen since
	// the agent started enforcing this generation; Repairs counts the
	// drift the agent corrected in that time (a file changed by hand, a
	// container stopped). A rollout's gate reads both: either growing
	// restarts a device's Ready time.
	Restarts int `json:"restarts,omitempty"`
	Repairs  int `json:"repairs,omitempty"`
}

// Condition types and statuses of a resource.
const (
	ConditionReady       = "Ready"
	ConditionProgressing = "Progressing"
	ConditionDegraded    = "Degraded"
	ConditionTrue        = "True"
	ConditionFalse       = "False"
)

// Condition is one observed aspect of a resource (seed 001).
type Condition struct {
	Type               string    `json:"type"`
	Status             string    `json:"status"`
	Reason             string    `json:"reason,omitempty"`
	Message            string    `json:"message,omitempty"`
	LastTransitionTime time.Time `json:"lastTransitionTime"`
}

// Condition returns the condition of type t (ok false: not reported).
func (r ResourceStatus) Condition(t string) (Condition, bool) {
	for _, c := range r.Conditions {
		if c.Type == t {
			return c, true
		}
	}
	return Condition{}, false
}

// IsReady reads the Ready condition, or the phase from an agent that
// reports no conditions.
func (r ResourceStatus) IsReady() bool {
	if c, ok := r.Condition(ConditionReady); ok {
		return c.Status == ConditionTrue
	}
	return r.Phase == PhaseReady
}

// DeviceState is the value of device-state/<device>.<deployment>.
type DeviceState struct {
	V                  int    `json:"v"`
	Device             string `json:"device"`
	Deployment         string `json:"deployment"`
	ObservedGeneration int64  `json:"observedGeneration"`
	// UID is the deployment UID of ObservedGeneration (DesiredState.UID):
	// a status of an earlier deployment of the same name says nothing
	// about this one.
	UID string `json:"uid,omitempty"`
	// RefusedGeneration is the latest generation the agent refused as
	// invalid while it keeps enforcing ObservedGeneration (0: none).
	RefusedGeneration int64            `json:"refusedGeneration,omitempty"`
	Phase             string           `json:"phase"`
	Message           string           `json:"message,omitempty"`
	Resources         []ResourceStatus `json:"resources,omitempty"`
}

// DecodeDeviceState reads a device-state value.
func DecodeDeviceState(data []byte) (DeviceState, error) {
	var d DeviceState
	if err := decodeStored(data, MaxDeviceStateBytes, &d, func() int { return d.V }); err != nil {
		return d, err
	}
	if err := ValidateDeviceID(d.Device); err != nil {
		return d, fmt.Errorf("device: %w", err)
	}
	return d, nil
}

// Heartbeat is the value of device-heartbeat/<device>: tiny on purpose.
// Boot changes when the agent restarts; Seq grows by one per heartbeat.
// Staleness is judged by the observer's own clock from when Seq last
// advanced, never by comparing timestamps of two machines.
type Heartbeat struct {
	V    int    `json:"v"`
	Boot string `json:"b"`
	Seq  uint64 `json:"s"`
}

// DecodeHeartbeat reads a heartbeat value.
func DecodeHeartbeat(data []byte) (Heartbeat, error) {
	var h Heartbeat
	err := decodeStored(data, MaxHeartbeatBytes, &h, func() int { return h.V })
	return h, err
}

// Presence is the value of device-presence/<relay>.<shard>: the devices
// whose heartbeats one relay answered lately (docs/adr/0020-presence.md).
// Beats maps a device to how many milliseconds before the record was
// written its last beat arrived; the observer places each beat on its own
// clock from when it received the record (or, the first time it reads a
// key, from the record's store timestamp), never by comparing two
// machines' clocks beat by beat.
type Presence struct {
	V     int              `json:"v"`
	Beats map[string]int64 `json:"beats"`
}

// DecodePresence reads a presence record.
func DecodePresence(data []byte) (Presence, error) {
	var p Presence
	if err := decodeStored(data, MaxPresenceBytes, &p, func() int { return p.V }); err != nil {
		return p, err
	}
	e := newErrs().at("beats")
	for _, id := range sortedKeys(p.Beats) {
		if err := ValidateDeviceID(id); err != nil {
			e.at(id).add("%v", err)
		} else if p.Beats[id] < 0 {
			e.at(id).add("%d: an age is not negative", p.Beats[id])
		}
	}
	return p, e.err()
}

// DeviceLabels is the value of device-labels/<device>: labels set from the
// control plane. A value sets the label, null removes it; they win over the
// labels the agent reports.
type DeviceLabels struct {
	V         int                `json:"v"`
	Overrides map[string]*string `json:"overrides"`
}

// DecodeDeviceLabels reads a device-labels value.
func DecodeDeviceLabels(data []byte) (DeviceLabels, error) {
	var d DeviceLabels
	if err := decodeStored(data, MaxDeviceInfoBytes, &d, func() int { return d.V }); err != nil {
		return d, err
	}
	e := newErrs().at("overrides")
	for _, k := range sortedKeys(d.Overrides) {
		if err := ValidateLabelKey(k); err != nil {
			e.at(k).add("%v", err)
		}
		if v := d.Overrides[k]; v != nil {
			if err := ValidateLabelValue(*v); err != nil {
				e.at(k).add("%v", err)
			}
		}
	}
	return d, e.err()
}
