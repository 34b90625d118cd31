// Package reaper owns child-process reaping for the guest agent. As PID 1 the
// agent inherits every orphan in the guest, so a single loop must call
// wait4(-1) for the whole process; exec.Cmd.Wait would race it. Callers start
// children through Reaper.Start and receive the exit status by pid.
package reaper

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"sync"

	"golang.org/x/sys/unix"
)

// maxUnclaimed bounds the statuses kept for pids nobody registered: as PID 1
// the agent reaps orphans it never started, and those must not accumulate.
const maxUnclaimed = 1024

// Reaper reaps every child of the process and delivers exit statuses.
type Reaper struct {
	mu        sync.Mutex
	waiters   map[int]chan unix.WaitStatus
	unclaimed map[int]unix.WaitStatus
	order     []int // unclaimed pids, oldest first, for eviction
	started   bool
}

// New returns a reaper; call Run (usually in a goroutine) to make it reap.
func New() *Reaper {
	return &Reaper{
		waiters:   make(map[int]chan unix.WaitStatus),
		unclaimed: make(map[int]unix.WaitStatus),
	}
}

var (
	defaultOnce sync.Once
	defaultR    *Reaper
)

// Default returns the process-wide reaper, starting it on first use. There
// must be only one wait4(-1) loop per process.
func Default() *Reaper {
	defaultOnce.Do(func() {
		defaultR = New()
		go defaultR.Run()
	})
	return defaultR
}

// Run reaps children forever. It must be the only caller of wait4 in the
// process.
func (r *Reaper) Run() {
	r.mu.Lock()
	if r.started {
		r.mu.Unlock()
		return
	}
	r.started = true
	r.mu.Unlock()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, unix.SIGCHLD)
	for {
		r.reapAll()
		<-sig
	}
}

// reapAll collects every child that has exited. SIGCHLD coalesces, so one
// signal may stand for many children.
func (r *Reaper) reapAll() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		if !ws.Exited() && !ws.Signaled() {
			continue // stopped/continued: not an exit
		}
		r.deliver(pid, ws)
	}
}

func (r *Reaper) deliver(pid int, ws unix.WaitStatus) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ch, ok := r.waiters[pid]; ok {
		delete(r.waiters, pid)
		ch <- ws
		return
	}
	if _, dup := r.unclaimed[pid]; !dup {
		r.order = append(r.order, pid)
	}
	r.unclaimed[pid] = ws
	for len(r.order) > maxUnclaimed {
		delete(r.unclaimed, r.order[0])
		r.order = r.order[1:]
	}
}

// Register returns a channel that receives pid's exit status exactly once.
// A status reaped before registration is delivered immediately.
func (r *Reaper) Register(pid int) <-chan unix.WaitStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.registerLocked(pid)
}

func (r *Reaper) registerLocked(pid int) <-chan unix.WaitStatus {
	ch := make(chan unix.WaitStatus, 1)
	if ws, ok := r.unclaimed[pid]; ok {
		delete(r.unclaimed, pid)
		for i, p := range r.order {
			if p == pid {
				r.order = append(r.order[:i], r.order[i+1:]...)
				break
			}
		}
		ch <- ws
		return ch
	}
	r.waiters[pid] = ch
	return ch
}

// Start starts cmd and registers its pid atomically with respect to
// delivery, so a child that exits at once is never mistaken for an orphan.
// The caller must never call cmd.Wait; stdio should be *os.File values so
// that no copying goroutine depends on Wait.
func (r *Reaper) Start(cmd *exec.Cmd) (<-chan unix.WaitStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	return r.registerLocked(cmd.Process.Pid), nil
}

// ExitCode converts a wait status to a shell-style code (128+n for a death
// by signal n) and the signal number (0 if it exited normally).
func ExitCode(ws unix.WaitStatus) (code, sig int) {
	if ws.Signaled() {
		s := int(ws.Signal())
		return 128 + s, s
	}
	return ws.ExitStatus(), 0
}
