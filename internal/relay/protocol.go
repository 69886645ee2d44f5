// Package relay carries a device's store operations through the control
// plane. A device identity has no JetStream API at all (no stream or
// consumer requests, no publishes into a bucket's subjects): it sends each
// read or write of its own keys as a request on its own relay subject,
// harmony.relay.<device>, and a harmony server checks the request against
// what that device may do (its own keys, the deployments it was given, a
// value that decodes, sizes, a rate) before doing it with its own
// connection. Every lever NATS and JetStream offer beyond one subject
// (rollup and TTL headers, request bodies naming other subjects, consumer
// configurations, shared stream limits) stays out of a device's reach
// (docs/adr/0013-device-isolation.md).
//
// The protocol is a NATS request: the operation, the bucket, the key and
// the revision in headers, the value as the body. The answer carries the
// revision, or an error code, in headers; a read's value as the body.
package relay

import (
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/harmony-fleet/harmony/internal/store"
)

// SubjectPrefix is where devices send their requests.
const SubjectPrefix = "harmony.relay"

// Subject is the one subject a device may send relay requests on.
func Subject(device string) string { return SubjectPrefix + "." + device }

// InboxPrefix is the inbox prefix a device's connection uses
// (nats.CustomInboxPrefix), and the only place the relay sends its answers
// to: the device id is one token, its dots turned into '_' (which no RFC
// 1123 name holds), so that no device's prefix is covered by another's
// ("a" and "a.b" would otherwise nest).
func InboxPrefix(device string) string {
	return "_INBOX_dev." + strings.ReplaceAll(device, ".", "_")
}

// QueueGroup spreads the requests over every server of a cluster (NATS
// prefers a subscriber on the server the device is connected to).
const QueueGroup = "harmony-relay"

// Request and answer headers.
const (
	HdrOp       = "Harmony-Relay-Op"
	HdrBucket   = "Harmony-Relay-Bucket"
	HdrKey      = "Harmony-Relay-Key"
	HdrRevision = "Harmony-Relay-Revision"
	HdrCreated  = "Harmony-Relay-Created"
	HdrError    = "Harmony-Relay-Error"
	HdrMessage  = "Harmony-Relay-Message"
	// HdrSpread, on open and list answers (what an agent asks after every
	// connection), is the window in milliseconds over which the devices
	// should spread their reconnections to this control plane: it grows
	// with the fleet (Options.Spread).
	HdrSpread = "Harmony-Relay-Reconnect-Spread"
)

// Operations.
const (
	OpOpen    = "open" // the bucket is there and the device may use it
	OpGet     = "get"
	OpCreate  = "create"
	OpUpdate  = "update"
	OpDelete  = "delete"
	OpList    = "list"
	OpHistory = "history"
	// OpBeat is a heartbeat on the device's own heartbeat key, recorded
	// by the relay in its presence records rather than written.
	OpBeat = "beat"
)

// Error codes, each one class of the store's taxonomy on the device's side.
const (
	CodeNotFound       = "not_found"
	CodeConflict       = "conflict"
	CodeOutcomeUnknown = "outcome_unknown"
	CodeUnavailable    = "unavailable"
	CodeInvalidKey     = "invalid_key"
	CodeTooLarge       = "too_large"
	CodeBucketNotFound = "bucket_not_found"
	CodeRefused        = "refused"
	CodeRateLimited    = "rate_limited"
)

// codeOf names the class of a store error.
func codeOf(err error) string {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return CodeNotFound
	case errors.Is(err, store.ErrConflict):
		return CodeConflict
	case errors.Is(err, store.ErrOutcomeUnknown):
		return CodeOutcomeUnknown
	case errors.Is(err, store.ErrInvalidKey):
		return CodeInvalidKey
	case errors.Is(err, store.ErrValueTooLarge):
		return CodeTooLarge
	case errors.Is(err, store.ErrBucketNotFound):
		return CodeBucketNotFound
	case errors.Is(err, store.ErrRefused):
		return CodeRefused
	default:
		return CodeUnavailable
	}
}

// classOf is the store error class of a code (ErrUnavailable for anything
// unknown: the call may be tried again later).
func classOf(code string) error {
	switch code {
	case CodeNotFound:
		return store.ErrNotFound
	case CodeConflict:
		return store.ErrConflict
	case CodeOutcomeUnknown:
		return store.ErrOutcomeUnknown
	case CodeInvalidKey:
		return store.ErrInvalidKey
	case CodeTooLarge:
		return store.ErrValueTooLarge
	case CodeBucketNotFound:
		return store.ErrBucketNotFound
	case CodeRefused:
		return store.ErrRefused
	default:
		return store.ErrUnavailable
	}
}

// listAnswer is the body of a list or history answer.
type listAnswer struct {
	Entries []wireEntry `json:"entries"`
}

type wireEntry struct {
	Key      string    `json:"key"`
	Value    []byte    `json:"value,omitempty"`
	Revision uint64    `json:"revision"`
	Created  time.Time `json:"created"`
	Deleted  bool      `json:"deleted,omitempty"`
	// Omitted: the answer had no room for the value; read it with a get.
	Omitted bool `json:"omitted,omitempty"`
}

// maxListValues bounds the values one list answer carries (the rest are
// named, and read one by one): an answer stays well under NATS's payload
// limit whatever the device's keys hold.
const maxListValues = 1 << 20

func encodeList(entries []store.Entry) []byte {
	out := listAnswer{Entries: make([]wireEntry, 0, len(entries))}
	room := maxListValues
	for _, e := range entries {
		w := wireEntry{Key: e.Key, Revision: e.Revision, Created: e.Created, Deleted: e.Op == store.OpDelete}
		if len(e.Value) <= room {
			w.Value = e.Value
			room -= len(e.Value)
		} else {
			w.Omitted = true
		}
		out.Entries = append(out.Entries, w)
	}
	b, _ := json.Marshal(out)
	return b
}

// deviceOf is the device a request subject names ("" when it names none).
func deviceOf(subject string) string {
	d, ok := strings.CutPrefix(subject, SubjectPrefix+".")
	if !ok {
		return ""
	}
	return d
}
