package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"time"
)

// Every external command an e2e test runs has a deadline, so a hang fails
// its own test, with the command's output, instead of eating the whole
// run's go test -timeout.
const (
	// cmdTimeout bounds one CLI call or host tool: a boot under TCG on a
	// loaded 2-core machine takes well under a minute.
	cmdTimeout = 5 * time.Minute
	// buildTimeout bounds image builds and pulls, kernel imports and go
	// builds: debootstrap alone takes minutes.
	buildTimeout = 30 * time.Minute
	// killGrace is how long Wait waits for the output pipes after the kill,
	// when a grandchild still holds them.
	killGrace = 10 * time.Second
)

// bangerTimeout is the deadline for `banger args...`.
func bangerTimeout(args []string) time.Duration {
	if len(args) > 0 && (args[0] == "image" || args[0] == "kernel") {
		return buildTimeout
	}
	return cmdTimeout
}

// timedCommand is exec.Command with a deadline d: the process is killed
// once d passes, whether the caller runs it at once or later.
func timedCommand(d time.Duration, name string, args ...string) *exec.Cmd {
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(d, cancel)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = killGrace
	return cmd
}

// deadlineNote is what a result's stderr gets when its command ran into
// deadline d (started at start), so the failure says why.
func deadlineNote(start time.Time, d time.Duration, err error) string {
	if err == nil || time.Since(start) < d {
		return ""
	}
	return fmt.Sprintf("\ne2e: killed after its %s deadline: %v", d, err)
}
