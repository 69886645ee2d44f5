// Package netproxy is a TCP proxy for tests that injects network faults:
// Cut blackholes the path (bytes and new connections hang, no RST, as in a
// partition), Refuse resets every connection and refuses new ones (a
// stopped peer), Reset drops the current connections once, and Slow adds
// latency to every chunk. Heal undoes Cut, Refuse and Slow.
package netproxy

import (
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy forwards 127.0.0.1:<port> to a target address.
type Proxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	cut     bool
	refuse  bool
	latency time.Duration
	cond    *sync.Cond
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
	done    bool
}

// Start listens on a free local port; the proxy stops at test cleanup.
func Start(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cut stops all traffic: bytes in flight and new connections wait (a
// blackhole, not a reset) until Heal.
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.cut = true
	p.mu.Unlock()
}

// Heal lets traffic flow again, at full speed.
func (p *Proxy) Heal() {
	p.mu.Lock()
	p.cut, p.refuse, p.latency = false, false, 0
	p.cond.Broadcast()
	p.mu.Unlock()
}

// Refuse resets every connection and refuses new ones until Heal.
func (p *Proxy) Refuse() {
	p.mu.Lock()
	p.refuse = true
	p.mu.Unlock()
	p.Reset()
}

// Reset closes every current connection with a TCP reset; new ones are
// accepted as usual.
func (p *Proxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		c.Close()
		delete(p.conns, c)
	}
}

// Slow delays every chunk by d (each direction) until Heal.
func (p *Proxy) Slow(d time.Duration) {
	p.mu.Lock()
	p.latency = d
	p.mu.Unlock()
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.done {
		p.mu.Unlock()
		return
	}
	p.done = true
	p.cut = false
	p.cond.Broadcast()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

// wait blocks while the path is cut, then applies the latency; false once
// the proxy is closed or refusing.
func (p *Proxy) wait() bool {
	p.mu.Lock()
	for p.cut && !p.done {
		p.cond.Wait()
	}
	ok, d := !p.done && !p.refuse, p.latency
	p.mu.Unlock()
	if ok && d > 0 {
		time.Sleep(d) // the injected latency itself, not synchronisation
	}
	return ok
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done || p.refuse {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(in) {
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			if !p.wait() {
				return
			}
			out, err := net.Dial("tcp", p.target)
			if err != nil {
				in.Close()
				return
			}
			if !p.track(out) {
				in.Close()
				return
			}
			p.wg.Add(2)
			go p.pipe(out, in)
			go p.pipe(in, out)
		}()
	}
}

// pipe copies src to dst in small steps, holding each step while cut.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.wait() {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // EOF or a closed connection: both ends close
		}
	}
}
