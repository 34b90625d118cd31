// Package procstat reads a process's /proc/PID/stat line: its state, CPU
// time and start time, which banger uses to tell a process from a later
// one reusing its pid and to report what a VMM costs. Standard library
// only, so both bangerd and the root helper can use it.
package procstat

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
)

// Stat is the part of /proc/PID/stat banger reads.
type Stat struct {
	State byte // field 3: R, S, D, Z, X, ...
	PPID  int  // field 4
	// Flags (field 9) are the kernel's PF_* bits of the task.
	Flags uint64
	// UTime and STime (fields 14 and 15) are CPU time in clock ticks, all
	// threads included.
	UTime, STime uint64
	// StartTime (field 22) is when the process started, in clock ticks
	// after boot: with the pid, it names one process.
	StartTime uint64
}

// ClockTicks is USER_HZ, the unit of the tick fields: the kernel fixes it
// at 100 for user space on every architecture banger runs on (reading it
// with sysconf(_SC_CLK_TCK) would need cgo).
const ClockTicks = 100

// pfKthread is PF_KTHREAD, the flag of the kernel's own threads.
const pfKthread = 0x00200000

// KernelThread reports a kernel thread, which no signal ends.
func (s Stat) KernelThread() bool { return s.Flags&pfKthread != 0 }

// Gone reports a process that has exited, reaped or not.
func (s Stat) Gone() bool { return s.State == 'Z' || s.State == 'X' }

// CPUSeconds is the process's user plus system time.
func (s Stat) CPUSeconds() float64 { return float64(s.UTime+s.STime) / ClockTicks }

// Read reads pid's stat.
func Read(pid int) (Stat, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, fmt.Errorf("read process %d: %w", pid, err)
	}
	s, err := Parse(data)
	if err != nil {
		return Stat{}, fmt.Errorf("read process %d: %w", pid, err)
	}
	return s, nil
}

// Parse parses a /proc/PID/stat line. The command (field 2) may hold
// spaces and parentheses, so fields are counted from its last ')'.
func Parse(data []byte) (Stat, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return Stat{}, errors.New("malformed stat: no command")
	}
	f := bytes.Fields(data[i+1:])
	field := func(n int) []byte { return f[n-3] } // f[0] is field 3
	if len(f) < 22-2 || len(field(3)) != 1 {
		return Stat{}, errors.New("malformed stat: too few fields")
	}
	var s Stat
	s.State = field(3)[0]
	num := func(n int) (uint64, error) {
		v, err := strconv.ParseUint(string(field(n)), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("malformed stat: field %d: %w", n, err)
		}
		return v, nil
	}
	ppid, err := num(4)
	if err != nil {
		return Stat{}, err
	}
	s.PPID = int(ppid)
	if s.Flags, err = num(9); err != nil {
		return Stat{}, err
	}
	if s.UTime, err = num(14); err != nil {
		return Stat{}, err
	}
	if s.STime, err = num(15); err != nil {
		return Stat{}, err
	}
	if s.StartTime, err = num(22); err != nil {
		return Stat{}, err
	}
	return s, nil
}
