// Package mesh starts the embedded NATS JetStream server and opens client
// connections to it or to an external NATS cluster. Reading and writing
// buckets is package store's job; this package knows bucket subjects only
// to say what a device's identity may touch (permissions.go).
package mesh

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// ServerConfig describes one embedded NATS server.
type ServerConfig struct {
	// Name identifies the server in a cluster; required when clustered.
	Name string
	// DataDir holds JetStream's file storage (in DataDir/jetstream).
	DataDir string
	// Listen is the client address, host:port. Port 0 picks a free port;
	// an empty Listen accepts in-process connections only.
	Listen string
	// SyncAlways makes the server fsync every write before acknowledging it.
	// See docs/adr/0002-durability.md: Harmony turns it on.
	SyncAlways bool
	// ClusterName, ClusterListen and Routes form a JetStream cluster when
	// ClusterName is set: every member lists the route URLs of all members.
	ClusterName   string
	ClusterListen string
	Routes        []string
	// ClusterAdvertise is the route address given to the other members
	// ("" = ClusterListen); ClientAdvertise the client address given to
	// clients ("" = Listen); NoAdvertise keeps the other members' client
	// addresses from clients.
	ClusterAdvertise string
	ClientAdvertise  string
	NoAdvertise      bool
	// LameDuck bounds a clustered server's graceful stop: it stops taking
	// clients, hands its stream leaderships to the other members, and
	// closes its client connections spread over this time so that they
	// move to the other members without a storm (default 3s).
	LameDuck time.Duration
	// ReadyTimeout bounds the wait for the server to accept connections.
	ReadyTimeout time.Duration
	// Logger receives the server's log lines (discarded when nil).
	Logger *slog.Logger
	// TLS, when set, is required of every client connection (in-process
	// connections excepted). Routes between cluster members stay plain.
	TLS *tls.Config
	// Nkeys, when not nil, are the only identities that may connect, each
	// with its permissions (DevicePermissions for a device); SetUsers
	// replaces them.
	Nkeys []*server.NkeyUser
	// MaxConnsPerDevice caps the open connections of one device identity
	// (one whose permissions are limited); a further connection is refused
	// until one closes (DefaultMaxConnsPerDevice when 0).
	MaxConnsPerDevice int
	// ListenLater keeps the client listener closed until Listen is called
	// (in-process connections work meanwhile; a clustered server listens
	// at once, since nats-server starts routes after the client
	// listener): a
	// restarted control plane opens it once it can tell its devices'
	// identities apart, so that a reconnecting fleet is refused cheaply
	// (connection refused) rather than handshaking only to fail
	// authentication.
	ListenLater bool
	// MaxConnections caps all client connections (0: what the process's
	// open-files limit leaves after a reserve for JetStream's files and
	// the HTTP listener; see connectionLimit).
	MaxConnections int
	// TLSHandshakes caps the TLS handshakes the server starts per second
	// (DefaultTLSHandshakes when 0): beyond, a connection is refused at
	// once, before any handshake work, and its client tries again after
	// its pause. A fleet reconnecting all at once is then admitted at a
	// rate the server completes, instead of every handshake slowing down
	// until clients give up on them and retry (a collapse: 10,000 agents
	// connecting at once never got online without it).
	TLSHandshakes int
	// HybridKeyExchange offers clients the post-quantum X25519MLKEM768 key
	// exchange first; without it the server takes X25519 (or P-256),
	// which costs it about half the CPU per handshake.
	HybridKeyExchange bool
}

// DefaultTLSHandshakes is the TLS handshakes a server starts per second
// unless told otherwise.
const DefaultTLSHandshakes = 1000

// DefaultMaxConnsPerDevice: an agent holds one connection; a few more
// cover a reconnection while the server has not yet seen the old one
// close (a half-open TCP connection lives until its pings go unanswered).
const DefaultMaxConnsPerDevice = 8

// MaxSubscriptionsPerConnection caps the subscriptions of any one client
// connection of the embedded server.
const MaxSubscriptionsPerConnection = 10_000

// Server is a running embedded NATS server.
type Server struct {
	ns  *server.Server
	cfg ServerConfig

	auth    *nkeyAuth // nil unless ServerConfig.Nkeys is set
	maxConn int

	listenMu sync.Mutex
	listened bool
}

// deferListen: ListenLater applies to a server that listens for clients
// and is not clustered (nats-server starts its routes only once the client
// listener is up, and a cluster member's store needs its routes before it
// can load anything).
func (cfg ServerConfig) deferListen() bool {
	return cfg.ListenLater && cfg.Listen != "" && cfg.ClusterName == ""
}

// Listen opens the client listener of a server started with ListenLater
// (once; a no-op otherwise) and returns when it accepts connections.
func (s *Server) Listen() error {
	s.listenMu.Lock()
	defer s.listenMu.Unlock()
	if !s.cfg.deferListen() || s.listened {
		return nil
	}
	ready := make(chan struct{})
	go s.ns.AcceptLoop(ready)
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		return fmt.Errorf("mesh: client listener on %s not open after 30s", s.cfg.Listen)
	}
	if s.ns.Addr() == nil {
		return fmt.Errorf("mesh: cannot listen for clients on %s (in use?)", s.cfg.Listen)
	}
	s.listened = true
	return nil
}

var errNoAuth = errors.New("mesh: the server was started without identities (ServerConfig.Nkeys)")

// StartServer starts an embedded NATS server with JetStream and waits until it
// accepts client connections. Stop it with Shutdown.
func StartServer(cfg ServerConfig) (*Server, error) {
	opts, err := serverOptions(cfg)
	if err != nil {
		return nil, err
	}
	var auth *nkeyAuth
	if cfg.Nkeys != nil {
		per := cfg.MaxConnsPerDevice
		if per <= 0 {
			per = DefaultMaxConnsPerDevice
		}
		auth = newNkeyAuth(cfg.Nkeys, per)
		opts.CustomClientAuthentication = auth
		opts.AlwaysEnableNonce = true
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("mesh: nats server: %w", err)
	}
	if cfg.Logger != nil {
		ns.SetLoggerV2(newSlogAdapter(cfg.Logger), false, false, false)
	}
	if auth != nil {
		auth.ns = ns
	}
	ns.Start()
	wait := cfg.ReadyTimeout
	if wait <= 0 {
		wait = 30 * time.Second
	}
	if !ns.ReadyForConnections(wait) {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("mesh: nats server not ready after %s (is %s in use?)", wait, cfg.Listen)
	}
	if !ns.JetStreamEnabled() && cfg.ClusterName == "" {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, errors.New("mesh: jetstream did not start")
	}
	return &Server{ns: ns, cfg: cfg, auth: auth, maxConn: opts.MaxConn}, nil
}

func serverOptions(cfg ServerConfig) (*server.Options, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("mesh: data dir is required")
	}
	opts := &server.Options{
		ServerName: cfg.Name,
		JetStream:  true,
		StoreDir:   cfg.DataDir,
		SyncAlways: cfg.SyncAlways,
		NoSigs:     true,
		NoLog:      cfg.Logger == nil,
		MaxPayload: 8 << 20,
		MaxConn:    cfg.MaxConnections,
		// Subscriptions per connection: an agent holds a handful, the
		// control plane's own connections some hundreds at most; each
		// costs the server about 0.7 KiB, so a device opening millions on
		// its inbox prefix would take its memory.
		MaxSubs: MaxSubscriptionsPerConnection,
	}
	if opts.MaxConn <= 0 {
		opts.MaxConn = connectionLimit()
	}
	opts.ClientAdvertise = cfg.ClientAdvertise
	if cfg.TLS != nil {
		// The handshake rate limit has no Options field of its own that
		// works without a configuration file (nats-server reads it from
		// the parsed tls block): parse one, then put our TLS in place.
		rate := cfg.TLSHandshakes
		if rate <= 0 {
			rate = DefaultTLSHandshakes
		}
		if err := opts.ProcessConfigString(fmt.Sprintf("tls { connection_rate_limit: %d }", rate)); err != nil {
			return nil, fmt.Errorf("mesh: TLS handshake limit: %w", err)
		}
		opts.TLSConfig = cfg.TLS.Clone()
		if !cfg.HybridKeyExchange {
			opts.TLSConfig.CurvePreferences = []tls.CurveID{tls.X25519, tls.CurveP256}
		}
		opts.TLS = true
		opts.TLSTimeout = 5
	}
	if cfg.Listen == "" {
		opts.DontListen = true
	} else {
		host, port, err := splitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("mesh: listen address %q: %w", cfg.Listen, err)
		}
		opts.Host, opts.Port = host, port
		if port == 0 {
			opts.Port = server.RANDOM_PORT
		}
	}
	if cfg.deferListen() {
		opts.DontListen = true // until Listen
	}
	if cfg.ClusterName != "" {
		if cfg.Name == "" {
			return nil, errors.New("mesh: a clustered server needs a name")
		}
		host, port, err := splitHostPort(cfg.ClusterListen)
		if err != nil {
			return nil, fmt.Errorf("mesh: cluster listen address %q: %w", cfg.ClusterListen, err)
		}
		opts.Cluster = server.ClusterOpts{Name: cfg.ClusterName, Host: host, Port: port,
			Advertise: cfg.ClusterAdvertise, NoAdvertise: cfg.NoAdvertise}
		opts.LameDuckDuration = cfg.LameDuck
		if opts.LameDuckDuration <= 0 {
			opts.LameDuckDuration = 3 * time.Second
		}
		opts.LameDuckGracePeriod = opts.LameDuckDuration / 6
		for _, r := range cfg.Routes {
			if !strings.Contains(r, "://") {
				r = "nats-route://" + r
			}
			u, err := url.Parse(r)
			if err != nil {
				return nil, fmt.Errorf("mesh: route %q: %w", r, err)
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	return opts, nil
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("port %q is not a number from 0 to 65535", p)
	}
	return host, port, nil
}

// ClientURL is the URL clients connect to ("" when the server listens for
// in-process connections only).
func (s *Server) ClientURL() string {
	if s.cfg.Listen == "" {
		return ""
	}
	return s.ns.ClientURL()
}

// NATS exposes the server for in-process connections and for tests that
// inspect cluster state (stream leaders).
func (s *Server) NATS() *server.Server { return s.ns }

// Shutdown stops the server and waits until it has stopped. A clustered
// server goes through lame-duck mode first: its stream leaderships move to
// the other members before it stops, so that their streams stay writable
// instead of waiting out an election (4 to 9 s in nats-server), and its
// clients are moved off gradually.
func (s *Server) Shutdown() {
	if s.cfg.ClusterName != "" && s.cfg.Listen != "" {
		s.ns.LameDuckShutdown()
	}
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

// slogAdapter feeds nats-server's logger interface into slog. Lines about
// one client connection ("IP:port - cid:N - ...": a failed handshake, a
// refused identity, a slow consumer) are rate-limited: in a reconnection
// storm they come by the tens of thousands, and writing each to a slow
// log reader (a busy journald) would stall the server. What is left out
// is counted and said in one line.
type slogAdapter struct {
	l     *slog.Logger
	conns *lineLimiter
}

func newSlogAdapter(l *slog.Logger) *slogAdapter {
	return &slogAdapter{l: l, conns: &lineLimiter{every: 10 * time.Second, burst: 20}}
}

func (a *slogAdapter) Noticef(format string, v ...any) { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Warnf(format string, v ...any)   { a.log(slog.LevelWarn, format, v) }
func (a *slogAdapter) Fatalf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Errorf(format string, v ...any)  { a.log(slog.LevelError, format, v) }
func (a *slogAdapter) Debugf(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Tracef(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }

func (a *slogAdapter) log(level slog.Level, format string, v []any) {
	msg := fmt.Sprintf(format, v...)
	if !strings.Contains(msg, " - cid:") {
		a.l.Log(context.Background(), level, msg)
		return
	}
	ok, dropped := a.conns.allow(time.Now())
	if dropped > 0 {
		a.l.Warn("client connection messages left out of the log (too many)", "count", dropped, "window", a.conns.every)
	}
	if ok {
		a.l.Log(context.Background(), level, msg)
	}
}

// lineLimiter lets burst lines through per window and counts the rest;
// the count is handed out (once) with the first call of the next window.
type lineLimiter struct {
	every time.Duration
	burst int

	mu      sync.Mutex
	start   time.Time
	n       int
	dropped int
}

func (l *lineLimiter) allow(now time.Time) (ok bool, dropped int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.start) >= l.every {
		dropped, l.dropped = l.dropped, 0
		l.start, l.n = now, 0
	}
	if l.n < l.burst {
		l.n++
		return true, dropped
	}
	l.dropped++
	return false, dropped
}

// connectionLimit is how many client connections the server takes: what
// the open-files limit leaves once a reserve is kept for JetStream's files,
// the HTTP listener and the process's own (a tenth of the limit, at least
// 512), and never more than nats-server's default. Past it a connection is
// refused at once instead of failing accept(2) for everything else too.
func connectionLimit() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == 0 {
		return server.DEFAULT_MAX_CONNECTIONS
	}
	limit := int64(rl.Cur)
	if rl.Cur > 1<<40 {
		limit = 1 << 40
	}
	n := limit - max(512, limit/10)
	if n < 64 {
		n = 64
	}
	return int(min(n, int64(server.DEFAULT_MAX_CONNECTIONS)))
}

// MaxConnections is the cap on client connections in force.
func (s *Server) MaxConnections() int { return s.maxConn }
