package identity

import "time"

// The enrollment API's request and answer bodies (internal/server serves
// them, the CLI sends and reads them). They live here, beside the records
// they carry, so that the agent-only build's CLI (harmony enroll) does not
// link the server.

// TokenRequest is the body of POST /api/v1/enrollment-tokens.
type TokenRequest struct {
	// Expires is a Go duration ("1h"); 1h when empty.
	Expires string `json:"expires,omitempty"`
	Device  string `json:"device,omitempty"`
	Cluster string `json:"cluster,omitempty"`
}

// TokenAnswer carries a new enrollment token: shown once, never stored.
type TokenAnswer struct {
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
	Device  string    `json:"device,omitempty"`
	Cluster string    `json:"cluster,omitempty"`
}

// EnrollAnswer says how an enrollment request ended.
type EnrollAnswer struct {
	Device string `json:"device"`
	// Status: "enrolled" (the identity works now), "pending" (waiting for
	// `harmony device approve`) or "unknown".
	Status string `json:"status"`
	// Fingerprint of the key the request waits with (Fingerprint)
	// and when it stops waiting; only for "pending".
	Fingerprint string    `json:"fingerprint,omitempty"`
	Expires     time.Time `json:"expires,omitzero"`
}

// Listed is an enrolled device in GET /api/v1/identities.
type Listed struct {
	Record
	Fingerprint string `json:"fingerprint"`
}

// WaitingRequest is an enrollment request in GET /api/v1/identities: what
// an admin compares with what the device printed before approving it.
type WaitingRequest struct {
	Pending
	Fingerprint string    `json:"fingerprint"`
	Expires     time.Time `json:"expires"`
}

// IdentitiesAnswer is GET /api/v1/identities.
type IdentitiesAnswer struct {
	Identities []Listed         `json:"identities"`
	Pending    []WaitingRequest `json:"pending"`
}

// ApproveAnswer is the identity an approval granted, with where the
// request came from and the key it replaced, if any.
type ApproveAnswer struct {
	Record
	Fingerprint string    `json:"fingerprint"`
	From        string    `json:"from"` // the requester's network address
	Requested   time.Time `json:"requested"`
	// Replaced is the fingerprint of the key the approval replaced.
	Replaced string `json:"replaced,omitempty"`
}
