package netproxy_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/testutil/netproxy"
)

// echo serves a line echo on a free port.
func echo(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(c net.Conn, deadline time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(deadline))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err == nil && line != "ping\n" {
		return errors.New("garbled: " + line)
	}
	return err
}

func TestFaults(t *testing.T) {
	p := netproxy.Start(t, echo(t))
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := roundTrip(c, 2*time.Second); err != nil {
		t.Fatalf("healthy path: %v", err)
	}
	// Blackhole: no answer, no error but a timeout.
	p.Cut()
	if err := roundTrip(c, 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("cut path: %v, want a timeout", err)
	}
	p.Heal()
	// The held bytes arrive after healing.
	c2, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := roundTrip(c2, 2*time.Second); err != nil {
		t.Fatalf("healed path: %v", err)
	}
	// Refuse: the connection is reset, new ones are closed at once.
	p.Refuse()
	if err := roundTrip(c2, 2*time.Second); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("refused path: %v, want a reset", err)
	}
	if c3, err := net.Dial("tcp", p.Addr()); err == nil {
		if err := roundTrip(c3, 2*time.Second); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("new connection on a refused path: %v, want it closed", err)
		}
		c3.Close()
	}
	p.Heal()
	// Slow: answers come, later.
	p.Slow(100 * time.Millisecond)
	c4, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c4.Close()
	start := time.Now()
	if err := roundTrip(c4, 5*time.Second); err != nil {
		t.Fatalf("slow path: %v", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("slow path answered in %s, want at least the injected 2 x 100ms", d)
	}
}
