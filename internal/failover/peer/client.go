package peer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nkeys"
)

// DefaultAskTimeout bounds a request whose ctx has no deadline; the
// failover loop gives each its own, much shorter one.
const DefaultAskTimeout = 2 * time.Second

// Client asks peers for promises. It keeps one connection pool per peer
// key, so connections are kept alive between calls and a pool only ever
// talks to servers holding its key. Safe for concurrent use.
type Client struct {
	id Identity

	mu     sync.Mutex
	pools  map[string]*http.Transport // by pinned peer key
	closed bool

	granted, refused, errs atomic.Uint64
}

// ClientStats counts the asks of a client.
type ClientStats struct {
	Granted uint64 // answered with a promise
	Refused uint64 // answered without one
	Errors  uint64 // no answer: network, TLS, pinning, refusal (*StatusError), bad response, ctx
}

// NewClient returns a client presenting id.
func NewClient(id Identity) *Client {
	return &Client{id: id, pools: map[string]*http.Transport{}}
}

// Stats returns the client's counters.
func (c *Client) Stats() ClientStats {
	return ClientStats{Granted: c.granted.Load(), Refused: c.refused.Load(), Errors: c.errs.Load()}
}

// Ask sends one promise request to the peer at addr (host:port), which must
// present peerKey. ctx bounds the whole exchange (DefaultAskTimeout when it
// has no deadline). req.V is set by Ask. Any error means no promise:
// *KeyError (another key answered), *StatusError (the peer refused the
// request), ErrBadResponse, ErrClosed, ctx's error or a network error.
func (c *Client) Ask(ctx context.Context, addr, peerKey string, req Request) (Response, error) {
	req.V = Version
	body, err := json.Marshal(req)
	if err != nil {
		return Response{}, c.failed(fmt.Errorf("peer: encode request: %w", err))
	}
	var resp Response
	if err := c.do(ctx, http.MethodPost, addr, peerKey, PathPromise, body, &resp); err != nil {
		return Response{}, c.failed(err)
	}
	if resp.Granted {
		c.granted.Add(1)
	} else {
		c.refused.Add(1)
	}
	return resp, nil
}

// Ping checks that the peer at addr, holding peerKey, answers and accepts
// this client's key. It does not count in Stats.
func (c *Client) Ping(ctx context.Context, addr, peerKey string) (Pong, error) {
	var p Pong
	if err := c.do(ctx, http.MethodGet, addr, peerKey, PathPing, nil, &p); err != nil {
		return Pong{}, err
	}
	if p.V != Version {
		return Pong{}, fmt.Errorf("%w: pong version %d; this agent reads %d", ErrBadResponse, p.V, Version)
	}
	return p, nil
}

// Forget closes the idle connections to the peer holding key and drops its
// pool (a member that left).
func (c *Client) Forget(key string) {
	c.mu.Lock()
	t := c.pools[key]
	delete(c.pools, key)
	c.mu.Unlock()
	if t != nil {
		t.CloseIdleConnections()
	}
}

// Close closes every idle connection; connections in use close when their
// request ends. Later calls fail with ErrClosed.
func (c *Client) Close() {
	c.mu.Lock()
	pools := c.pools
	c.pools, c.closed = nil, true
	c.mu.Unlock()
	for _, t := range pools {
		// Also marks t so that connections still in use are closed, not
		// kept, when their request ends.
		t.CloseIdleConnections()
	}
}

func (c *Client) failed(err error) error {
	c.errs.Add(1)
	return err
}

func (c *Client) do(ctx context.Context, method, addr, peerKey, path string, body []byte, into any) error {
	if !c.id.valid() {
		return ErrNoIdentity
	}
	if !nkeys.IsValidPublicUserKey(peerKey) {
		return fmt.Errorf("peer: %q is not an nkey user public key (U...)", peerKey)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("peer: address %q: %w", addr, err)
	}
	t, err := c.pool(peerKey)
	if err != nil {
		return err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultAskTimeout)
		defer cancel()
	}
	u := url.URL{Scheme: "https", Host: addr, Path: path}
	hreq, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("peer: %w", err)
	}
	if body != nil {
		hreq.Header.Set("Content-Type", "application/json")
	}
	hreq.Header.Set("Accept", "application/json")
	hresp, err := t.RoundTrip(hreq)
	if err != nil {
		return fmt.Errorf("peer: %s %s: %w", addr, path, err)
	}
	defer hresp.Body.Close()
	// Read one byte more than allowed to tell a full body from a cut one;
	// reading to the end lets the connection be reused.
	b, err := io.ReadAll(io.LimitReader(hresp.Body, MaxBody+1))
	if err != nil {
		return fmt.Errorf("peer: %s %s: reading the answer: %w", addr, path, err)
	}
	if len(b) > MaxBody {
		return fmt.Errorf("%w: %s %s: answer over %d bytes", ErrBadResponse, addr, path, MaxBody)
	}
	if hresp.StatusCode != http.StatusOK {
		var eb ErrorBody
		if json.Unmarshal(b, &eb) != nil || eb.Code == "" {
			eb = ErrorBody{Reason: http.StatusText(hresp.StatusCode)}
		}
		return &StatusError{Status: hresp.StatusCode, Code: eb.Code, Reason: eb.Reason}
	}
	if err := json.Unmarshal(b, into); err != nil {
		return fmt.Errorf("%w: %s %s: %w", ErrBadResponse, addr, path, err)
	}
	// An answer that came in as the deadline passed is not taken: past
	// its deadline a call fails, whatever raced with the cancellation.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("peer: %s %s: %w", addr, path, err)
	}
	return nil
}

// maxIdlePerPeer is how many idle connections a client keeps to one peer:
// the failover loop asks each peer once at a time, a few more cover
// overlapping asks without a handshake each.
const maxIdlePerPeer = 8

// pool is the transport pinned to key, made on first use.
func (c *Client) pool(key string) (*http.Transport, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if t := c.pools[key]; t != nil {
		return t, nil
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	d := &net.Dialer{KeepAlive: 15 * time.Second}
	t := &http.Transport{
		Proxy:                  nil, // never through a proxy: peers are on the members' network
		DialContext:            d.DialContext,
		TLSClientConfig:        clientTLS(c.id, key),
		Protocols:              &protocols,
		TLSHandshakeTimeout:    DefaultAskTimeout,
		MaxIdleConnsPerHost:    maxIdlePerPeer,
		IdleConnTimeout:        idleTimeout / 2, // before the server's, so the client closes first
		MaxResponseHeaderBytes: maxHeaderBytes,
		DisableCompression:     true,
	}
	c.pools[key] = t
	return t, nil
}
