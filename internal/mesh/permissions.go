package mesh

import (
	"time"

	"github.com/nats-io/nats-server/v2/server"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/relay"
	"github.com/harmony-fleet/harmony/internal/store"
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
func DesiredSubjectPrefix(bucket string) string { return store.RepublishPrefix(bucket) }

// DeviceInboxPrefix is the inbox prefix a device's connection must use
// (nats.CustomInboxPrefix): every reply to it, and every watch delivery,
// comes to subjects under it. The device id is one token, its dots turned
// into '_' (which no RFC 1123 name holds), so that no device's prefix is
// covered by another's ("a" and "a.b" would otherwise nest).
func DeviceInboxPrefix(device string) string { return relay.InboxPrefix(device) }

// DevicePermissions are the NATS permissions of one device's identity. A
// device has no JetStream API and publishes into no bucket: it sends every
// read and write of its own keys as a request on its relay subject, which
// the control plane checks and carries out (package relay,
// docs/adr/0013-device-isolation.md). So no header (Nats-Rollup,
// Nats-TTL, KV-Operation...), request body (consumer or stream
// configurations, deliver subjects, batched gets) or shared stream limit
// is within its reach. It may:
//   - publish on its relay subject, and answer each request received on
//     its command subject (one reply, within the command window);
//   - receive on its own inbox prefix (relay answers), its command subject,
//     and its desired state as the bucket republishes it;
//   - as a failover member (MemberPermissions added), receive its cluster
//     bucket's republished writes.
//
// The '*' ending the desired-state subscription matches a literal '>'
// token too, and "a.>" covers the keys of a device "a.b": no device id
// given an identity may be a dot-prefix of another's (identity.Nested).
func DevicePermissions(device string, b FleetBuckets) *server.Permissions {
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{relay.Subject(device)}},
		Subscribe: &server.SubjectPermission{Allow: []string{
			// Answers to its relay requests.
			DeviceInboxPrefix(device) + ".>",
			// Command requests from the control plane.
			v1.CommandSubject(device),
			// Its desired state as republished by the bucket.
			DesiredSubjectPrefix(b.DesiredState) + "." + device + ".*",
		}},
		// One reply to each message received with a reply subject, within
		// the command window: command requests (only the control plane may
		// publish on the command subject).
		Response: &server.ResponsePermission{MaxMsgs: 1, Expires: CommandReplyWindow},
	}
}

// MemberPermissions are what a failover member adds to its device
// permissions: it follows its cluster's bucket on the subjects the bucket
// republishes its writes on; reads and writes of the bucket go through the
// relay like every other device request (the relay checks that the
// member's identity was granted that cluster).
func MemberPermissions(bucket string) *server.Permissions {
	return &server.Permissions{Subscribe: &server.SubjectPermission{Allow: []string{
		store.RepublishPrefix(bucket) + ".>",
	}}}
}
