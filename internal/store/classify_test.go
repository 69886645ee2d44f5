package store

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestClassify(t *testing.T) {
	api := func(code int, errCode jetstream.ErrorCode) error {
		return fmt.Errorf("wrapped: %w", &jetstream.APIError{Code: code, ErrorCode: errCode})
	}
	cases := []struct {
		name  string
		err   error
		write bool
		want  error
	}{
		{"10071 wrong last sequence", api(400, jetstream.JSErrCodeStreamWrongLastSequence), true, ErrConflict},
		{"10164 write in flight", api(400, jetstream.JSErrCodeStreamWrongLastSequenceConstant), true, ErrConflict},
		{"nats.go key exists", jetstream.ErrKeyExists, true, ErrConflict},
		{"nats.go revision mismatch", fmt.Errorf("x: %w", jetstream.ErrKeyRevisionMismatch), true, ErrConflict},
		{"key not found", jetstream.ErrKeyNotFound, false, ErrNotFound},
		{"timeout on write", nats.ErrTimeout, true, ErrOutcomeUnknown},
		{"deadline on write", context.DeadlineExceeded, true, ErrOutcomeUnknown},
		{"connection closed on write", nats.ErrConnectionClosed, true, ErrOutcomeUnknown},
		{"timeout on read", nats.ErrTimeout, false, ErrUnavailable},
		{"deadline on read", context.DeadlineExceeded, false, ErrUnavailable},
		{"no responders on write", nats.ErrNoResponders, true, ErrUnavailable},
		{"no stream response", jetstream.ErrNoStreamResponse, true, ErrUnavailable},
		{"503", api(503, 10008), true, ErrUnavailable},
		{"10005 no peers", api(400, 10005), false, ErrUnavailable},
		{"too large", api(400, 10054), true, ErrValueTooLarge},
		{"bucket not found", jetstream.ErrBucketNotFound, false, ErrBucketNotFound},
		{"unknown error on write", errors.New("strange"), true, ErrOutcomeUnknown},
		{"unknown error on read", errors.New("strange"), false, ErrUnavailable},
	}
	for _, tc := range cases {
		if got := classify(tc.err, tc.write); got != tc.want {
			t.Errorf("%s: classify = %v, want %v", tc.name, got, tc.want)
		}
	}
	if !Retryable(opError("update", "b", "k", ErrUnavailable, nats.ErrNoResponders)) {
		t.Error("an unavailable store is retryable")
	}
	if Retryable(opError("update", "b", "k", ErrOutcomeUnknown, nats.ErrTimeout)) {
		t.Error("an unknown outcome must be re-read, not blindly retried")
	}
	err := opError("update", "b", "k", ErrConflict, api(400, 10071))
	var apiErr *jetstream.APIError
	if !errors.Is(err, ErrConflict) || !errors.As(err, &apiErr) {
		t.Errorf("opError loses the class or the cause: %v", err)
	}
}
