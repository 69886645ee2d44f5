package failover

import "time"

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
	PendingRestart []string  `json:"pendingRestart,omitempty"`
	At             time.Time `json:"at"`
}
