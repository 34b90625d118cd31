package sshd

import (
	"errors"
	"fmt"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"

	"banger/internal/agent/reaper"
)

// WaitFunc blocks until the started child exits and returns a shell-style
// exit code (128+n for a death by signal n) and the signal number (0 if it
// exited normally).
type WaitFunc func() (code, signal int, err error)

// Starter starts a child and returns how to wait for it. The server always
// gives children *os.File stdio, so no copying goroutine depends on the wait
// and a reaper-backed Starter never has to call cmd.Wait.
type Starter interface {
	Start(cmd *exec.Cmd) (WaitFunc, error)
}

// StarterFunc adapts a function to Starter.
type StarterFunc func(cmd *exec.Cmd) (WaitFunc, error)

// Start calls f(cmd).
func (f StarterFunc) Start(cmd *exec.Cmd) (WaitFunc, error) { return f(cmd) }

// WaitStarter starts children with cmd.Start and waits with cmd.Wait. It is
// right only when nothing else in the process calls wait4(-1).
type WaitStarter struct{}

// Start implements Starter.
func (WaitStarter) Start(cmd *exec.Cmd) (WaitFunc, error) {
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	return func() (int, int, error) {
		err := cmd.Wait()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			return -1, 0, fmt.Errorf("wait %s: %w", cmd.Path, err)
		}
		ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
		if !ok {
			return cmd.ProcessState.ExitCode(), 0, nil
		}
		code, sig := reaper.ExitCode(unix.WaitStatus(ws))
		return code, sig, nil
	}, nil
}

// ReaperStarter starts children through r, for an agent that reaps every
// child of the process itself (as PID 1 it must).
func ReaperStarter(r *reaper.Reaper) Starter {
	return StarterFunc(func(cmd *exec.Cmd) (WaitFunc, error) {
		status, err := r.Start(cmd)
		if err != nil {
			return nil, err
		}
		return func() (int, int, error) {
			code, sig := reaper.ExitCode(<-status)
			return code, sig, nil
		}, nil
	})
}
