package jail

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"

	"banger/internal/execx"
	"banger/internal/procstat"

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
	st, serr := procstat.Read(p.PID)
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	if serr != nil {
		_ = p.Kill()
		<-p.done
		return nil, fmt.Errorf("start jailer: %w", serr)
	}
	p.StartTime = st.StartTime
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
	st, err := procstat.Read(pid)
	return st.StartTime, err
}

// Alive reports whether the process pid that started at start still runs:
// same pid, same start time, and not a zombie.
func Alive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	st, err := procstat.Read(pid)
	return err == nil && st.StartTime == start && !st.Gone()
}
