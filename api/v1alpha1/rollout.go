package v1alpha1

import (
	"fmt"
	"time"
)

// RolloutSpec makes a change of a deployment go to its devices batch by
// batch (docs/adr/0028-progressive-rollouts.md). Without it a change goes
// to every matched device at once.
type RolloutSpec struct {
	// Batches, in order. A device is in the first batch that takes it;
	// the batches together must take every matched device (end with
	// percent: 100 to be sure).
	Batches []RolloutBatch `json:"batches"`
	// SuccessThreshold is the percentage of a batch's devices that must
	// pass the gate for the next batch to start (default 100).
	SuccessThreshold *int `json:"successThreshold,omitempty"`
	// Gate is what a device must show to pass.
	Gate RolloutGate `json:"gate,omitempty"`
	// MaxUpdating bounds how many devices of a batch receive the change
	// and have not yet reported it Ready (default 0: no bound).
	MaxUpdating int `json:"maxUpdating,omitempty"`
	// OnFailure is what a batch that fails its gate does: pause (the
	// default: wait for a person) or rollback (the deployment's previous
	// spec is stored again, as a new generation, for every device).
	OnFailure string `json:"onFailure,omitempty"`
}

// RolloutBatch takes one of: a number of devices, a percentage of the
// matched devices, or the devices a selector picks (a canary site).
type RolloutBatch struct {
	Count    *int      `json:"count,omitempty"`
	Percent  *int      `json:"percent,omitempty"`
	Selector *Selector `json:"selector,omitempty"`
}

// RolloutGate: a device passes once every resource of the new generation
// has been Ready for ReadyForSeconds without a container restart or a
// drift repair; it fails when it reports the generation Failed or refused,
// when it is offline, or when ProgressDeadlineSeconds pass after it
// received the change without it passing.
type RolloutGate struct {
	ReadyForSeconds         int  `json:"readyForSeconds,omitempty"`
	ProgressDeadlineSeconds *int `json:"progressDeadlineSeconds,omitempty"`
}

// Rollout defaults and values.
const (
	OnFailurePause          = "pause"
	OnFailureRollback       = "rollback"
	DefaultSuccessThreshold = 100
	DefaultProgressDeadline = 600 * time.Second
	MaxRolloutBatches       = 100
)

// Threshold is the success threshold in percent, default applied.
func (r *RolloutSpec) Threshold() int {
	if r.SuccessThreshold == nil {
		return DefaultSuccessThreshold
	}
	return *r.SuccessThreshold
}

// Deadline is the gate's progress deadline, default applied.
func (g RolloutGate) Deadline() time.Duration {
	if g.ProgressDeadlineSeconds == nil {
		return DefaultProgressDeadline
	}
	return time.Duration(*g.ProgressDeadlineSeconds) * time.Second
}

// ReadyFor is how long a device must stay Ready to pass.
func (g RolloutGate) ReadyFor() time.Duration {
	return time.Duration(g.ReadyForSeconds) * time.Second
}

// Rollback reports whether a failed batch rolls the deployment back.
func (r *RolloutSpec) Rollback() bool { return r.OnFailure == OnFailureRollback }

func (r *RolloutSpec) validate(e errs) {
	bs := e.at("batches")
	switch {
	case len(r.Batches) == 0:
		bs.add("required: at least one batch (end with percent: 100 to take every device)")
	case len(r.Batches) > MaxRolloutBatches:
		bs.add("%d batches is more than the limit of %d", len(r.Batches), MaxRolloutBatches)
	}
	for i, b := range r.Batches {
		be := bs.index(i)
		set := 0
		if b.Count != nil {
			set++
			if *b.Count < 1 {
				be.at("count").add("%d: must be at least 1", *b.Count)
			}
		}
		if b.Percent != nil {
			set++
			if *b.Percent < 1 || *b.Percent > 100 {
				be.at("percent").add("%d: must be from 1 to 100", *b.Percent)
			}
		}
		if b.Selector != nil {
			set++
			b.Selector.validate(be.at("selector"))
		}
		if set != 1 {
			be.add("give exactly one of count, percent and selector")
		}
	}
	if t := r.SuccessThreshold; t != nil && (*t < 1 || *t > 100) {
		e.at("successThreshold").add("%d: a percentage from 1 to 100", *t)
	}
	if r.Gate.ReadyForSeconds < 0 {
		e.at("gate.readyForSeconds").add("%d: a time is not negative", r.Gate.ReadyForSeconds)
	}
	if d := r.Gate.ProgressDeadlineSeconds; d != nil && *d < 1 {
		e.at("gate.progressDeadlineSeconds").add("%d: must be at least 1", *d)
	}
	if r.MaxUpdating < 0 {
		e.at("maxUpdating").add("%d: must not be negative (0: no bound)", r.MaxUpdating)
	}
	switch r.OnFailure {
	case "", OnFailurePause, OnFailureRollback:
	default:
		e.at("onFailure").add("%q: must be pause or rollback", r.OnFailure)
	}
}

// Rollout phases.
const (
	// RolloutPending: stored with the change; the operator has not yet
	// split the devices into batches.
	RolloutPending     = "Pending"
	RolloutProgressing = "Progressing"
	// RolloutPaused: by a person (Reason says who asked) or by a batch
	// that failed its gate with onFailure: pause.
	RolloutPaused = "Paused"
	// RolloutSucceeded: every batch passed.
	RolloutSucceeded = "Succeeded"
	// RolloutRolledBack: a batch failed with onFailure: rollback; the
	// previous spec was stored again as generation RollbackGeneration.
	RolloutRolledBack = "RolledBack"
)

// RolloutState is the value of rollouts/<deployment>: the progress of one
// rollout of a deployment to generation To (the stored deployment holds
// what the devices not yet reached keep: StoredDeployment.RolloutFrom).
// The operator that holds the lease creates it and moves it on; a
// person's pause or resume changes its phase; every write is conditional
// on the last. It applies while the deployment's UID and generation are
// UID and To; until it exists the rollout is Pending.
type RolloutState struct {
	V   int    `json:"v"`
	UID string `json:"uid"`
	To  int64  `json:"to"`
	// Batches are the matched devices, split when the rollout started
	// (sorted within each batch). Devices that match later join the last.
	Batches [][]string `json:"batches,omitempty"`
	// Batch is the index of the batch in progress (len(Batches) when
	// every batch passed).
	Batch int `json:"batch"`
	// Released is how many devices of the current batch have the change
	// (the first Released of Batches[Batch]).
	Released int    `json:"released"`
	Phase    string `json:"phase"`
	Reason   string `json:"reason,omitempty"`
	// Failed lists the devices of the current batch that failed its gate
	// when it failed, with why.
	Failed map[string]string `json:"failed,omitempty"`
	// BatchStarted is when the current batch started (the operator's
	// clock, for people: the gate is timed on the operator's own clock).
	BatchStarted time.Time `json:"batchStarted,omitzero"`
	Updated      time.Time `json:"updated,omitzero"`
	// Resumes counts a person's resumes: each judges the current batch
	// afresh.
	Resumes int `json:"resumes,omitempty"`
	// Excused are devices of the current batch a person's resume left out
	// of the judging: those that had failed the gate by being offline.
	// They get their batch's generation when they come back.
	Excused []string `json:"excused,omitempty"`
	// RollbackGeneration is the generation that stored the previous spec
	// again.
	RollbackGeneration int64 `json:"rollbackGeneration,omitempty"`
}

// Of reports whether the state is of deployment d's current generation.
func (s RolloutState) Of(d Deployment) bool {
	return s.UID == d.Metadata.UID && s.To == d.Metadata.Generation
}

// Done reports whether every batch has the change.
func (s RolloutState) Done() bool { return s.Phase == RolloutSucceeded }

// Position is where each device of the batches is: its batch and its
// place in it.
type Position struct{ Batch, Index int }

// Positions indexes the batches by device.
func (s RolloutState) Positions() map[string]Position {
	out := map[string]Position{}
	for i, b := range s.Batches {
		for j, d := range b {
			out[d] = Position{Batch: i, Index: j}
		}
	}
	return out
}

// Has reports whether a device at pos (ok: it is in a batch) has
// generation To: its batch is done, or it is among the released devices
// of the current batch. A device in no batch gets it once the last batch
// is in progress.
func (s RolloutState) Has(pos Position, ok bool) bool {
	switch {
	case s.Phase == RolloutSucceeded:
		return true
	case s.Phase == RolloutPending || len(s.Batches) == 0:
		return false
	case ok:
		return pos.Batch < s.Batch || (pos.Batch == s.Batch && pos.Index < s.Released)
	}
	// A device in no batch joins the last one, while the rollout goes on.
	return s.Phase == RolloutProgressing && len(s.Batches) > 0 && s.Batch >= len(s.Batches)-1
}

// DecodeRolloutState reads a rollouts value.
func DecodeRolloutState(data []byte) (RolloutState, error) {
	var s RolloutState
	if err := decodeStored(data, MaxRolloutStateBytes, &s, func() int { return s.V }); err != nil {
		return s, err
	}
	if s.To < 1 {
		return s, fmt.Errorf("to: %d: not a generation", s.To)
	}
	return s, nil
}

// MaxRolloutStateBytes bounds a rollout's state, most of which is the
// device lists of its batches (about 100,000 devices).
const MaxRolloutStateBytes = 4 << 20

// RolloutStatus is what the API, the CLI and the dashboard show of a
// deployment's rollout: GET /api/v1/deployments/{name}/rollout.
type RolloutStatus struct {
	Name string `json:"name"`
	// Generation is the deployment's current one.
	Generation int64 `json:"generation"`
	// Active: the current generation rolls out and has not finished
	// (Pending, Progressing or Paused).
	Active bool `json:"active"`
	// From is the generation the devices not yet reached keep (0: none).
	From  int64  `json:"from,omitempty"`
	To    int64  `json:"to,omitempty"`
	Phase string `json:"phase,omitempty"` // "": the deployment never rolled out
	// Reason says why it is paused or rolled back.
	Reason string `json:"reason,omitempty"`
	// Batch is the batch in progress, from 1 (0: none).
	Batch   int                  `json:"batch,omitempty"`
	Batches []RolloutBatchStatus `json:"batches,omitempty"`
	// Failed: the devices that failed the gate, with why.
	Failed             map[string]string `json:"failed,omitempty"`
	RollbackGeneration int64             `json:"rollbackGeneration,omitempty"`
	BatchStarted       time.Time         `json:"batchStarted,omitzero"`
	Updated            time.Time         `json:"updated,omitzero"`
}

// Headline says where the rollout is, around its phase (head + ": " +
// phase + tail): the CLI's and the dashboard's words.
func (st RolloutStatus) Headline() (head, tail string) {
	verb := "rolling out"
	if st.Phase == RolloutSucceeded {
		verb = "rolled out"
	}
	head = fmt.Sprintf("generation %d %s", st.To, verb)
	if st.From > 0 {
		head += fmt.Sprintf(" from generation %d", st.From)
	}
	switch {
	case st.Phase == RolloutRolledBack:
		tail = fmt.Sprintf(" to generation %d, which holds the earlier spec again", st.RollbackGeneration)
	case st.Phase == RolloutSucceeded:
		tail = ", every batch passed"
	case st.Phase == RolloutPending:
		tail = " (the devices are not split into batches yet)"
	case st.Batch > 0:
		tail = fmt.Sprintf(", batch %d of %d", st.Batch, len(st.Batches))
	}
	return head, tail
}

// RolloutBatchStatus counts one batch's devices by phase: Waiting (not
// yet given the change), Updating, Ready (the new generation Ready),
// Failed (it failed or was refused), Offline.
type RolloutBatchStatus struct {
	State    string `json:"state"` // Done, InProgress, Waiting
	Devices  int    `json:"devices"`
	Waiting  int    `json:"waiting"`
	Updating int    `json:"updating"`
	Ready    int    `json:"ready"`
	Failed   int    `json:"failed"`
	Offline  int    `json:"offline"`
}

// Batch states.
const (
	BatchDone       = "Done"
	BatchInProgress = "InProgress"
	BatchWaiting    = "Waiting"
)
