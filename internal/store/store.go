// Package store is Harmony's only door to the coordination store: JetStream
// key-value buckets. Everything else in Harmony talks to a KV (or a Store that
// opens KVs) and never to nats.go's jetstream package directly, so the rules of
// the design brief (compare-and-set for every decision, consistent reads for
// decisions, typed errors, resumable watches) are enforced in one place.
//
// Two implementations satisfy the contract: the NATS one (NewNATS) and an
// in-memory one for pure unit tests (package memstore). The suite in package
// storetest runs the same cases against both.
package store

import (
	"context"
	"time"
)

// Op says what an entry records.
type Op uint8

const (
	// OpPut is a value written by Create or Update.
	OpPut Op = iota + 1
	// OpDelete is a deletion marker; it is only ever seen in watches and
	// history, never returned by Get or List.
	OpDelete
)

func (o Op) String() string {
	switch o {
	case OpPut:
		return "put"
	case OpDelete:
		return "delete"
	default:
		return "unknown"
	}
}

// Entry is one revision of one key.
type Entry struct {
	Key   string
	Value []byte
	// Revision is the bucket-wide sequence number of this write. Revisions of
	// one bucket only ever grow, so a higher revision is a later write.
	Revision uint64
	// Created is the server's wall-clock time of the write. It comes from
	// whichever server led the stream and is NOT monotonic across leader
	// changes: never compare it with another machine's clock to decide
	// staleness.
	Created time.Time
	Op      Op
}

// Event is one item of a watch. Either Entry is set, or Replayed is true: the
// marker that every value present when the watch started (or every revision
// from the resume point) has been delivered. The marker is sent exactly once,
// also for an empty bucket.
type Event struct {
	Entry    Entry
	Replayed bool
}

// WatchOptions tune Watch.
type WatchOptions struct {
	// ResumeFrom, when non-zero, replays every retained revision from this
	// revision on (instead of the latest value per key), then follows updates.
	ResumeFrom uint64
	// UpdatesOnly skips the initial values; the Replayed marker comes first.
	UpdatesOnly bool
}

// Watcher delivers events until its context ends or the watch fails.
type Watcher interface {
	// Events is closed when the watch ends; Err then says why (nil after the
	// context was cancelled).
	Events() <-chan Event
	Err() error
}

// KV is one bucket. Keys are dot-separated tokens of [-/_=a-zA-Z0-9]; a key
// filter may use the NATS wildcards `*` (one token) and `>` (the rest).
//
// Contract, shared by every implementation:
//   - Get is a consistent read (never a possibly stale replica's answer) and
//     returns ErrNotFound for a missing or deleted key.
//   - Create succeeds only when the key is missing or deleted; otherwise
//     ErrConflict.
//   - Update and Delete succeed only when the key's latest revision equals
//     the one given; otherwise ErrConflict.
//   - A write that may or may not have been applied returns
//     ErrOutcomeUnknown: re-read before acting on it.
//   - When the store cannot be reached, ErrUnavailable.
type KV interface {
	Bucket() string
	Get(ctx context.Context, key string) (Entry, error)
	Create(ctx context.Context, key string, value []byte) (uint64, error)
	Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error)
	Delete(ctx context.Context, key string, revision uint64) error
	// List returns the latest value of every live key matching filter ("" is
	// every key), sorted by key. It reads like a watch: monotonic, but it may
	// lag the latest write by a moment; decide with Get or a CAS.
	List(ctx context.Context, filter string) ([]Entry, error)
	// History returns the retained revisions of key, oldest first, delete
	// markers included.
	History(ctx context.Context, key string) ([]Entry, error)
	// Watch follows keys matching filter ("" is every key). The watch holds
	// resources until ctx ends; cancel it to stop.
	Watch(ctx context.Context, filter string, opts WatchOptions) (Watcher, error)
}

// Putter is a KV that can write a key without compare-and-set (the
// NATS store). Only for keys with a single writer.
type Putter interface {
	Put(ctx context.Context, key string, value []byte) (uint64, error)
}

// BucketConfig describes a bucket the way Harmony needs it.
type BucketConfig struct {
	Name string
	// History is how many revisions of each key are kept (1..64).
	History int
	// Replicas is the number of copies in a cluster (1, 3 or 5).
	Replicas int
	// MaxValueSize caps one value in bytes; 0 means no cap.
	MaxValueSize int32
	// AsyncPersist lets the server acknowledge writes before they are synced
	// to disk. Only for data that is rebuilt after a loss (heartbeats and
	// observed state by the agents, desired state by the operator), and
	// only honoured on single-replica buckets; an existing bucket that
	// syncs every write is accepted as it is. See
	// docs/adr/0002-durability.md and 0012.
	AsyncPersist bool
	// MaxBytes caps the bucket's size on disk, all revisions of all keys
	// (0: no cap). A full bucket refuses new writes (it never drops old
	// ones: that could drop a key's only value). An existing bucket gets
	// the cap set.
	MaxBytes int64
	// MaxWatchers caps the JetStream consumers (watches) on the bucket. Zero
	// keeps the server's default, which nats-server 2.15 sets to 1,000 per
	// stream: a bucket that every device watches key by key needs more.
	MaxWatchers int
	// Republish, when set, has every write published again on
	// <Republish>.<key> once stored, for watches that follow those
	// subjects instead of holding a consumer (NATSOptions.WatchRepublished).
	// An existing bucket gets it added.
	Republish string
	// Description is stored with the bucket for operators.
	Description string
}

// Store opens buckets.
type Store interface {
	// Ensure creates the bucket when it is missing and checks an existing one:
	// a bucket whose settings differ is reported as *IncompatibleBucketError.
	Ensure(ctx context.Context, cfg BucketConfig) (KV, error)
	// Open binds to an existing bucket; ErrBucketNotFound when it is missing.
	Open(ctx context.Context, bucket string) (KV, error)
}
