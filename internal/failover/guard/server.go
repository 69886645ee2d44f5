package guard

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Config configures the guard process.
type Config struct {
	// Socket is the Unix socket the agent talks to; Socket+".lock" is held
	// while the guard runs, so two guards never serve one socket.
	Socket string
	// DataDir is the PostgreSQL data directory whose server it fences.
	DataDir string
	// Watchdog is the watchdog device to hold while armed (empty: none);
	// WatchdogInterval how often to write to it.
	Watchdog         string
	WatchdogInterval time.Duration
	// IdleExit: the guard exits once it has been disarmed (or has fenced)
	// with no client connected for this long.
	IdleExit time.Duration
	// FenceTimeout bounds the wait for the killed processes to disappear.
	FenceTimeout time.Duration
	// Log receives what the guard does (nil: discarded).
	Log *slog.Logger
}

// Defaults of Config.
const (
	DefaultWatchdogInterval = 250 * time.Millisecond
	DefaultIdleExit         = 60 * time.Second
	DefaultFenceTimeout     = 5 * time.Second
	// maxNap bounds every wait of the guard's loop: Go's timers run on a
	// clock that stops during a suspend, so a deadline in CLOCK_BOOTTIME is
	// re-read at least this often.
	maxNap = 100 * time.Millisecond
)

func (c Config) withDefaults() Config {
	if c.WatchdogInterval <= 0 {
		c.WatchdogInterval = DefaultWatchdogInterval
	}
	if c.IdleExit <= 0 {
		c.IdleExit = DefaultIdleExit
	}
	if c.FenceTimeout <= 0 {
		c.FenceTimeout = DefaultFenceTimeout
	}
	if c.Log == nil {
		c.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c
}

// Validate names the field that is wrong.
func (c Config) Validate() error {
	switch {
	case c.Socket == "":
		return errors.New("socket: required")
	case c.DataDir == "":
		return errors.New("data_dir: required")
	case c.Watchdog != "" && c.WatchdogInterval <= 0:
		return errors.New("watchdog_interval: must be positive")
	}
	return nil
}

// call is one request handed to the loop, with where to answer.
type call struct {
	req   request
	reply chan response
}

type server struct {
	cfg   Config
	log   *slog.Logger
	calls chan call
	conns chan int // +1 a client connected, -1 one left

	mu   sync.Mutex
	open map[net.Conn]struct{}
}

// Run runs the guard until ctx ends or it has been idle for IdleExit; it
// returns nil on an idle exit and ErrRunning when another guard holds the
// socket.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	var err error
	if cfg.DataDir, err = filepath.Abs(cfg.DataDir); err != nil {
		return err
	}
	unlock, err := lock(cfg.Socket + ".lock")
	if err != nil {
		return err
	}
	defer unlock()
	ln, err := listen(cfg.Socket)
	if err != nil {
		return err
	}
	s := &server{cfg: cfg, log: cfg.Log, calls: make(chan call), conns: make(chan int), open: map[net.Conn]struct{}{}}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.accept(ctx, ln, &wg)
	}()
	s.log.Info("guard started", "socket", cfg.Socket, "data_dir", cfg.DataDir, "watchdog", cfg.Watchdog, "pid", os.Getpid())
	err = s.loop(ctx)
	cancel()
	ln.Close()
	s.mu.Lock()
	for c := range s.open {
		c.Close()
	}
	s.mu.Unlock()
	wg.Wait()
	return err
}

// lock takes an exclusive lock on path for the life of the guard.
func lock(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrRunning
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// listen binds the socket. Holding the lock, any socket file there is a
// dead guard's: it is removed. Anything else there is refused.
func listen(path string) (*net.UnixListener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("socket %s: exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	// Only the agent's user (the guard runs as it) may arm or disarm.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

func (s *server) accept(ctx context.Context, ln *net.UnixListener, wg *sync.WaitGroup) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return // closed by Run
		}
		s.mu.Lock()
		if ctx.Err() != nil {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.open[c] = struct{}{}
		s.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serve(ctx, c)
		}()
	}
}

// serve answers one client's requests, one line each, in order.
func (s *server) serve(ctx context.Context, c net.Conn) {
	defer func() {
		s.mu.Lock()
		delete(s.open, c)
		s.mu.Unlock()
		c.Close()
		select {
		case s.conns <- -1:
		case <-ctx.Done():
		}
	}()
	select {
	case s.conns <- +1:
	case <-ctx.Done():
		return
	}
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		var req request
		resp := response{V: wireVersion}
		err := json.Unmarshal(sc.Bytes(), &req)
		if err == nil {
			err = req.validate()
		}
		if err == nil {
			cl := call{req: req, reply: make(chan response, 1)}
			select {
			case s.calls <- cl:
			case <-ctx.Done():
				return
			}
			select {
			case resp = <-cl.reply:
			case <-ctx.Done():
				return
			}
		} else {
			resp.Error = err.Error()
		}
		b, _ := json.Marshal(resp)
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := c.Write(append(b, '\n')); err != nil {
			return
		}
	}
}

// loop owns the state: it applies requests, fires the deadline, drives the
// watchdog, and decides when the guard has been idle long enough.
func (s *server) loop(ctx context.Context) error {
	var (
		st        state
		clients   int
		idleSince = Now()
		lastFence string
		fenceOK   = true
		wdErr     string
		wd        *watchdog
	)
	if s.cfg.Watchdog != "" {
		wd = &watchdog{path: s.cfg.Watchdog, interval: s.cfg.WatchdogInterval}
	}
	doFence := func(until time.Duration) {
		s.log.Warn("deadline passed: fencing PostgreSQL", "data_dir", s.cfg.DataDir, "late", Now()-until)
		fctx, cancel := context.WithTimeout(ctx, s.cfg.FenceTimeout)
		rep, err := fence(fctx, s.cfg.DataDir)
		cancel()
		lastFence = rep.String()
		fenceOK = err == nil
		if err != nil {
			lastFence += ": " + err.Error()
			s.log.Error("fence failed", "report", rep.String(), "err", err)
			return
		}
		if rep.StoppedAt == 0 {
			s.log.Warn("fence: nothing to stop", "report", rep.String())
			return
		}
		s.log.Warn("fenced", "report", rep.String(), "stopped_after_deadline", rep.StoppedAt-until)
	}
	status := func(now time.Duration) wireStatus {
		w := wireStatus{Armed: st.Armed, NowNS: int64(now), Fed: st.Fed, Fired: st.Fired, DataDir: s.cfg.DataDir,
			PID: os.Getpid(), LastFence: lastFence, Watchdog: wd != nil, WatchdogError: wdErr}
		if st.Armed {
			w.UntilNS = int64(st.Until)
		}
		return w
	}
	// tend keeps the watchdog in line with the state: written to while the
	// deadline is ahead; released once disarmed, unless the last fence was
	// not confirmed (then the machine must reset).
	tend := func(now time.Duration) {
		if wd == nil {
			return
		}
		var err error
		switch {
		case st.Armed && now < st.Until:
			err = wd.pet(now)
		case !st.Armed && wd.open() && fenceOK:
			err = wd.release()
		}
		if err != nil && err.Error() != wdErr {
			s.log.Error("watchdog", "err", err)
		}
		if err != nil {
			wdErr = err.Error()
		}
	}
	defer func() {
		if wd != nil && fenceOK && !st.Armed {
			_ = wd.release()
		}
		// Exiting while armed (ctx ended) leaves the device to the kernel's
		// own close: without 'V' the timer runs on and resets the machine
		// unless a new guard opens the device in time.
	}()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		now := Now()
		var fire bool
		until := st.Until
		if st, fire = st.settle(now); fire {
			doFence(until)
		}
		tend(now)
		if st.Armed || clients > 0 {
			idleSince = now
		} else if now-idleSince >= s.cfg.IdleExit {
			s.log.Info("guard idle: exiting", "fired", st.Fired, "fed", st.Fed)
			return nil
		}
		nap := maxNap
		if st.Armed && st.Until-now < nap {
			nap = st.Until - now
		}
		if wd != nil && wd.open() && s.cfg.WatchdogInterval < nap {
			nap = s.cfg.WatchdogInterval
		}
		if left := s.cfg.IdleExit - (now - idleSince); !st.Armed && clients == 0 && left < nap {
			nap = left
		}
		timer.Reset(nap)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case d := <-s.conns:
			clients += d
			if d < 0 && st.Armed {
				s.log.Warn("agent disconnected while armed: the deadline stands", "until", st.Until, "in", st.Until-Now())
			}
		case cl := <-s.calls:
			now := Now()
			was, until := st.Armed, st.Until
			var fire bool
			st, fire = st.apply(now, cl.req.Op, time.Duration(cl.req.UntilNS))
			if fire {
				if !was || now < until {
					until = time.Duration(cl.req.UntilNS) // the arm that was already past
				}
				doFence(until)
			}
			switch {
			case !was && st.Armed:
				s.log.Info("armed", "until", st.Until, "in", st.Until-now)
			case was && !st.Armed && cl.req.Op == opDisarm:
				s.log.Info("disarmed")
			}
			tend(now)
			cl.reply <- response{V: wireVersion, Status: status(Now())}
		case <-timer.C:
		}
		// Since Go 1.23 a stopped timer delivers nothing stale.
		timer.Stop()
	}
}
