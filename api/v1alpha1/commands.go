package v1alpha1

import "fmt"

// CommandSubject is the NATS subject on which a device answers commands.
func CommandSubject(device string) string { return "harmony.cmd." + device }

// Command operations.
const (
	OpPing = "ping"
	OpLogs = "logs"
	OpExec = "exec"
)

// Limits of commands.
const (
	MaxCommandBytes  = 64 << 10
	MaxLogLines      = 10000
	MaxExecOutput    = 256 << 10
	ExecTimeoutLimit = 25 // seconds
)

// CommandRequest is sent to a device's command subject.
type CommandRequest struct {
	Op string `json:"op"`
	// Logs: the deployment and resource whose output to read; Lines caps it.
	Deployment string `json:"deployment,omitempty"`
	Resource   string `json:"resource,omitempty"`
	Lines      int    `json:"lines,omitempty"`
	// Exec: the command and its arguments (no shell).
	Command []string `json:"command,omitempty"`
}

// Validate checks a request.
func (r *CommandRequest) Validate() error {
	e := newErrs()
	switch r.Op {
	case OpPing:
	case OpLogs:
		if r.Resource == "" {
			e.at("resource").add("is required")
		}
		if r.Lines < 0 || r.Lines > MaxLogLines {
			e.at("lines").add("%d: must be 0 to %d", r.Lines, MaxLogLines)
		}
	case OpExec:
		if len(r.Command) == 0 || r.Command[0] == "" {
			e.at("command").add("is required")
		}
	default:
		e.at("op").add("%q: must be ping, logs or exec", r.Op)
	}
	return e.err()
}

// Error codes of command replies.
const (
	CodeInvalid  = "invalid"
	CodeDisabled = "disabled"
	CodeNotFound = "not_found"
	CodeFailed   = "failed"
)

// CommandReply is a device's answer.
type CommandReply struct {
	OK       bool   `json:"ok"`
	Code     string `json:"code,omitempty"`
	Error    string `json:"error,omitempty"`
	Output   string `json:"output,omitempty"`
	ExitCode int    `json:"exitCode,omitempty"`
	Device   string `json:"device,omitempty"`
	Boot     string `json:"boot,omitempty"`
}

// DecodeCommandRequest checks the size and decodes a request.
func DecodeCommandRequest(data []byte) (CommandRequest, error) {
	var r CommandRequest
	if err := checkInput(data, MaxCommandBytes); err != nil {
		return r, err
	}
	if err := decodeStrict(data, &r); err != nil {
		return r, fmt.Errorf("request: %w", err)
	}
	return r, r.Validate()
}
