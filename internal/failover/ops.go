package failover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/harmony-fleet/harmony/internal/store"
)

// OpPrefix + node holds an operator's request to one member of a declared
// cluster (`harmony failover restart|reload|reinit NODE`): the member
// carries it out when it is safe, or refuses with the reason, and writes
// the outcome back into the same key.
const OpPrefix = "op."

// Operations a member takes.
const (
	OpRestart = "restart"
	OpReload  = "reload"
	OpReinit  = "reinit"
)

// Operation is the value of OpPrefix + node.
type Operation struct {
	ID string    `json:"id"`
	Op string    `json:"op"`
	At time.Time `json:"at"`
	// Done: the member answered (Refused, or carried it out); Result says
	// what happened or why not.
	Done    bool   `json:"done,omitempty"`
	Refused bool   `json:"refused,omitempty"`
	Result  string `json:"result,omitempty"`
}

// MemberPrefix + node holds what a declared member tells the others and
// people (MemberRecord): its setup phase, its parameters, what waits for a
// restart.
const MemberPrefix = "member."

// MemberRecord is the value of MemberPrefix + node.
type MemberRecord struct {
	// Phase is the member's setup phase while it has no failover role yet
	// (Bootstrapping, Cloning, WaitingForPrimary, ...; "" once it runs);
	// Failed says the phase is a failure, Message what it is.
	Phase   string `json:"phase,omitempty"`
	Failed  bool   `json:"failed,omitempty"`
	Message string `json:"message,omitempty"`
	// Params identifies the parameters the member has applied (a hash):
	// the primary hands over for a restart only once every member has the
	// ones it has.
	Params string `json:"params,omitempty"`
	// PendingRestart: parameters changed that wait for a restart.
	PendingRestart []string `json:"pendingRestart,omitempty"`
	// Leaving: the member's device no longer declares it (labelled out of
	// the selector, the deployment deleted). A leaving primary does not
	// hand over to a leaving standby, and a standby does not refuse to
	// leave for the sake of a leaving primary.
	Leaving bool      `json:"leaving,omitempty"`
	At      time.Time `json:"at"`
}

// ReadMember is node's MemberRecord (nil when it has none).
func ReadMember(ctx context.Context, kv store.KV, node string) (*MemberRecord, error) {
	e, err := kv.Get(ctx, MemberPrefix+node)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r MemberRecord
	if err := json.Unmarshal(e.Value, &r); err != nil {
		return nil, fmt.Errorf("%s%s: %w", MemberPrefix, node, err)
	}
	return &r, nil
}

// PutKey writes key whatever its current revision (a key one writer owns,
// or a request that replaces the one before), retrying a lost race a few
// times.
func PutKey(ctx context.Context, kv store.KV, key string, value []byte) error {
	for range 5 {
		e, err := kv.Get(ctx, key)
		switch {
		case errors.Is(err, store.ErrNotFound):
			_, err = kv.Create(ctx, key, value)
		case err == nil:
			_, err = kv.Update(ctx, key, value, e.Revision)
		}
		if !errors.Is(err, store.ErrConflict) {
			return err
		}
	}
	return store.ErrConflict
}
