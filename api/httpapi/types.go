package httpapi

import (
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
)

// Status is GET /api/v1/status.
type Status struct {
	// Operator is the operator's phase: Recovering or Converged (the
	// dashboard also shows Starting, before the store answered).
	Operator string `json:"operator"`
	// Progress says why the operator has not converged yet.
	Progress string      `json:"progress"`
	Fleet    FleetCounts `json:"fleet"`
}

// FleetCounts is the fleet's line of GET /api/v1/status: the devices the
// operator knows, online and offline, from its running roll-up.
type FleetCounts struct {
	Devices int `json:"devices"`
	Online  int `json:"online"`
	Offline int `json:"offline"`
}

// List is the body of the list answers (GET /api/v1/deployments and
// /api/v1/devices): the operator's phase, the items and, while the store
// does not answer, that the view is stale and since when.
type List[T any] struct {
	Operator string `json:"operator"`
	Items    []T    `json:"items"`
	Stale    bool   `json:"stale,omitempty"`
	// StaleSince is RFC 3339, UTC.
	StaleSince string `json:"stale_since,omitempty"`
}

// DeploymentList is GET /api/v1/deployments.
type DeploymentList = List[DeploymentView]

// DeviceList is GET /api/v1/devices.
type DeviceList = List[Device]

// DeploymentView is a deployment with its roll-up: an item of
// GET /api/v1/deployments, and GET /api/v1/deployments/{name}.
type DeploymentView struct {
	Deployment v1.Deployment    `json:"deployment"`
	Status     DeploymentStatus `json:"status"`
}

// DeploymentStatus is a deployment's roll-up over its matched devices.
type DeploymentStatus struct {
	Name       string `json:"name"`
	Generation int64  `json:"generation"`
	Matched    int    `json:"matched"`
	// Succeeded devices are Ready at Generation; Failed ones report a
	// failure or a conflict, at whatever generation they observed (see
	// DeploymentDevice.ObservedGeneration).
	Succeeded int    `json:"succeeded"`
	Failed    int    `json:"failed"`
	Pending   int    `json:"pending"`
	Offline   int    `json:"offline"`
	LastError string `json:"lastError,omitempty"`
	// Devices are the matched devices' lines, sorted by device id (only
	// in GET /api/v1/deployments/{name}).
	Devices []DeploymentDevice `json:"devices,omitempty"`
}

// DeploymentDevice is one matched device's line in a deployment.
type DeploymentDevice struct {
	Device string `json:"device"`
	Online bool   `json:"online"`
	// Phase is the device's last reported phase (Pending before it
	// reported; Offline while its heartbeat is stale).
	Phase string `json:"phase"`
	// ObservedGeneration is the deployment generation the phase is for:
	// a failure at an older generation says nothing about the current one.
	ObservedGeneration int64 `json:"observedGeneration"`
	// RefusedGeneration is the latest generation the device refused as
	// invalid (0: none refused). A refused generation is never observed,
	// so its failure is for RefusedGeneration, not ObservedGeneration.
	RefusedGeneration int64  `json:"refusedGeneration,omitempty"`
	Message           string `json:"message,omitempty"`
}

// Phase of a DeploymentDevice whose heartbeat is stale.
const PhaseOffline = "Offline"

// Device is one device: an item of GET /api/v1/devices.
type Device struct {
	ID        string            `json:"id"`
	Labels    map[string]string `json:"labels"`
	Inventory v1.Inventory      `json:"inventory"`
	Online    bool              `json:"online"`
	// HeartbeatAgeSecs is how long ago the heartbeat last advanced; -1
	// when it never did.
	HeartbeatAgeSecs float64 `json:"heartbeatAgeSeconds"`
	// Deployments maps each matching deployment to the device's phase.
	Deployments map[string]string `json:"deployments"`
}

// DeviceView is GET /api/v1/devices/{id}: the device with its status for
// every deployment that exists and has one.
type DeviceView struct {
	Device
	States []v1.DeviceState `json:"states"`
}

// Results of an apply, a delete and a release.
const (
	ResultCreated    = "created"
	ResultConfigured = "configured"
	ResultUnchanged  = "unchanged"
	ResultDeleted    = "deleted"
	ResultReleased   = "released"
)

// ApplyResult says what happened to one applied document.
type ApplyResult struct {
	Name       string `json:"name"`
	Generation int64  `json:"generation"`
	// Result is created, configured or unchanged.
	Result string `json:"result"`
}

// DeploymentHistory is the answer of GET /api/v1/deployments/{name}/history:
// the generations of the deployment the store still keeps (the last few
// changes), newest first. Only generations of the current deployment (its
// UID) are listed: one deleted and created again starts a new history.
type DeploymentHistory struct {
	Name        string          `json:"name"`
	UID         string          `json:"uid,omitempty"`
	Generation  int64           `json:"generation"` // the current one
	Generations []HistoryRecord `json:"generations"`
}

// HistoryRecord is one kept generation.
type HistoryRecord struct {
	Generation int64     `json:"generation"`
	SpecHash   string    `json:"specHash"`
	Stored     time.Time `json:"stored"`
	Current    bool      `json:"current,omitempty"`
}

// UndoRequest is the body of POST /api/v1/deployments/{name}/undo: the
// kept generation whose spec becomes the deployment's again, as a new
// generation (0: the newest kept generation before the current one whose
// spec differs from it). The answer is an ApplyResult.
type UndoRequest struct {
	ToGeneration int64 `json:"toGeneration,omitempty"`
}

// ApplyResults is the answer of POST /api/v1/deployments (a YAML or JSON
// stream of deployments), one result per document.
type ApplyResults struct {
	Items []ApplyResult `json:"items"`
}

// DeleteResult is the answer of DELETE /api/v1/deployments/{name}.
type DeleteResult struct {
	Name   string `json:"name"`
	Result string `json:"result"` // deleted
}

// LabelPatch is the body of PATCH /api/v1/devices/{id}/labels: it sets and
// removes control-plane labels of a device that has reported.
type LabelPatch struct {
	Set    map[string]string `json:"set"`
	Remove []string          `json:"remove"`
}

// DeviceLabels is the answer of PATCH /api/v1/devices/{id}/labels: the
// device's control-plane labels after the patch (nil: removed whatever
// the agent reports).
type DeviceLabels struct {
	Device    string             `json:"device"`
	Overrides map[string]*string `json:"overrides"`
}

// LogsRequest is the query of GET /api/v1/devices/{id}/logs.
type LogsRequest struct {
	Resource string // required
	// Deployment, when several deployments have a resource of that id.
	Deployment string
	Lines      int // 0: the device's default
}

// ExecRequest is the body of POST /api/v1/devices/{id}/exec. Both
// commands answer with the device's v1alpha1.CommandReply; a reply that
// is not OK comes as an error (device_error, or not_found for an unknown
// resource) carrying the reply.
type ExecRequest struct {
	Command []string `json:"command"`
}

// OrphanHold is GET /api/v1/orphans: the removals of orphaned desired
// state the orphan guard holds back (docs/adr/0014-orphan-collection-guard.md).
type OrphanHold struct {
	// Held is the number of desired-state keys whose removal is held.
	Held int `json:"held"`
	// Causes counts them by cause: device-gone, deployment-gone, no-match.
	Causes map[string]int `json:"causes"`
	// Since is when the hold began (nil when nothing is held).
	Since *time.Time `json:"since,omitempty"`
	// Examples are a few of the held keys, sorted.
	Examples []string `json:"examples"`
	// Fingerprint names the hold; a release names it too.
	Fingerprint string `json:"fingerprint,omitempty"`
	// Approved keys were released and wait for the collecting server.
	Approved int `json:"approved"`
	// Bound is the number of guarded removals held at the last pass.
	Bound int `json:"bound"`
}

// The causes of a held removal, in the order they are shown.
const (
	CauseDeviceGone     = "device-gone"
	CauseDeploymentGone = "deployment-gone"
	CauseNoMatch        = "no-match"
)

// Causes lists the causes of a held removal in a fixed order.
func Causes() []string { return []string{CauseDeviceGone, CauseDeploymentGone, CauseNoMatch} }

// OrphanRelease is the optional body of POST /api/v1/orphans/release: the
// fingerprint of the hold the caller looked at (empty: whatever is held).
type OrphanRelease struct {
	Fingerprint string `json:"fingerprint"`
}

// OrphanReleaseResult is the answer (202) of POST /api/v1/orphans/release.
type OrphanReleaseResult struct {
	Result string     `json:"result"` // released
	Hold   OrphanHold `json:"hold"`
}

// TokenRequest is the body of POST /api/v1/enrollment-tokens.
type TokenRequest struct {
	// Expires is a Go duration from 1m to 720h; 1h when empty.
	Expires string `json:"expires,omitempty"`
	// Device, when set, is the only device id the token may enroll.
	Device string `json:"device,omitempty"`
	// Cluster, when set, also grants that failover cluster's bucket.
	Cluster string `json:"cluster,omitempty"`
}

// EnrollmentToken is the answer (201) of POST /api/v1/enrollment-tokens:
// the one-time token, shown once and never stored.
type EnrollmentToken struct {
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
	Device  string    `json:"device,omitempty"`
	Cluster string    `json:"cluster,omitempty"`
}

// EnrollRequest is the body of POST /api/v1/enroll (no bearer token: a
// device enrolls with an enrollment token, or waits for an approval).
type EnrollRequest struct {
	Device    string `json:"device"`
	PublicKey string `json:"publicKey"` // an nkey user public key (U...)
	// Token is a one-time enrollment token; without it the request waits
	// for an admin's approval.
	Token   string `json:"token,omitempty"`
	Cluster string `json:"cluster,omitempty"`
}

// Enrollment statuses.
const (
	EnrollEnrolled = "enrolled"
	EnrollPending  = "pending"
	EnrollUnknown  = "unknown"
)

// EnrollStatus is the answer of POST /api/v1/enroll (200 enrolled, 202
// pending) and of GET /api/v1/enroll/{id}?publicKey=KEY.
type EnrollStatus struct {
	Device string `json:"device"`
	// Status: enrolled (the identity works now), pending (waiting for
	// an approval) or unknown (refused, replaced or expired).
	Status string `json:"status"`
	// Fingerprint of the key the request waits with, and when it stops
	// waiting; only for pending.
	Fingerprint string    `json:"fingerprint,omitempty"`
	Expires     time.Time `json:"expires,omitzero"`
}

// Identities is GET /api/v1/identities.
type Identities struct {
	Identities []Identity       `json:"identities"`
	Pending    []PendingRequest `json:"pending"`
}

// Identity is an enrolled device.
type Identity struct {
	Device    string    `json:"device"`
	PublicKey string    `json:"publicKey"`
	Cluster   string    `json:"cluster,omitempty"`
	Enrolled  time.Time `json:"enrolled"`
	// Via is token or approval: how the identity was granted.
	Via         string `json:"via"`
	Fingerprint string `json:"fingerprint"`
}

// PendingRequest is an enrollment request waiting for approval: what an
// admin compares with what the device printed before approving it.
type PendingRequest struct {
	Device      string    `json:"device"`
	PublicKey   string    `json:"publicKey"`
	Cluster     string    `json:"cluster,omitempty"`
	Requested   time.Time `json:"requested"`
	From        string    `json:"from"` // the requester's network address
	Fingerprint string    `json:"fingerprint"`
	Expires     time.Time `json:"expires"`
}

// ApproveRequest is the optional body of POST /api/v1/devices/{id}/approve.
type ApproveRequest struct {
	// Replace lets the approval replace the key of an enrolled device.
	Replace bool `json:"replace,omitempty"`
	// Fingerprint, when set, is the key fingerprint the admin read off the
	// device: a request with another key is refused.
	Fingerprint string `json:"fingerprint,omitempty"`
}

// Approval is the answer of POST /api/v1/devices/{id}/approve: the
// identity granted, where the request came from and the key it replaced.
type Approval struct {
	Identity
	From      string    `json:"from"`
	Requested time.Time `json:"requested"`
	// Replaced is the fingerprint of the key the approval replaced.
	Replaced string `json:"replaced,omitempty"`
}

// ErrorBody is the body of every error answer.
type ErrorBody struct {
	Error *Error `json:"error"`
}

// SecretWrite is the body of POST /api/v1/secrets (Name required) and of
// PUT /api/v1/secrets/{name} (Name empty or the path's): the whole set of
// keys and values. Values travel only in this direction: no answer of the
// API carries one.
type SecretWrite struct {
	Name string            `json:"name,omitempty"`
	Data map[string]string `json:"data"`
}

// SecretInfo is what the API shows of a secret: never a value.
type SecretInfo struct {
	Name string   `json:"name"`
	Keys []string `json:"keys"`
	// Version is a keyed hash of the values (it changes with any of
	// them and tells nothing about them).
	Version   string    `json:"version"`
	UpdatedAt time.Time `json:"updatedAt"`
	// UsedBy lists the deployments whose resources take values from it.
	UsedBy []string `json:"usedBy"`
	// Result is created, replaced or deleted in a write's answer.
	Result string `json:"result,omitempty"`
}

// SecretList is GET /api/v1/secrets.
type SecretList struct {
	Items []SecretInfo `json:"items"`
}

// Results of secret writes.
const (
	ResultReplaced = "replaced"
)
