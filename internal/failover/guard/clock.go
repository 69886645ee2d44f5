package guard

import (
	"time"

	"golang.org/x/sys/unix"
)

// Now reads CLOCK_BOOTTIME: the time since the machine booted, suspend
// included. The clock is system-wide, so a deadline the agent computes is
// the same instant in the guard process; it never jumps with the wall clock
// (NTP, an operator's date), and it keeps counting while the machine is
// suspended, so a deadline that passed during a suspend has passed when the
// machine resumes. Deadlines on the wire are readings of this clock.
func Now() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		// Linux has had CLOCK_BOOTTIME since 2.6.39; failing to read it
		// means a broken system, where no deadline can be trusted.
		panic("guard: clock_gettime(CLOCK_BOOTTIME): " + err.Error())
	}
	return time.Duration(ts.Nano())
}
