package jail

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"

	"banger/internal/execx"

	"golang.org/x/sys/unix"
)

// jailerEnv is the jailer's whole environment: nothing of the helper's
// leaks into firecracker.
var jailerEnv = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}

// Process is a started jailer, which becomes firecracker (it execs in
// place, so the pid stays).
type Process struct {
	PID int
	// StartTime is the process's start time from /proc/PID/stat (field
	// 22, clock ticks since boot): with PID, it names this process and
	// not a later one that reused the pid.
	StartTime uint64
	done      chan struct{}
	proc      *os.Process
}

// Done is closed once the process has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Kill kills the process. The helper uses it only to undo a launch it
// could not record: it never signals a firecracker it handed over.
func (p *Process) Kill() error {
	if err := p.proc.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill jailer: %w", err)
	}
	return nil
}

// Start runs argv (JailerArgv) with stdin on /dev/null, stdout and stderr
// on console, in /, with only PATH in its environment, in a session of its
// own (so it survives a restart of the helper and gets none of its
// signals), not tied to any request's context. A goroutine reaps it.
func Start(argv []string, console *os.File) (*Process, error) {
	if len(argv) == 0 {
		return nil, errors.New("start jailer: empty argv")
	}
	if console == nil {
		return nil, errors.New("start jailer: no console")
	}
	if err := checkConsole(console); err != nil {
		return nil, err
	}
	// The jailer outlives the request: no context may kill it.
	cmd := (&execx.Runner{Dir: "/"}).Command(context.Background(), argv[0], argv[1:]...)
	cmd.Env = jailerEnv
	cmd.Stdin = nil
	cmd.Stdout, cmd.Stderr = console, console
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start jailer: %w", err)
	}
	p := &Process{PID: cmd.Process.Pid, done: make(chan struct{}), proc: cmd.Process}
	// Read before anything reaps it: a jailer that already exited is a
	// zombie, whose stat is still there.
	_, start, serr := procStat(p.PID)
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	if serr != nil {
		_ = p.Kill()
		<-p.done
		return nil, fmt.Errorf("start jailer: %w", serr)
	}
	p.StartTime = start
	return p, nil
}

// checkConsole refuses a console fd that cannot be written to.
func checkConsole(f *os.File) error {
	flags, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err != nil {
		return fmt.Errorf("inspect console fd: %w", err)
	}
	if flags&unix.O_PATH != 0 || flags&unix.O_ACCMODE == unix.O_RDONLY {
		return fmt.Errorf("console: fd not opened for writing: %w", ErrUnsafe)
	}
	return nil
}

// StartTime returns pid's start time (field 22 of /proc/PID/stat).
func StartTime(pid int) (uint64, error) {
	_, start, err := procStat(pid)
	return start, err
}

// Alive reports whether the process pid that started at start still runs:
// same pid, same start time, and not a zombie.
func Alive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	state, got, err := procStat(pid)
	return err == nil && got == start && state != 'Z' && state != 'X'
}

func procStat(pid int) (byte, uint64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, fmt.Errorf("read process %d: %w", pid, err)
	}
	state, start, err := parseStat(data)
	if err != nil {
		return 0, 0, fmt.Errorf("read process %d: %w", pid, err)
	}
	return state, start, nil
}

// parseStat returns the state (field 3) and start time (field 22) of a
// /proc/PID/stat line. The command (field 2) may hold spaces and
// parentheses, so fields are counted from its last ')'.
func parseStat(data []byte) (byte, uint64, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, 0, errors.New("malformed stat: no command")
	}
	fields := bytes.Fields(data[i+1:])
	const startField = 22 - 3 // fields[0] is field 3
	if len(fields) <= startField || len(fields[0]) != 1 {
		return 0, 0, errors.New("malformed stat: too few fields")
	}
	start, err := strconv.ParseUint(string(fields[startField]), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("malformed stat: start time: %w", err)
	}
	return fields[0][0], start, nil
}

// CgroupV2 reports whether /sys/fs/cgroup is a cgroup2 (unified) mount.
func CgroupV2() bool {
	var st unix.Statfs_t
	return unix.Statfs("/sys/fs/cgroup", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
}
