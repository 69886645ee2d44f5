package guard

import (
	"fmt"
	"os"
	"syscall"
	"time"
)

// watchdog drives a Linux watchdog device (/dev/watchdog, e.g. the softdog
// module) as a backstop for the guard itself: opening the device starts the
// kernel's timer, every write restarts it, and if no write comes for the
// device's timeout the kernel resets the machine. The guard keeps the
// device open only while it is armed, and writes to it only while its
// deadline is in the future; so if the guard dies or freezes while armed,
// or cannot confirm its fence, the machine is reset and its PostgreSQL
// stops with it. When the guard no longer needs it (disarmed, or a fence
// confirmed) it writes the magic character 'V' before closing, which tells
// a driver without nowayout to stop the timer.
type watchdog struct {
	path     string
	interval time.Duration
	f        *os.File
	last     time.Duration // Now() of the last write
}

// pet opens the device if needed and writes to it when interval has passed
// since the last write.
func (w *watchdog) pet(now time.Duration) error {
	if w.f == nil {
		// Non-blocking: opening must never stall the guard's loop (a FIFO
		// without a reader would).
		f, err := os.OpenFile(w.path, os.O_WRONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("watchdog %s: %w", w.path, err)
		}
		w.f, w.last = f, 0
	}
	if w.last != 0 && now-w.last < w.interval {
		return nil
	}
	if _, err := w.f.Write([]byte{'1'}); err != nil {
		return fmt.Errorf("watchdog %s: %w", w.path, err)
	}
	w.last = now
	return nil
}

// release writes the magic 'V' and closes the device (nothing if closed).
func (w *watchdog) release() error {
	if w.f == nil {
		return nil
	}
	_, err := w.f.Write([]byte{'V'})
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	w.f = nil
	if err != nil {
		return fmt.Errorf("watchdog %s: magic close: %w", w.path, err)
	}
	return nil
}

// open reports whether the device is held open.
func (w *watchdog) open() bool { return w.f != nil }
