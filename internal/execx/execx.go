// Package execx is the one place banger runs external programs. Every
// command is an argv (never a shell string), runs with LC_ALL=C so that
// output can be matched, and fails with an error that names the argv and
// carries the program's stderr.
//
// Consumers that want to fake a tool declare their own small interface with
// the Run method; *Runner satisfies it.
package execx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
)

// Runner runs commands for real.
type Runner struct {
	// Env is appended to the process environment.
	Env []string
	// Dir is the working directory.
	Dir string
}

// Default is a Runner with no extra settings.
var Default = &Runner{}

// Error is returned when a command fails to start or exits non-zero.
type Error struct {
	Argv   []string
	Err    error
	Stderr string
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("running %q: %v", strings.Join(e.Argv, " "), e.Err)
	if s := strings.TrimSpace(e.Stderr); s != "" {
		if len(s) > 2000 {
			s = s[len(s)-2000:]
		}
		msg += ": " + s
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// ExitCode returns the exit status carried by err, or -1.
func ExitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// Run runs bin with args and returns its stdout.
func (r *Runner) Run(ctx context.Context, bin string, args ...string) ([]byte, error) {
	return r.RunStdin(ctx, nil, bin, args...)
}

// RunStdin is Run with stdin attached.
func (r *Runner) RunStdin(ctx context.Context, stdin io.Reader, bin string, args ...string) ([]byte, error) {
	cmd := r.Command(ctx, bin, args...)
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), &Error{Argv: append([]string{bin}, args...), Err: err, Stderr: stderr.String()}
	}
	return stdout.Bytes(), nil
}

// Command builds an *exec.Cmd with banger's conventions for callers that
// must manage the process themselves (long-lived VMMs).
func (r *Runner) Command(ctx context.Context, bin string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin, args...) // argv only, by design: never a shell
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.Env = append(cmd.Env, r.Env...)
	cmd.Dir = r.Dir
	return cmd
}

// LookPath finds bin on PATH and in the sbin directories, which a normal
// user's PATH often lacks (mkfs.ext4, debugfs).
func LookPath(bin string) (string, error) {
	if p, err := exec.LookPath(bin); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/local/sbin", "/usr/sbin", "/sbin"} {
		p := dir + "/" + bin
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("find %s: not installed or not on PATH", bin)
}
