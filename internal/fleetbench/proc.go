package fleetbench

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, 100 on every Linux this runs on.
const clockTicks = 100

// cpuTime is the CPU time (user and system) process pid has used.
func cpuTime(pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces) in ")".
	i := bytes.LastIndexByte(data, ')')
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// vmHWM is process pid's peak resident memory (VmHWM) in bytes.
func vmHWM(pid int) uint64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// openFDs is how many descriptors process pid has open.
func openFDs(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0
	}
	return len(ents)
}

// cpuTimes is the CPU time of every running member, by member.
func (b *bench) cpuTimes() map[*member]time.Duration {
	out := map[*member]time.Duration{}
	for _, m := range b.running() {
		out[m] = cpuTime(m.cmd.Process.Pid)
	}
	return out
}

// serverCPU is the CPU time the running members have used, summed.
func (b *bench) serverCPU() time.Duration {
	var sum time.Duration
	for _, d := range b.cpuTimes() {
		sum += d
	}
	return sum
}

// peakRSS is each member's highest VmHWM over its lives (the current one
// included), summed over the members and the largest.
func (b *bench) peakRSS() (sum, largest uint64) {
	for _, m := range b.members {
		p := m.peakRSS
		if m.cmd != nil {
			p = max(p, vmHWM(m.cmd.Process.Pid))
		}
		sum += p
		largest = max(largest, p)
	}
	return sum, largest
}

// serverFDs is the descriptors the running members have open, summed.
func (b *bench) serverFDs() int {
	n := 0
	for _, m := range b.running() {
		n += openFDs(m.cmd.Process.Pid)
	}
	return n
}
