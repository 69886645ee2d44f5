package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
)

// LogReader is implemented by kinds that keep output (containers, jobs).
type LogReader interface {
	Logs(ctx context.Context, d Desired, lines int) (string, error)
}

// serveCommands answers ping, logs and exec on the device's own subject
// until ctx ends.
func (a *Agent) serveCommands(ctx context.Context, nc *nats.Conn) error {
	sub, err := nc.Subscribe(v1.CommandSubject(a.cfg.ID), func(m *nats.Msg) {
		// A request has an inbox to answer. A JetStream delivery (a
		// consumer pointed at this subject) carries an acknowledgement
		// subject instead: it is a stored message replayed, never a
		// command from the control plane.
		if m.Reply == "" || strings.HasPrefix(m.Reply, "$JS.") {
			a.log.Warn("ignoring a command message that is not a request", "reply", m.Reply)
			return
		}
		reply := a.handleCommand(ctx, m.Data)
		b, _ := json.Marshal(reply)
		if err := m.Respond(b); err != nil {
			a.log.Warn("command reply failed", "err", err)
		}
	})
	if err != nil {
		return err
	}
	<-ctx.Done()
	_ = sub.Unsubscribe()
	return nil
}

func (a *Agent) handleCommand(ctx context.Context, data []byte) v1.CommandReply {
	req, err := v1.DecodeCommandRequest(data)
	if err != nil {
		return v1.CommandReply{Code: v1.CodeInvalid, Error: err.Error()}
	}
	switch req.Op {
	case v1.OpPing:
		return v1.CommandReply{OK: true, Device: a.cfg.ID, Boot: a.boot}
	case v1.OpLogs:
		return a.logs(ctx, req)
	case v1.OpExec:
		return a.exec(ctx, req)
	}
	return v1.CommandReply{Code: v1.CodeInvalid, Error: "op: unknown"}
}

func (a *Agent) logs(ctx context.Context, req v1.CommandRequest) v1.CommandReply {
	lines := req.Lines
	if lines == 0 {
		lines = 100
	}
	for _, g := range a.engine.snapshotGood() {
		for _, d := range g {
			if d.ID != req.Resource || (req.Deployment != "" && d.Deployment != req.Deployment) {
				continue
			}
			lr, ok := a.kinds[d.Kind].(LogReader)
			if !ok {
				return v1.CommandReply{Code: v1.CodeInvalid, Error: fmt.Sprintf("resource %s is a %s, which keeps no logs", d.ID, d.Kind)}
			}
			out, err := lr.Logs(ctx, d, lines)
			if err != nil {
				return v1.CommandReply{Code: v1.CodeFailed, Error: err.Error()}
			}
			return v1.CommandReply{OK: true, Output: out}
		}
	}
	return v1.CommandReply{Code: v1.CodeNotFound, Error: fmt.Sprintf("no resource %q on this device", req.Resource)}
}

func (a *Agent) exec(ctx context.Context, req v1.CommandRequest) v1.CommandReply {
	if !a.cfg.Allowed().Has(v1.CapabilityExec) {
		return v1.CommandReply{Code: v1.CodeDisabled, Error: refusal("exec", v1.CapabilityExec)}
	}
	a.log.Info("exec", "command", req.Command)
	cctx, cancel := context.WithTimeout(ctx, v1.ExecTimeoutLimit*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, req.Command[0], req.Command[1:]...)
	cmd.Dir = a.cfg.RootDir // "" (the agent's) unless files live under a root_dir
	out := &capped{max: v1.MaxExecOutput}
	cmd.Stdout, cmd.Stderr = out, out
	err := cmd.Run()
	reply := v1.CommandReply{OK: err == nil, Output: out.String(), ExitCode: cmd.ProcessState.ExitCode()}
	if err != nil {
		reply.Code, reply.Error = v1.CodeFailed, err.Error()
		if cctx.Err() != nil {
			reply.Error = fmt.Sprintf("timed out after %ds", v1.ExecTimeoutLimit)
		}
	}
	a.log.Info("exec finished", "command", req.Command, "exit", reply.ExitCode, "bytes", len(reply.Output))
	return reply
}

// capped keeps the first max bytes written.
type capped struct {
	max int
	b   []byte
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - len(c.b); room > 0 {
		if len(p) > room {
			c.b = append(c.b, p[:room]...)
		} else {
			c.b = append(c.b, p...)
		}
	}
	return len(p), nil
}

func (c *capped) String() string { return string(c.b) }
