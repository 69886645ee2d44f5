package mesh

import (
	"net"
	"time"
)

// Dead links are noticed by the kernel as well as by NATS pings: TCP
// keepalives probe a link that has been quiet for KeepAliveIdle, and data
// left unacknowledged for UserTimeout (Linux) ends the connection. The
// kernels answer the probes, so a server pays nothing for them in its own
// process, whatever the fleet's size; pings (ClientConfig.PingInterval)
// remain for what only they see: a server process that stopped answering
// while its host still does, or a proxy between the two.
const (
	KeepAliveIdle     = 5 * time.Second
	KeepAliveInterval = 2 * time.Second
	KeepAliveCount    = 3
	UserTimeout       = 20 * time.Second
)

// dialer dials every connection a client makes.
func dialer() *net.Dialer {
	return &net.Dialer{
		Timeout: ConnectTimeout,
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: KeepAliveIdle,
			Interval: KeepAliveInterval, Count: KeepAliveCount},
		Control: userTimeout,
	}
}
