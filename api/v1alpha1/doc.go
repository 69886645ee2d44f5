// Package v1alpha1 holds Harmony's wire types: what is stored in the KV
// buckets and sent over the API, with validation (errors name the field at
// fault), defaults, and canonical JSON (equal values give equal bytes). Every
// value stored in a bucket carries its format version in the field "v".
package v1alpha1

const (
	// APIVersion of deployment documents.
	APIVersion = "harmony/v1alpha1"
	// FormatVersion of stored values.
	FormatVersion = 1
)

// Size limits of values read from the network, checked before decoding.
const (
	MaxDeploymentBytes   = 4 << 20
	MaxDesiredStateBytes = 4 << 20
	MaxDeviceInfoBytes   = 64 << 10
	MaxDeviceStateBytes  = 256 << 10
	MaxHeartbeatBytes    = 100
	MaxPresenceBytes     = 1 << 20
	MaxResources         = 256
	MaxFileContentBytes  = 1 << 20
	MaxUnitContentBytes  = 256 << 10
	MaxNestingDepth      = 64
)
