package mesh

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// ClientConfig describes a client connection to NATS.
type ClientConfig struct {
	// Name shows up in the server's connection list.
	Name string
	// URLs of NATS servers; several for a cluster.
	URLs []string
	// InProcess, when set, connects through memory to an embedded server
	// instead of dialing URLs.
	InProcess *Server
	// CredsFile is a NATS credentials file (JWT and nkey seed).
	CredsFile string
	// NkeySeedFile holds the nkey seed of a server-side nkey user (a
	// device identity); InboxPrefix replaces "_INBOX" for replies, which
	// such an identity may receive only under its own prefix
	// (DeviceInboxPrefix).
	NkeySeedFile string
	InboxPrefix  string
	// Nkey is an identity held in memory instead (the server's own
	// connection to its embedded NATS).
	Nkey nkeys.KeyPair
	// TLS: a CA bundle to verify the server, and an optional client
	// certificate and key.
	CAFile, CertFile, KeyFile string
	// ReconnectWait is the first pause between reconnect attempts; each
	// further attempt waits ReconnectMultiplier times longer, up to
	// ReconnectMax, randomized by +/- ReconnectJitter (a fraction).
	// Reconnection never gives up.
	ReconnectWait       time.Duration
	ReconnectMax        time.Duration
	ReconnectMultiplier float64
	ReconnectJitter     float64
	// Spread, when set, is the window over which this client spreads its
	// reconnections (what the control plane advertises, growing with the
	// fleet): the first attempt after a disconnection waits a random pause
	// from 0 to the window, and every later one the longer of its backoff
	// and such a pause, so that a fleet that lost its server comes back at
	// a steady rate rather than all at once. Attempts go to the server the
	// client has tried least (ties at random).
	Spread func() time.Duration
	// PingInterval: a connection that answers no ping for two intervals is
	// declared dead and re-established (a blackholed link is noticed).
	PingInterval time.Duration
	// OnDisconnect and OnReconnect observe the connection (metrics);
	// OnReconnect also fires when a first connection succeeds late.
	OnDisconnect, OnReconnect func()
	Logger                    *slog.Logger
}

// ConnectTimeout bounds one connection attempt: dial, TLS handshake and
// the first exchange with the server.
const ConnectTimeout = 5 * time.Second

// ReconnectDelay is the pause before reconnect attempt n (1-based).
func (cfg ClientConfig) ReconnectDelay(n int) time.Duration {
	d := float64(cfg.ReconnectWait)
	for i := 1; i < n && d < float64(cfg.ReconnectMax); i++ {
		d *= cfg.ReconnectMultiplier
	}
	d = min(d, float64(cfg.ReconnectMax))
	d *= 1 + cfg.ReconnectJitter*(2*rand.Float64()-1)
	return time.Duration(d)
}

// reconnectTo picks the server of the next reconnection attempt and the
// pause before it (ClientConfig.Spread).
func (cfg ClientConfig) reconnectTo(servers []nats.Server, _ nats.ServerInfo) (*nats.Server, time.Duration) {
	if len(servers) == 0 {
		return nil, cfg.ReconnectDelay(1)
	}
	pick, least := 0, servers[0].Reconnects
	ties := 1
	for i := 1; i < len(servers); i++ {
		switch r := servers[i].Reconnects; {
		case r < least:
			pick, least, ties = i, r, 1
		case r == least:
			ties++
			if rand.IntN(ties) == 0 {
				pick = i
			}
		}
	}
	var spread time.Duration
	if cfg.Spread != nil {
		spread = cfg.Spread()
	}
	pause := time.Duration(0)
	if spread > 0 {
		pause = time.Duration(rand.Int64N(int64(spread)))
	}
	if least > 0 { // every server was tried since the disconnection
		pause = max(pause, cfg.ReconnectDelay(least))
	}
	return &servers[pick], pause
}

// Connect opens a connection that reconnects forever. The initial connection
// is retried in the background when the servers are unreachable, so callers
// can start working from local state and catch up later (the returned
// connection reports IsConnected() false until then).
func Connect(cfg ClientConfig) (*nats.Conn, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.ReconnectWait <= 0 {
		cfg.ReconnectWait = 250 * time.Millisecond
	}
	if cfg.ReconnectMax < cfg.ReconnectWait {
		cfg.ReconnectMax = cfg.ReconnectWait
	}
	if cfg.ReconnectMultiplier < 1 {
		cfg.ReconnectMultiplier = 1
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = 5 * time.Second
	}
	// Why a (re)connection attempt failed (a refused port, a certificate
	// the agent does not trust) is said once per distinct reason, not at
	// every attempt.
	var (
		failMu   sync.Mutex
		lastFail string
	)
	// connectedTo names the server a connection reached, for the log. An
	// in-process connection dials no URL: nats.go reports its default,
	// nats://127.0.0.1:4222, whatever address the server listens on.
	connectedTo := func(c *nats.Conn) string {
		if cfg.InProcess != nil {
			return "in-process"
		}
		return c.ConnectedUrlRedacted()
	}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		// nats.go closes a connection for good when a server refuses its
		// credentials twice in a row. A device that is not yet (or no
		// longer) enrolled, or a server that has not loaded the identities
		// yet after a restart, must not end an agent's connection forever.
		nats.IgnoreAuthErrorAbort(),
		// Every attempt's server and pause (reconnectTo; the library's
		// own delay is never used, since the hook always names a server).
		nats.ReconnectToServer(cfg.reconnectTo),
		// Dial, TLS handshake and the first exchange: a server admitting a
		// reconnecting fleet may take a few seconds to finish a handshake
		// it started; giving up at nats.go's 2 s would waste it and retry.
		nats.Timeout(ConnectTimeout),
		nats.RetryOnFailedConnect(true),
		nats.PingInterval(cfg.PingInterval),
		nats.MaxPingsOutstanding(2),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: we closed it ourselves
				log.Warn("nats disconnected", "err", err)
				if cfg.OnDisconnect != nil {
					cfg.OnDisconnect()
				}
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			// A watch's consumer that missed heartbeats (the server went
			// away) is re-created by the library: not worth a warning.
			if errors.Is(err, nats.ErrConsumerNotActive) {
				log.Debug("nats: consumer not active", "subject", subject)
				return
			}
			// A refused identity (not enrolled yet, revoked, rotated
			// elsewhere) comes back at every attempt: said once.
			if errors.Is(err, nats.ErrAuthorization) {
				failMu.Lock()
				same := err.Error() == lastFail
				lastFail = err.Error()
				failMu.Unlock()
				if !same {
					log.Warn("nats refused this identity (not enrolled, or revoked); retrying", "err", err)
				}
				return
			}
			log.Warn("nats async error", "err", err, "subject", subject)
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			failMu.Lock()
			same := err.Error() == lastFail
			lastFail = err.Error()
			failMu.Unlock()
			if same {
				log.Debug("nats connection attempt failed", "err", err)
				return
			}
			log.Warn("nats connection attempt failed; retrying", "err", err)
		}),
		nats.ConnectHandler(func(c *nats.Conn) {
			// The first connection, when it came after retries.
			log.Info("nats connected", "url", connectedTo(c))
			if cfg.OnReconnect != nil {
				cfg.OnReconnect()
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			failMu.Lock()
			lastFail = ""
			failMu.Unlock()
			log.Info("nats reconnected", "url", connectedTo(c))
			if cfg.OnReconnect != nil {
				cfg.OnReconnect()
			}
		}),
	}
	if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.NkeySeedFile != "" {
		o, err := nats.NkeyOptionFromSeed(cfg.NkeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("mesh: nkey seed %s: %w", cfg.NkeySeedFile, err)
		}
		opts = append(opts, o)
	}
	if cfg.Nkey != nil {
		pub, err := cfg.Nkey.PublicKey()
		if err != nil {
			return nil, fmt.Errorf("mesh: nkey: %w", err)
		}
		opts = append(opts, nats.Nkey(pub, cfg.Nkey.Sign))
	}
	if cfg.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(cfg.InboxPrefix))
	}
	if cfg.CAFile != "" {
		opts = append(opts, nats.RootCAs(cfg.CAFile))
	}
	if cfg.CertFile != "" || cfg.KeyFile != "" {
		opts = append(opts, nats.ClientCert(cfg.CertFile, cfg.KeyFile))
	}
	url := strings.Join(cfg.URLs, ",")
	if cfg.InProcess == nil {
		opts = append(opts, nats.SetCustomDialer(dialer()))
	}
	if cfg.InProcess != nil {
		opts = append(opts, nats.InProcessServer(cfg.InProcess.ns))
		url = ""
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("mesh: connect %s: %w", url, err)
	}
	if !nc.IsConnected() {
		// The first attempt failed; nats.go keeps trying in the background.
		log.Warn("nats not reachable yet; retrying in the background", "urls", url)
	}
	return nc, nil
}
