package agent

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/sys/unix"

	"banger/internal/agent/cmdline"
	"banger/internal/agent/transport"
	"banger/internal/agentproto"
)

// TestGuestVsock runs the agent's vsock listener and server for real, as
// under Firecracker, but inside a QEMU guest: the vsock loopback transport
// (CID 1) stands in for the host. It needs root in a guest whose kernel has
// the vsock modules; the e2e test TestGuestVsock copies them in and names
// them, in load order, in BANGER_TEST_VSOCK_MODULES (colon-separated).
func TestGuestVsock(t *testing.T) {
	mods := os.Getenv("BANGER_TEST_VSOCK_MODULES")
	if os.Getenv("BANGER_TEST_ROOT") != "1" || mods == "" {
		t.Skip("runs in a guest (test/e2e TestGuestVsock): needs BANGER_TEST_ROOT=1 and BANGER_TEST_VSOCK_MODULES")
	}
	for _, m := range strings.Split(mods, ":") {
		loadModule(t, m)
	}
	l, err := transport.New(cmdline.TransportVsock, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := l.(*transport.Vsock); !ok {
		t.Fatalf("transport vsock gave %T", l)
	}
	served := make(chan error, 1)
	go func() { served <- testServer().Serve(l) }()
	defer func() {
		l.Close()
		select {
		case <-served:
		case <-time.After(5 * time.Second):
			t.Error("Serve did not end after the listener closed")
		}
	}()

	first := vsockHost(t)
	if r := first.exec(agentproto.Request{Argv: []string{"sh", "-c", "echo out; echo err >&2; exit 7"}}, "", nil); r.stdout != "out\n" || r.stderr != "err\n" || r.exit.Code != 7 {
		t.Fatalf("exec over vsock = %+v", r)
	}
	// A second connection while the first is open: its own session, and
	// both serve requests at the same time.
	second := vsockHost(t)
	var wg sync.WaitGroup
	results := make([]execResult, 2)
	for i, h := range []*host{first, second} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each command waits for a file the other creates, so they
			// only finish if both run concurrently.
			mine, theirs := []string{"a", "b"}[i], []string{"b", "a"}[i]
			dir := os.TempDir()
			script := "touch " + dir + "/vsock-" + mine + "; for i in $(seq 100); do [ -e " + dir + "/vsock-" + theirs + " ] && echo " + mine + " && exit 0; sleep 0.1; done; exit 1"
			results[i] = h.exec(agentproto.Request{Argv: []string{"sh", "-c", script}}, "", nil)
		}()
	}
	wg.Wait()
	for i, r := range results {
		if want := []string{"a\n", "b\n"}[i]; r.exit.Code != 0 || r.stdout != want {
			t.Errorf("connection %d: concurrent exec = %+v", i+1, r)
		}
	}
}

// loadModule inserts a kernel module file; one already loaded is fine.
func loadModule(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		t.Fatalf("load %s: %v", path, err)
	}
}

// vsockHost connects to the agent's vsock port through the loopback
// transport (CID 1) and runs the host side of the handshake.
func vsockHost(t *testing.T) *host {
	t.Helper()
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Connect(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_LOCAL, Port: agentproto.VsockPort}); err != nil {
		unix.Close(fd)
		t.Fatalf("connect to vsock CID 1 port %d: %v", agentproto.VsockPort, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	c := fileConn{os.NewFile(uintptr(fd), "vsock")}
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if err := agentproto.HostHandshake(c, agentproto.NewNonce(), 200*time.Millisecond); err != nil {
		c.Close()
		t.Fatalf("handshake over vsock: %v", err)
	}
	_ = c.SetDeadline(time.Time{})
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	sess, err := yamux.Client(c, cfg)
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })
	return &host{t: t, sess: sess}
}

// fileConn is a connected socket file as a net.Conn (os.File has the
// deadlines; vsock addresses are of no use here).
type fileConn struct{ *os.File }

func (fileConn) LocalAddr() net.Addr  { return vsockAddr{} }
func (fileConn) RemoteAddr() net.Addr { return vsockAddr{} }

type vsockAddr struct{}

func (vsockAddr) Network() string { return "vsock" }
func (vsockAddr) String() string  { return "vsock" }
