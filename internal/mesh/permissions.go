package mesh

import (
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
)

// FleetBuckets names the buckets a device's agent uses (config.Buckets has
// the defaults).
type FleetBuckets struct {
	DesiredState    string // read-only for the device: <device>.<deployment>
	DeviceInfo      string // written by the device: <device>
	DeviceState     string // written by the device: <device>.<deployment>
	DeviceHeartbeat string // written by the device: <device>
}

// CommandReplyWindow is how long a device may take to answer a command
// request (exec runs up to v1.ExecTimeoutLimit seconds).
const CommandReplyWindow = time.Minute

// DesiredSubjectPrefix is where the desired-state bucket republishes its
// writes: <prefix>.<device>.<deployment>.
func DesiredSubjectPrefix(bucket string) string { return "harmony.kv." + bucket }

// DeviceInboxPrefix is the inbox prefix a device's connection must use
// (nats.CustomInboxPrefix): every reply to it, and every watch delivery,
// comes to subjects under it. The device id is one token, its dots turned
// into '_' (which no RFC 1123 name holds), so that no device's prefix is
// covered by another's ("a" and "a.b" would otherwise nest).
func DeviceInboxPrefix(device string) string {
	return "_INBOX_dev." + strings.ReplaceAll(device, ".", "_")
}

// DevicePermissions are the NATS permissions of one device's identity: it
// may read its own desired state, write its own device-info, device-state
// and heartbeat keys, answer requests on its own command subject, and
// receive on its own inbox prefix. Everything else is denied by omission:
// other devices' keys, listing or watching beyond its keys, reading a
// stream by sequence (STREAM.MSG.GET, DIRECT.GET without a subject),
// stream and consumer administration, other command subjects and inboxes.
//
// The agent must read its keys with the subject-carrying direct get
// ($JS.API.DIRECT.GET.<stream>.<subject>; the buckets allow direct gets):
// the leader's STREAM.MSG.GET names the subject in its body, where no
// permission can see it, so it is not granted.
//
// Known limits, which subject permissions cannot express:
//   - nats-server lets a client publish a subject holding a literal '>'
//     token, and the '*' ending the <device>.* entries below matches it:
//     device "a" can direct-get or watch "a.>", which covers the keys of
//     a device "a.b". No device id given an identity may be a dot-prefix
//     of another's.
//   - STREAM.INFO (needed to open a bucket) takes a subjects_filter in its
//     body and then lists every key of the bucket with its message count:
//     names of other devices and deployments leak, never values.
func DevicePermissions(device string, b FleetBuckets) *server.Permissions {
	kv := func(bucket, key string) string { return "$KV." + bucket + "." + key }
	directGet := func(bucket, key string) string {
		return "$JS.API.DIRECT.GET.KV_" + bucket + "." + kv(bucket, key)
	}
	own := device            // device-info and heartbeat key
	ownDeps := device + ".*" // desired-state and device-state keys: one deployment label after the id

	pub := []string{
		// Opening a bucket (nats.go's KeyValue) reads its stream's info.
		"$JS.API.STREAM.INFO.KV_" + b.DesiredState,
		"$JS.API.STREAM.INFO.KV_" + b.DeviceInfo,
		"$JS.API.STREAM.INFO.KV_" + b.DeviceState,
		"$JS.API.STREAM.INFO.KV_" + b.DeviceHeartbeat,

		// Reading its own keys: direct get of the last message on the
		// key's subject, which is part of the request subject. Also used
		// by nats.go's Create when the key holds a delete marker.
		directGet(b.DesiredState, ownDeps),
		directGet(b.DeviceInfo, own),
		directGet(b.DeviceState, ownDeps),
		directGet(b.DeviceHeartbeat, own),

		// Writing its own keys: Create, Update (CAS headers) and Delete
		// (a marker) are all publishes to the key's subject.
		kv(b.DeviceInfo, own),
		kv(b.DeviceState, ownDeps),
		kv(b.DeviceHeartbeat, own),

		// Watching its own desired state (also a single key of it): an
		// ordered consumer created with the filter subject in the request
		// subject (CONSUMER.CREATE.<stream>.<name>.<filter>); the server
		// refuses a body whose filter differs. The consumer name is random.
		"$JS.API.CONSUMER.CREATE.KV_" + b.DesiredState + ".*." + kv(b.DesiredState, ownDeps),
		// nats.go deletes the watch's consumer when the watch stops and
		// when it recreates it after a gap. Names are random and cannot be
		// listed, so this does not reach other devices' watches in
		// practice; without it the server drops the consumer only after
		// its inactivity threshold and each stop reports a violation.
		"$JS.API.CONSUMER.DELETE.KV_" + b.DesiredState + ".*",
		// The watch's flow-control replies. Those sent as reply subjects
		// are covered by the response permission below too; the one named
		// in the stalled-consumer header of an idle heartbeat is not.
		"$JS.FC.KV_" + b.DesiredState + ".>",
	}
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: []string{
			// Replies to its requests and its watch's deliveries.
			DeviceInboxPrefix(device) + ".>",
			// Command requests from the control plane.
			v1.CommandSubject(device),
			// Its desired state as republished by the bucket.
			DesiredSubjectPrefix(b.DesiredState) + "." + ownDeps,
		}},
		// One reply to each message received with a reply subject, within
		// the command window: command requests (only the control plane may
		// publish on the command subject), and the watch's deliveries,
		// whose ack and flow-control replies are harmless.
		Response: &server.ResponsePermission{MaxMsgs: 1, Expires: CommandReplyWindow},
	}
}

// BucketPermissions let an identity use one whole bucket as the failover
// members do: check it, read, watch, list and write any key of it, and
// read its history. Never create or update its stream: a stream's
// configuration (republish, sources, subjects) travels in the request
// body, beyond subject permissions, and would let the member reach other
// subjects; the server creates the bucket when it grants the identity.
func BucketPermissions(bucket string) *server.Permissions {
	stream := "KV_" + bucket
	return &server.Permissions{Publish: &server.SubjectPermission{Allow: []string{
		"$JS.API.INFO",
		"$JS.API.STREAM.INFO." + stream,
		"$JS.API.STREAM.MSG.GET." + stream,
		"$JS.API.DIRECT.GET." + stream,
		"$JS.API.DIRECT.GET." + stream + ".>",
		"$JS.API.CONSUMER.CREATE." + stream,
		"$JS.API.CONSUMER.CREATE." + stream + ".>",
		"$JS.API.CONSUMER.DELETE." + stream + ".>",
		"$JS.API.CONSUMER.INFO." + stream + ".>",
		"$JS.FC." + stream + ".>",
		"$KV." + bucket + ".>",
	}}}
}
