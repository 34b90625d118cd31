package vmm

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestStartTimeOfSelf(t *testing.T) {
	a, err := StartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if a == 0 {
		t.Fatal("StartTime(self) = 0")
	}
	b, err := StartTime(os.Getpid())
	if err != nil || b != a {
		t.Fatalf("StartTime(self) changed: %d then %d (%v)", a, b, err)
	}
	if _, err := StartTime(-1); err == nil {
		t.Fatal("StartTime(-1) succeeded")
	}
}

func TestCmdlineOfSelf(t *testing.T) {
	argv, err := Cmdline(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if len(argv) == 0 || filepath.Base(argv[0]) != filepath.Base(os.Args[0]) {
		t.Fatalf("Cmdline(self) = %q, want argv[0] %q", argv, os.Args[0])
	}
}

// startSleep starts `sleep 30` and makes sure it is killed and reaped when
// the test ends. The returned channel closes once it has been reaped.
func startSleep(t *testing.T) (*exec.Cmd, <-chan struct{}) {
	t.Helper()
	bin, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("sleep not on PATH")
	}
	cmd := exec.Command(bin, "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reaped := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(reaped)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-reaped
	})
	return cmd, reaped
}

func TestProcessLifecycle(t *testing.T) {
	cmd, reaped := startSleep(t)
	pid := cmd.Process.Pid
	p, err := NewProcess(Handle{VMM: "test", PID: pid})
	if err != nil {
		t.Fatalf("NewProcess: %v", err)
	}
	want, err := StartTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	if p.Handle.PIDStart != want || p.Handle.PID != pid || p.Handle.VMM != "test" {
		t.Fatalf("Handle = %+v, want PIDStart %d", p.Handle, want)
	}
	if !p.Alive() {
		t.Fatal("Alive() = false for a running child")
	}
	// The recorded start time is accepted.
	p2, err := NewProcess(Handle{PID: pid, PIDStart: want})
	if err != nil {
		t.Fatalf("NewProcess with the right PIDStart: %v", err)
	}
	// A different start time means a reused pid: refused.
	if _, err := NewProcess(Handle{PID: pid, PIDStart: want + 1}); !errors.Is(err, ErrGone) {
		t.Fatalf("NewProcess with a wrong PIDStart: err = %v, want ErrGone", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	if err := p.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait on a running process = %v, want DeadlineExceeded", err)
	}
	cancel()

	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("Signal(SIGTERM): %v", err)
	}
	for _, q := range []*Process{p, p2} {
		select {
		case <-q.Exited():
		case <-time.After(10 * time.Second):
			t.Fatal("Exited() not closed 10s after SIGTERM")
		}
		if q.Alive() {
			t.Fatal("Alive() = true after exit")
		}
		if err := q.Wait(context.Background()); err != nil {
			t.Fatalf("Wait after exit: %v", err)
		}
	}
	<-reaped
	// Signalling an exited, reaped process through its pidfd is not an
	// error (and cannot hit a reused pid).
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Errorf("Signal after exit: %v, want nil", err)
	}
	p.Close()
	p2.Close()
	var ws syscall.WaitStatus
	if st, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok {
		ws = st
	}
	if !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Errorf("child ended with %v, want killed by SIGTERM", cmd.ProcessState)
	}

	// The pid is gone now.
	if _, err := NewProcess(Handle{PID: pid}); !errors.Is(err, ErrGone) {
		t.Fatalf("NewProcess on a dead pid: err = %v, want ErrGone", err)
	}
}

func TestWaitForSocket(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.sock")
	exited := make(chan struct{})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if _, err := WaitForSocket(ctx, path, exited); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitForSocket without a listener = %v, want DeadlineExceeded", err)
	}

	close(exited)
	if _, err := WaitForSocket(context.Background(), path, exited); err == nil {
		t.Fatal("WaitForSocket after exit succeeded")
	}

	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			_ = c.Close()
		}
	}()
	c, err := WaitForSocket(context.Background(), path, make(chan struct{}))
	if err != nil {
		t.Fatalf("WaitForSocket with a listener: %v", err)
	}
	_ = c.Close()
}
