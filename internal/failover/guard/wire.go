package guard

import (
	"errors"
	"fmt"
	"time"
)

// wireVersion is the format version of every request and response; each
// side refuses another.
const wireVersion = 1

// request is one line from the agent, JSON-encoded.
type request struct {
	V  int `json:"v"`
	Op op  `json:"op"`
	// UntilNS (arm): the deadline, CLOCK_BOOTTIME nanoseconds.
	UntilNS int64 `json:"until_ns,omitempty"`
}

func (r request) validate() error {
	if r.V != wireVersion {
		return fmt.Errorf("%w: format version %d, want %d", ErrProtocol, r.V, wireVersion)
	}
	switch r.Op {
	case opArm:
		if r.UntilNS <= 0 {
			return fmt.Errorf("%w: arm needs until_ns > 0", ErrProtocol)
		}
	case opDisarm, opStatus:
	default:
		return fmt.Errorf("%w: unknown op %q", ErrProtocol, r.Op)
	}
	return nil
}

// response answers every request with the guard's status after it.
type response struct {
	V      int        `json:"v"`
	Error  string     `json:"error,omitempty"`
	Status wireStatus `json:"status"`
}

type wireStatus struct {
	Armed         bool   `json:"armed"`
	UntilNS       int64  `json:"until_ns,omitempty"`
	NowNS         int64  `json:"now_ns"`
	Fed           uint64 `json:"fed"`
	Fired         uint64 `json:"fired"`
	DataDir       string `json:"data_dir"`
	PID           int    `json:"pid"`
	LastFence     string `json:"last_fence,omitempty"`
	Watchdog      bool   `json:"watchdog"`
	WatchdogError string `json:"watchdog_error,omitempty"`
}

// Status is the guard's state as it answered.
type Status struct {
	// Armed: the guard fences at Until unless fed or disarmed first.
	Armed bool
	// Until: the deadline (CLOCK_BOOTTIME, as Now returns); zero when
	// disarmed.
	Until time.Duration
	// Now: the guard's reading of the clock when it answered.
	Now time.Duration
	// Fed counts the arm messages the guard accepted; Fired the fences it
	// carried out, since it started.
	Fed, Fired uint64
	// DataDir is the PostgreSQL data directory it guards; PID its process.
	DataDir string
	PID     int
	// LastFence describes the last fence (empty: none yet).
	LastFence string
	// Watchdog: a watchdog device is configured; WatchdogError the last
	// failure to open or write it.
	Watchdog      bool
	WatchdogError string
}

func (w wireStatus) status() Status {
	return Status{Armed: w.Armed, Until: time.Duration(w.UntilNS), Now: time.Duration(w.NowNS), Fed: w.Fed, Fired: w.Fired,
		DataDir: w.DataDir, PID: w.PID, LastFence: w.LastFence, Watchdog: w.Watchdog, WatchdogError: w.WatchdogError}
}

var (
	// ErrProtocol: a request or response the other side cannot accept.
	ErrProtocol = errors.New("guard: protocol error")
	// ErrRunning: another guard already serves the socket.
	ErrRunning = errors.New("guard: another guard is running")
	// ErrOtherDataDir: the guard on the socket guards another data
	// directory.
	ErrOtherDataDir = errors.New("guard: the guard on this socket guards another data directory")
	// ErrUnavailable: no guard answered, and none could be started in time.
	ErrUnavailable = errors.New("guard: unavailable")
	// ErrRefused: the guard answered with an error.
	ErrRefused = errors.New("guard: request refused")
)
