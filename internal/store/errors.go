package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// The error taxonomy of the store. Every error returned by a KV or Store wraps
// exactly one of these (test with errors.Is), plus the underlying cause.
var (
	// ErrNotFound: the key does not exist or was deleted.
	ErrNotFound = errors.New("key not found")
	// ErrConflict: a compare-and-set lost (the key was written since the
	// revision given, or already exists, or another write to it was in flight).
	ErrConflict = errors.New("revision conflict")
	// ErrOutcomeUnknown: a write timed out or the connection dropped while it
	// was in flight; it may or may not have been applied. Re-read first.
	ErrOutcomeUnknown = errors.New("write outcome unknown")
	// ErrUnavailable: the store could not be reached or is not ready; nothing
	// was written. Retry later.
	ErrUnavailable = errors.New("store unavailable")
	// ErrInvalidKey: the key or filter is not a valid KV key.
	ErrInvalidKey = errors.New("invalid key")
	// ErrBucketNotFound: the bucket does not exist.
	ErrBucketNotFound = errors.New("bucket not found")
)

// IncompatibleBucketError says how an existing bucket differs from what
// Harmony needs; start-up stops on it rather than silently using or changing it.
type IncompatibleBucketError struct {
	Bucket      string
	Differences []string
}

func (e *IncompatibleBucketError) Error() string {
	return fmt.Sprintf("bucket %q exists with incompatible settings: %s", e.Bucket, strings.Join(e.Differences, "; "))
}

// Retryable reports whether the same call may succeed later without any other
// change: the store was unavailable. A conflict or an unknown outcome is not
// retryable as such: the caller must re-read first.
func Retryable(err error) bool {
	return errors.Is(err, ErrUnavailable)
}

// opError builds the error a KV returns: what was attempted, the class and the
// cause. The class is wrapped so errors.Is works; the cause is kept so
// errors.As can still reach, say, a *jetstream.APIError.
func opError(op, bucket, key string, class, cause error) error {
	if cause == nil || errors.Is(cause, class) {
		return fmt.Errorf("store: %s %s/%s: %w", op, bucket, key, causeOr(cause, class))
	}
	return fmt.Errorf("store: %s %s/%s: %w: %w", op, bucket, key, class, cause)
}

func causeOr(cause, class error) error {
	if cause == nil {
		return class
	}
	return cause
}

// ctxErr maps a context error to the class it means for a read or a write.
func ctxClass(err error, write bool) (error, bool) {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		if write {
			return ErrOutcomeUnknown, true
		}
		return ErrUnavailable, true
	}
	return nil, false
}

// ErrValueTooLarge: the value is larger than the bucket accepts.
var ErrValueTooLarge = errors.New("value too large")

// ErrRefused: the control plane refused the write or read as one the caller
// may not do (a device's relayed request outside its own keys, for a
// deployment it was not given, or with a value that does not decode).
// Nothing was written; the same call fails again.
var ErrRefused = errors.New("refused")
