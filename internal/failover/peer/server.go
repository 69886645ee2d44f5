package peer

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// DefaultHandleTimeout bounds one call of ServerConfig.Handle unless set.
const DefaultHandleTimeout = time.Second

// Timeouts of the server's connections: a request is a few hundred bytes,
// so anything slower is a broken or hostile client.
const (
	readTimeout     = 2 * time.Second // TLS handshake, headers and body
	idleTimeout     = time.Minute     // between requests of a kept-alive connection
	maxHeaderBytes  = 8 << 10
	shutdownTimeout = time.Second
)

// ServerConfig configures a Server.
type ServerConfig struct {
	Identity Identity
	// Cluster is the failover cluster this agent is a member of.
	Cluster string
	// Trusted maps a client's nkey public key to the member node holding
	// it; ok is false for any key that is not a current member's. It is
	// asked in the TLS handshake and again on every request (a connection
	// kept alive outlives a membership), from many goroutines at once.
	Trusted func(pub string) (node string, ok bool)
	// Handle decides on an authenticated request of member from (the node
	// of the client's key, equal to req.From, for this Cluster). Its ctx
	// ends after HandleTimeout, when the client goes away or the server
	// stops; Handle must return promptly then. It is called from many
	// goroutines at once.
	Handle func(ctx context.Context, from string, req Request) Response
	// HandleTimeout bounds one call of Handle (DefaultHandleTimeout if 0).
	HandleTimeout time.Duration
	Log           *slog.Logger
}

// Validate names the field that is missing.
func (c ServerConfig) Validate() error {
	switch {
	case !c.Identity.valid():
		return fmt.Errorf("peer: server: Identity: %w", ErrNoIdentity)
	case c.Cluster == "":
		return errors.New("peer: server: Cluster is required")
	case c.Trusted == nil:
		return errors.New("peer: server: Trusted is required")
	case c.Handle == nil:
		return errors.New("peer: server: Handle is required")
	case c.HandleTimeout < 0:
		return errors.New("peer: server: HandleTimeout must not be negative")
	}
	return nil
}

// Server answers the promise requests of the other members.
type Server struct {
	cfg   ServerConfig
	log   *slog.Logger
	tls   *tls.Config
	stats serverCounters
}

// ServerStats counts the requests a server saw.
type ServerStats struct {
	Granted uint64 // promises given
	Refused uint64 // promises refused by Handle
	// RejectedAuth: connections or requests refused for their key (not a
	// member's in the handshake or any more, or not the node of From).
	RejectedAuth uint64
	// BadRequests: authenticated requests refused as malformed (path,
	// method, type, size, version, cluster).
	BadRequests uint64
	Pings       uint64
}

type serverCounters struct {
	granted, refused, rejectedAuth, badRequests, pings atomic.Uint64
}

// NewServer checks cfg and builds the server's TLS configuration.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.HandleTimeout == 0 {
		cfg.HandleTimeout = DefaultHandleTimeout
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log}
	s.tls = serverTLS(cfg.Identity, cfg.Trusted, func() { s.stats.rejectedAuth.Add(1) })
	return s, nil
}

// Stats returns the server's counters.
func (s *Server) Stats() ServerStats {
	return ServerStats{Granted: s.stats.granted.Load(), Refused: s.stats.refused.Load(),
		RejectedAuth: s.stats.rejectedAuth.Load(), BadRequests: s.stats.badRequests.Load(), Pings: s.stats.pings.Load()}
}

// Serve answers TLS connections on ln until ctx ends, then stops: it closes
// ln, waits a moment for requests under way (their contexts are cancelled)
// and closes every connection. It returns nil when ctx ended, else the
// listener's error.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	var protocols http.Protocols
	protocols.SetHTTP1(true) // one short request at a time: no HTTP/2
	hs := &http.Server{
		Handler:           s,
		TLSConfig:         s.tls,
		Protocols:         &protocols,
		ReadHeaderTimeout: readTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      readTimeout + s.cfg.HandleTimeout + time.Second,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		// Refused handshakes (an untrusted key, plain HTTP) are logged here.
		ErrorLog:    slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.ServeTLS(ln, "", "") }()
	select {
	case err := <-errc:
		return fmt.Errorf("peer: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		_ = hs.Close()
	}
	<-errc
	return nil
}

// ServeHTTP authenticates the client's key again (a kept-alive connection
// may outlive the membership), then routes strictly by path and method.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil {
		s.stats.rejectedAuth.Add(1)
		s.fail(w, http.StatusForbidden, CodeUntrusted, "TLS is required")
		return
	}
	pub, err := peerKey(*r.TLS)
	if err != nil {
		s.stats.rejectedAuth.Add(1)
		s.fail(w, http.StatusForbidden, CodeUntrusted, err.Error())
		return
	}
	node, ok := s.cfg.Trusted(pub)
	if !ok || node == "" {
		s.stats.rejectedAuth.Add(1)
		s.log.Warn("refused a request from a key that is no longer a member", "key", pub, "remote", r.RemoteAddr)
		s.fail(w, http.StatusForbidden, CodeUntrusted, "key "+pub+" is not a member of this cluster")
		return
	}
	var method string
	var serve func(http.ResponseWriter, *http.Request, string, string)
	switch r.URL.Path {
	case PathPromise:
		method, serve = http.MethodPost, s.promise
	case PathPing:
		method, serve = http.MethodGet, s.ping
	default:
		s.stats.badRequests.Add(1)
		s.fail(w, http.StatusNotFound, CodeNotFound, "no such path: "+r.URL.Path)
		return
	}
	if r.Method != method {
		s.stats.badRequests.Add(1)
		w.Header().Set("Allow", method)
		s.fail(w, http.StatusMethodNotAllowed, CodeMethodNotAllowed, r.URL.Path+" takes "+method)
		return
	}
	serve(w, r, pub, node)
}

func (s *Server) ping(w http.ResponseWriter, _ *http.Request, _, _ string) {
	s.stats.pings.Add(1)
	writeJSON(w, http.StatusOK, Pong{V: Version, Cluster: s.cfg.Cluster})
}

func (s *Server) promise(w http.ResponseWriter, r *http.Request, pub, node string) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		s.stats.badRequests.Add(1)
		s.fail(w, http.StatusUnsupportedMediaType, CodeUnsupportedType, "the body must be application/json")
		return
	}
	if r.ContentLength > MaxBody {
		s.stats.badRequests.Add(1)
		s.fail(w, http.StatusRequestEntityTooLarge, CodeTooLarge, fmt.Sprintf("the body is over %d bytes", MaxBody))
		return
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		s.stats.badRequests.Add(1)
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			s.fail(w, http.StatusRequestEntityTooLarge, CodeTooLarge, fmt.Sprintf("the body is over %d bytes", MaxBody))
			return
		}
		s.fail(w, http.StatusBadRequest, CodeBadRequest, "reading the body: "+err.Error())
		return
	}
	var req Request
	if err := json.Unmarshal(b, &req); err != nil {
		s.stats.badRequests.Add(1)
		s.fail(w, http.StatusBadRequest, CodeBadRequest, "not a promise request: "+err.Error())
		return
	}
	if req.V != Version {
		s.stats.badRequests.Add(1)
		s.fail(w, http.StatusBadRequest, CodeBadVersion, fmt.Sprintf("request version %d; this agent reads %d", req.V, Version))
		return
	}
	if req.From != node {
		s.stats.rejectedAuth.Add(1)
		s.log.Warn("refused a request claiming another member", "key", pub, "node", node, "from", req.From)
		s.fail(w, http.StatusForbidden, CodeWrongFrom, fmt.Sprintf("key %s is member %q, not %q", pub, node, req.From))
		return
	}
	if req.Cluster != s.cfg.Cluster {
		s.stats.badRequests.Add(1)
		s.fail(w, http.StatusConflict, CodeWrongCluster, fmt.Sprintf("this is cluster %q, not %q", s.cfg.Cluster, req.Cluster))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.HandleTimeout)
	resp := s.cfg.Handle(ctx, node, req)
	cancel()
	resp = normalize(resp)
	if resp.Granted {
		s.stats.granted.Add(1)
	} else {
		s.stats.refused.Add(1)
	}
	writeJSON(w, http.StatusOK, resp)
}

// normalize makes a Response what the wire can carry: a grant of at least
// a millisecond (less is none), at most maxLease (a shorter promise than
// the handler's is always safe), no lease without a grant.
func normalize(r Response) Response {
	switch {
	case !r.Granted:
		r.Lease = 0
	case r.Lease < time.Millisecond:
		r = Response{Reason: "lease under a millisecond: " + r.Reason}
	case r.Lease > maxLease:
		r.Lease = maxLease
	}
	return r
}

func (s *Server) fail(w http.ResponseWriter, status int, code Code, reason string) {
	writeJSON(w, status, ErrorBody{V: Version, Code: code, Reason: reason})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
