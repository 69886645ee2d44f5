package mesh

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
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
	// TLS: a CA bundle to verify the server, and an optional client
	// certificate and key.
	CAFile, CertFile, KeyFile string
	// ReconnectWait is the base pause between reconnect attempts; nats.go
	// adds jitter. Reconnection never gives up.
	ReconnectWait time.Duration
	Logger        *slog.Logger
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
	wait := cfg.ReconnectWait
	if wait <= 0 {
		wait = 250 * time.Millisecond
	}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(wait),
		nats.ReconnectJitter(wait/2, wait/2),
		nats.RetryOnFailedConnect(true),
		nats.PingInterval(5 * time.Second),
		nats.MaxPingsOutstanding(2),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: we closed it ourselves
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("nats reconnected", "url", c.ConnectedUrlRedacted())
		}),
	}
	if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.CAFile != "" {
		opts = append(opts, nats.RootCAs(cfg.CAFile))
	}
	if cfg.CertFile != "" || cfg.KeyFile != "" {
		opts = append(opts, nats.ClientCert(cfg.CertFile, cfg.KeyFile))
	}
	url := strings.Join(cfg.URLs, ",")
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
