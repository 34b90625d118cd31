package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// asMainEnv makes the test binary run the fake's main instead of the tests,
// so the seccomp tests can run the fake as a process of its own without a
// build step.
const asMainEnv = "BANGER_FAKE_FIRECRACKER_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asMainEnv) == "1" {
		os.Unsetenv(asMainEnv)
		main()
	}
	os.Exit(m.Run())
}

// denySeccomp makes seccomp(2) fail with EPERM and allows everything else,
// like a service manager's system call filter that forbids it.
var denySeccomp = []unix.SockFilter{
	{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}, // seccomp_data.nr
	{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: unix.SYS_SECCOMP, Jt: 0, Jf: 1},
	{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
	{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
}

// syncBuffer is the fake's output, read while the process may still write.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type fakeProc struct {
	cmd  *exec.Cmd
	sock string
	out  *syncBuffer
	done chan struct{}
	err  error
}

// startFake runs the fake firecracker on a fresh API socket. With a filter,
// the process starts under it: the filter is installed on a locked thread
// of this test binary that forks the child and then dies with its
// goroutine, so the test binary itself stays unfiltered.
func startFake(t *testing.T, filter []unix.SockFilter, args ...string) *fakeProc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "api.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	cmd := exec.CommandContext(ctx, exe, append([]string{"--api-sock", sock}, args...)...)
	cmd.Env = append(os.Environ(), asMainEnv+"=1")
	p := &fakeProc{cmd: cmd, sock: sock, out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if filter != nil {
			if err := installFilter(filter); err != nil {
				started <- fmt.Errorf("install the test's filter: %w", err)
				return
			}
		}
		started <- cmd.Start()
	}()
	if err := <-started; err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-p.done
	})
	return p
}

// get sends GET / to the API and returns the status code.
func (p *fakeProc) get() (int, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", p.sock)
		},
	}}
	resp, err := c.Get("http://localhost/")
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// serving waits until the API answers GET / with 200.
func (p *fakeProc) serving(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, err := p.get()
		if err == nil && code == http.StatusOK {
			return
		}
		select {
		case <-p.done:
			t.Fatalf("fake exited (%v) before serving:\n%s", p.err, p.out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("API not serving after 15s (last: %d %v):\n%s", code, err, p.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type threadInfo struct {
	tid        string
	name       string
	seccomp    string // 0 none, 2 filter
	noNewPrivs string
}

func threads(t *testing.T, pid int) []threadInfo {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	var out []threadInfo
	for _, e := range ents {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, e.Name()))
		if err != nil {
			continue // the thread is gone
		}
		ti := threadInfo{tid: e.Name()}
		for _, line := range strings.Split(string(b), "\n") {
			k, v, _ := strings.Cut(line, ":")
			v = strings.TrimSpace(v)
			switch k {
			case "Name":
				ti.name = v
			case "Seccomp":
				ti.seccomp = v
			case "NoNewPrivs":
				ti.noNewPrivs = v
			}
		}
		out = append(out, ti)
	}
	return out
}

func TestAPIThreadInstallsSeccompFilter(t *testing.T) {
	p := startFake(t, nil)
	p.serving(t)
	var filtered []threadInfo
	for _, ti := range threads(t, p.cmd.Process.Pid) {
		if ti.seccomp == "2" {
			filtered = append(filtered, ti)
		}
	}
	if len(filtered) != 1 || filtered[0].name != apiThreadName || filtered[0].noNewPrivs != "1" {
		t.Fatalf("threads with a seccomp filter = %+v; want exactly the %s thread, with no_new_privs", filtered, apiThreadName)
	}
}

func TestNoSeccompInstallsNoFilter(t *testing.T) {
	p := startFake(t, nil, "--no-seccomp")
	p.serving(t)
	for _, ti := range threads(t, p.cmd.Process.Pid) {
		if ti.seccomp != "0" {
			t.Errorf("thread %+v has a seccomp filter under --no-seccomp", ti)
		}
	}
}

func TestForbiddenSeccompAborts(t *testing.T) {
	p := startFake(t, denySeccomp)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		code, err := p.get()
		t.Fatalf("still running 15s under a filter that forbids seccomp (GET / = %d %v):\n%s", code, err, p.out)
	}
	var ee *exec.ExitError
	if !errors.As(p.err, &ee) {
		t.Fatalf("exit = %v, want death by SIGABRT:\n%s", p.err, p.out)
	}
	if ws := ee.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGABRT {
		t.Fatalf("exit = %v, want death by SIGABRT:\n%s", p.err, p.out)
	}
	if !strings.Contains(p.out.String(), "Failed to set the requested seccomp filters on the API thread") ||
		!strings.Contains(p.out.String(), "Operation not permitted (os error 1)") {
		t.Fatalf("output lacks the API thread's seccomp failure:\n%s", p.out)
	}
	// Like Firecracker, it had bound the socket but never served on it.
	if code, err := p.get(); err == nil {
		t.Fatalf("the dead fake answered GET / with %d", code)
	}
}

func TestForbiddenSeccompWithNoSeccompServes(t *testing.T) {
	p := startFake(t, denySeccomp, "--no-seccomp")
	p.serving(t)
}
