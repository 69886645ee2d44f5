package cli

import (
	"bufio"
	"io"
	"strings"
	"testing"
	"time"
)

// TestLogLinesNeverBlock: with a reader that reads nothing, logging
// thousands of lines returns at once; once the reader drains, every queued
// line arrives, then a line saying how many were dropped.
func TestLogLinesNeverBlock(t *testing.T) {
	r, w := io.Pipe()
	lw := newLineWriter(w, 16)
	log := newLogger(lw, "info")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 10_000 {
			log.Info("connection", "n", i)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("logging blocked on a reader that reads nothing")
	}
	got := make(chan []string, 1)
	go func() {
		var lines []string
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
		got <- lines
	}()
	lw.Close(10 * time.Second)
	_ = w.Close()
	lines := <-got
	// The queue (16), the line the writer may have been blocked on, and
	// the count.
	if len(lines) < 17 || len(lines) > 18 {
		t.Fatalf("%d lines arrived, want the 16 queued, perhaps one in flight, and the count", len(lines))
	}
	last := lines[len(lines)-1]
	if !strings.Contains(last, "log lines dropped") || !strings.Contains(last, "dropped=") {
		t.Fatalf("last line %q does not count the dropped ones", last)
	}
}
