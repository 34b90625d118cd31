// Package testutil holds the gates and helpers shared by banger's tests. It
// may be imported only from _test.go files.
//
// Test tiers:
//   - plain `go test ./...` needs no root and boots no VM;
//   - root integration tests call RequireRoot and run when BANGER_TEST_ROOT=1;
//   - VM tests call RequireVM and run when BANGER_TEST_VM=1 (real guests under
//     QEMU; they need a provisioned kernel, see test/e2e).
package testutil

import (
	"bytes"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
)

// RequireRoot skips t unless root tests are enabled, and fails it when they
// are enabled but the process is not root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Getenv("BANGER_TEST_ROOT") != "1" {
		t.Skip("root test: set BANGER_TEST_ROOT=1 to run")
	}
	if os.Geteuid() != 0 {
		t.Fatal("BANGER_TEST_ROOT=1 but not running as root")
	}
}

// RequireVM skips t unless VM tests are enabled.
func RequireVM(t testing.TB) {
	t.Helper()
	if os.Getenv("BANGER_TEST_VM") != "1" {
		t.Skip("VM test: set BANGER_TEST_VM=1 to run")
	}
}

// SyncBuffer is a bytes.Buffer safe for a writer goroutine (a child's
// stderr, a logger) and a reader.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// SocketPair returns a connected, buffered pair of stream sockets (net.Pipe
// is unbuffered, which deadlocks two sides that both write first), closed
// when the test ends.
func SocketPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "sock")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	return conn(fds[0]), conn(fds[1])
}
