package cli

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// lineWriter hands log lines to a goroutine of its own that writes them,
// so that a reader that falls behind (a busy journald, a pipe nobody
// drains) never blocks what logs: a server's connection handlers, say,
// in the middle of a reconnection storm. Past a bounded queue, lines are
// dropped and counted, and the count is written as soon as the reader
// keeps up again (or at Close).
type lineWriter struct {
	w       io.Writer
	lines   chan []byte
	dropped atomic.Int64
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
}

// logQueue is how many lines wait for a slow reader before the next ones
// are dropped.
const logQueue = 4096

// newLineWriter starts the writer's goroutine; Close stops it.
func newLineWriter(w io.Writer, queue int) *lineWriter {
	l := &lineWriter{w: w, lines: make(chan []byte, queue), stop: make(chan struct{}), done: make(chan struct{})}
	go l.run()
	return l
}

// Write queues one line (slog writes a record in one call); it never
// blocks, and never fails: a line that does not fit is counted.
func (l *lineWriter) Write(p []byte) (int, error) {
	select {
	case l.lines <- bytes.Clone(p):
	default:
		l.dropped.Add(1)
	}
	return len(p), nil
}

func (l *lineWriter) run() {
	defer close(l.done)
	for {
		select {
		case b := <-l.lines:
			l.write(b)
		case <-l.stop:
			for {
				select {
				case b := <-l.lines:
					l.write(b)
				default:
					l.sayDropped()
					return
				}
			}
		}
	}
}

// write writes a line, and once the queue is drained the count of the
// lines dropped meanwhile (they came after those queued).
func (l *lineWriter) write(b []byte) {
	_, _ = l.w.Write(b)
	if len(l.lines) == 0 {
		l.sayDropped()
	}
}

func (l *lineWriter) sayDropped() {
	if n := l.dropped.Swap(0); n > 0 {
		_, _ = fmt.Fprintf(l.w, "time=%s level=WARN msg=\"log lines dropped: the log's reader did not keep up\" dropped=%d\n",
			time.Now().Format(time.RFC3339Nano), n)
	}
}

// Close writes what is queued, waiting at most timeout for the reader,
// and stops the goroutine (a reader stuck for good leaves it blocked in
// its last write, which the process's exit ends).
func (l *lineWriter) Close(timeout time.Duration) {
	l.once.Do(func() { close(l.stop) })
	select {
	case <-l.done:
	case <-time.After(timeout):
	}
}
