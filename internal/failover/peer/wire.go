// Package peer is the agent-to-agent transport of the failover failsafe:
// when the store (NATS) does not answer, a primary may keep serving while
// it holds, from every node that could be promoted in its place, a direct
// and bounded promise: "I will not promote before my monotonic clock has
// advanced by Lease from when I answered". This package carries those
// requests; what to grant, and what to do with a grant, is the failover
// loop's business (ServerConfig.Handle on one side, Client.Ask on the other).
//
// Security. Every agent listens with HTTPS (TLS 1.3 only, mutual) under
// the identity it already has on the mesh: its device nkey, an ed25519
// key, presented in a self-signed certificate. There is no CA: the server
// accepts a client only if its key is one of a current member
// (ServerConfig.Trusted), and the client accepts a server only if its key
// is exactly the one it expects for that peer (pinning). Members learn
// each other's keys and addresses from their heartbeats, which only the
// members and the control plane can write. Nothing is served before the
// handshake succeeds, so the port answers nothing to anyone else.
//
// Protocol (version 1; the version is in the path and in every body):
//
//	POST /v1/failover/promise   Request -> 200 Response, or an ErrorBody
//	GET  /v1/failover/ping      -> 200 Pong: an authenticated liveness check
//
// Errors are JSON ErrorBody values with a stable Code; the client returns
// them as *StatusError.
package peer

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Version is the protocol version: of the path (/v1/) and of the bodies (v).
const Version = 1

// Paths of the protocol.
const (
	PathPromise = "/v1/failover/promise"
	PathPing    = "/v1/failover/ping"
)

// MaxBody bounds request and response bodies.
const MaxBody = 4 << 10

// Request asks a peer for a promise not to promote itself for a while.
type Request struct {
	V int `json:"v"`
	// Cluster is the failover cluster: the server refuses another one.
	Cluster string `json:"cluster"`
	// From is the asking node: it must be the node of the client's key.
	From string `json:"from"`
	// Epoch is the cluster epoch the asker serves as primary.
	Epoch uint64 `json:"epoch"`
}

// Response is the peer's answer. A grant promises that the peer will not
// promote itself before its monotonic clock has advanced by Lease from the
// moment it answered; the asker, which cannot know that moment, must count
// Lease from before it sent the request.
type Response struct {
	Granted bool
	// Lease is a whole number of milliseconds on the wire (rounded down:
	// a shorter promise is the safe side). Zero when not granted.
	Lease  time.Duration
	Reason string
}

// responseWire is the JSON form of Response.
type responseWire struct {
	V       int    `json:"v"`
	Granted bool   `json:"granted"`
	LeaseMS int64  `json:"lease_ms"`
	Reason  string `json:"reason,omitempty"`
}

// MarshalJSON writes the versioned wire form.
func (r Response) MarshalJSON() ([]byte, error) {
	return json.Marshal(responseWire{V: Version, Granted: r.Granted, LeaseMS: r.Lease.Milliseconds(), Reason: r.Reason})
}

// UnmarshalJSON reads the wire form and checks it: the version, and a
// lease that is not negative and is set exactly when granted.
func (r *Response) UnmarshalJSON(b []byte) error {
	var w responseWire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	if w.V != Version {
		return fmt.Errorf("%w: response version %d; this agent reads %d", ErrBadResponse, w.V, Version)
	}
	if w.LeaseMS < 0 || w.LeaseMS > int64(maxLease/time.Millisecond) || (w.LeaseMS > 0) != w.Granted {
		return fmt.Errorf("%w: granted %t with a lease of %d ms", ErrBadResponse, w.Granted, w.LeaseMS)
	}
	*r = Response{Granted: w.Granted, Lease: time.Duration(w.LeaseMS) * time.Millisecond, Reason: w.Reason}
	return nil
}

// maxLease bounds a lease a client accepts: a promise is meant to cover a
// few failover timeouts, not hours.
const maxLease = time.Hour

// Pong answers a ping.
type Pong struct {
	V       int    `json:"v"`
	Cluster string `json:"cluster"`
}

// ErrorBody is the body of every non-200 answer.
type ErrorBody struct {
	V      int    `json:"v"`
	Code   Code   `json:"code"`
	Reason string `json:"reason"`
}

// Code is a stable error code of the protocol.
type Code string

const (
	CodeNotFound         Code = "not_found"          // 404: no such path
	CodeMethodNotAllowed Code = "method_not_allowed" // 405
	CodeUnsupportedType  Code = "unsupported_type"   // 415: not application/json
	CodeTooLarge         Code = "too_large"          // 413: body over MaxBody
	CodeBadRequest       Code = "bad_request"        // 400: not a Request
	CodeBadVersion       Code = "bad_version"        // 400: another protocol version
	CodeUntrusted        Code = "untrusted"          // 403: the client key is not a member's (any more)
	CodeWrongFrom        Code = "wrong_from"         // 403: From is not the client key's node
	CodeWrongCluster     Code = "wrong_cluster"      // 409: another cluster
)

// StatusError is a peer's refusal of a request (not a refused promise,
// which is a Response with Granted false).
type StatusError struct {
	Status int // HTTP status
	Code   Code
	Reason string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("peer: refused the request (%d %s): %s", e.Status, e.Code, e.Reason)
}

// Errors of the client. Every error of Ask means "no promise".
var (
	// ErrBadResponse: the peer's answer is not a valid Response.
	ErrBadResponse = errors.New("peer: bad response")
	// ErrClosed: the client was closed.
	ErrClosed = errors.New("peer: client closed")
	// ErrUntrusted: a client key that is not a member's (server side, in
	// the handshake).
	ErrUntrusted = errors.New("peer: untrusted client key")
)

// KeyError is a peer that presented another key than the one pinned.
type KeyError struct {
	Want, Got string
}

func (e *KeyError) Error() string {
	return fmt.Sprintf("peer: server presented key %s, expected %s", e.Got, e.Want)
}
