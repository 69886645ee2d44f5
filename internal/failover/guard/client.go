package guard

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// ClientConfig says how to reach the guard, and how to start one when none
// answers.
type ClientConfig struct {
	// Socket and DataDir: as in Config. A guard found on the socket must
	// guard DataDir.
	Socket  string
	DataDir string
	// Watchdog and WatchdogInterval are passed to a guard this client
	// starts (empty: no watchdog).
	Watchdog         string
	WatchdogInterval time.Duration
	// IdleExit is passed to a guard this client starts (0: its default).
	IdleExit time.Duration
	// LogFile receives a started guard's output (empty: /dev/null).
	LogFile string
	// Executable is the harmony binary to start the guard from (empty:
	// os.Executable()); it must understand `guard --detach ...`.
	Executable string
	// StartTimeout bounds the wait for a started guard to answer
	// (default 5 s); RequestTimeout each request (default 1 s).
	StartTimeout   time.Duration
	RequestTimeout time.Duration
}

func (c ClientConfig) withDefaults() ClientConfig {
	if c.StartTimeout <= 0 {
		c.StartTimeout = 5 * time.Second
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = time.Second
	}
	return c
}

// Client talks to the guard. Its methods are safe for concurrent use and
// are serialized: one request at a time, answered in order.
type Client struct {
	cfg ClientConfig

	mu   sync.Mutex
	conn net.Conn
	rd   *bufio.Reader
	fed  uint64

	// seen guards last: the guard's state as its last answer said, for
	// readers (metrics) that must not wait behind a request or cause one.
	seen  sync.Mutex
	last  Status
	known bool
}

// Attach connects to the guard on cfg.Socket; when nothing answers there it
// starts one (the current binary's `guard` command, detached in its own
// session so that a signal to the agent does not reach it) and waits, up to
// StartTimeout and ctx, until it answers. A guard found keeps its state: a
// restarted agent finds the deadline its predecessor left, and must feed
// (or disarm) it in time; a guard started is disarmed.
func Attach(ctx context.Context, cfg ClientConfig) (*Client, error) {
	if cfg.Socket == "" || cfg.DataDir == "" {
		return nil, errors.New("guard: socket and data directory are required")
	}
	cfg = cfg.withDefaults()
	abs, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	cfg.DataDir = abs
	c := &Client{cfg: cfg}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.connect(ctx); err != nil {
		return nil, err
	}
	st, err := c.roundTrip(request{V: wireVersion, Op: opStatus})
	if err != nil {
		c.drop()
		return nil, err
	}
	if st.DataDir != cfg.DataDir {
		c.drop()
		return nil, fmt.Errorf("%w: %s, not %s", ErrOtherDataDir, st.DataDir, cfg.DataDir)
	}
	return c, nil
}

// connect dials the socket, starting a guard when nothing answers.
func (c *Client) connect(ctx context.Context) error {
	if conn, err := net.DialTimeout("unix", c.cfg.Socket, c.cfg.RequestTimeout); err == nil {
		c.conn, c.rd = conn, bufio.NewReader(conn)
		return nil
	}
	if err := c.spawn(); err != nil {
		return fmt.Errorf("%w: start guard: %v", ErrUnavailable, err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.StartTimeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var last error
	spawned := time.Now()
	for {
		conn, err := net.DialTimeout("unix", c.cfg.Socket, c.cfg.RequestTimeout)
		if err == nil {
			c.conn, c.rd = conn, bufio.NewReader(conn)
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: no guard answered on %s: %v", ErrUnavailable, c.cfg.Socket, last)
		case <-tick.C:
		}
		// The guard started may have found an exiting one still holding
		// the lock (it then exits too): start another.
		if time.Since(spawned) >= 500*time.Millisecond {
			spawned = time.Now()
			if err := c.spawn(); err != nil {
				last = err
			}
		}
	}
}

// spawn runs `EXE guard --detach ...` and waits for it: that short-lived
// process starts the real guard in a new session and exits at once, so the
// guard is nobody's child here (no zombie, no goroutine waiting for it)
// and survives the agent.
func (c *Client) spawn() error {
	exe := c.cfg.Executable
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return err
		}
	}
	gc := Config{Socket: c.cfg.Socket, DataDir: c.cfg.DataDir, Watchdog: c.cfg.Watchdog, WatchdogInterval: c.cfg.WatchdogInterval, IdleExit: c.cfg.IdleExit}
	cmd := exec.Command(exe, append([]string{"guard", "--detach"}, gc.Args()...)...)
	cmd.Env = os.Environ()
	out, err := openLog(c.cfg.LogFile)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	return cmd.Run()
}

func openLog(path string) (*os.File, error) {
	if path == "" {
		return os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	}
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
}

func (c *Client) drop() {
	if c.conn != nil {
		c.conn.Close()
	}
	c.conn, c.rd = nil, nil
}

// roundTrip sends one request on the current connection and reads its
// answer.
func (c *Client) roundTrip(req request) (Status, error) {
	if c.conn == nil {
		return Status{}, fmt.Errorf("%w: not connected", ErrUnavailable)
	}
	b, _ := json.Marshal(req)
	_ = c.conn.SetDeadline(time.Now().Add(c.cfg.RequestTimeout))
	if _, err := c.conn.Write(append(b, '\n')); err != nil {
		return Status{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	line, err := c.rd.ReadBytes('\n')
	if err != nil {
		return Status{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	var resp response
	if err := json.Unmarshal(line, &resp); err != nil {
		return Status{}, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	if resp.V != wireVersion {
		return Status{}, fmt.Errorf("%w: format version %d, want %d", ErrProtocol, resp.V, wireVersion)
	}
	if resp.Error != "" {
		return Status{}, fmt.Errorf("%w: %s", ErrRefused, resp.Error)
	}
	return resp.Status.status(), nil
}

// do sends req, reconnecting (and starting a guard if none answers) and
// retrying once when the connection is broken. Every request is idempotent
// (deadlines are absolute), so a retry after an unknown outcome is safe.
func (c *Client) do(req request) (Status, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, err := c.doLocked(req)
	if err == nil {
		c.seen.Lock()
		c.last, c.known = st, true
		c.seen.Unlock()
	}
	return st, err
}

// Last is the guard's state as its last answer gave it, without asking
// (false before any answer).
func (c *Client) Last() (Status, bool) {
	c.seen.Lock()
	defer c.seen.Unlock()
	return c.last, c.known
}

func (c *Client) doLocked(req request) (Status, error) {
	if c.conn != nil {
		st, err := c.roundTrip(req)
		if err == nil || !errors.Is(err, ErrUnavailable) {
			return st, err
		}
		c.drop()
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.StartTimeout)
	defer cancel()
	if err := c.connect(ctx); err != nil {
		return Status{}, err
	}
	st, err := c.roundTrip(req)
	if errors.Is(err, ErrUnavailable) {
		c.drop()
	}
	if err == nil && st.DataDir != c.cfg.DataDir {
		c.drop()
		return Status{}, fmt.Errorf("%w: %s, not %s", ErrOtherDataDir, st.DataDir, c.cfg.DataDir)
	}
	return st, err
}

// Arm sets the deadline: unless a later Arm or a Disarm arrives first, the
// guard fences PostgreSQL once Now() >= until. The latest Arm wins, earlier
// or later than the one before; an until already past fences at once. A
// deadline that has passed fires even if an Arm or Disarm arrives after it.
// Arm returns once the guard holds the deadline.
func (c *Client) Arm(until time.Duration) error {
	if until <= 0 {
		return fmt.Errorf("guard: arm: deadline %d is not a CLOCK_BOOTTIME reading", until)
	}
	_, err := c.do(request{V: wireVersion, Op: opArm, UntilNS: int64(until)})
	if err == nil {
		c.mu.Lock()
		c.fed++
		c.mu.Unlock()
	}
	return err
}

// Disarm tells the guard PostgreSQL is not serving as a primary: it fences
// nothing until the next Arm (an already expired deadline still fires).
func (c *Client) Disarm() error {
	_, err := c.do(request{V: wireVersion, Op: opDisarm})
	return err
}

// Status asks the guard for its state.
func (c *Client) Status() (Status, error) {
	return c.do(request{V: wireVersion, Op: opStatus})
}

// Fed counts the Arms this client had acknowledged.
func (c *Client) Fed() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fed
}

// Close closes the connection. The guard keeps its state: armed, it still
// fences at its deadline unless a client feeds or disarms it.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.drop()
	return nil
}
