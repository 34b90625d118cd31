// Package agenttest holds test doubles for the guest agent's side of a
// session, for the tests of the host packages that talk to it. Tests only.
package agenttest

import (
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/hashicorp/yamux"

	"banger/internal/agentproto"
)

// SocketPair returns a connected pair of stream sockets, closed when the
// test ends.
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

// OlderAgent serves the guest end c as an agent built before any op:
// every request is answered "unknown op", the way a real agent answers an
// op newer than itself. It returns when the session ends.
func OlderAgent(c net.Conn) {
	br, err := agentproto.GuestHandshake(c)
	if err != nil {
		return
	}
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	sess, err := yamux.Server(struct {
		io.Reader
		io.WriteCloser
	}{br, c}, cfg)
	if err != nil {
		return
	}
	defer sess.Close()
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			return
		}
		var req agentproto.Request
		_ = agentproto.ReadJSONLine(st, &req)
		_ = agentproto.WriteJSONLine(st, agentproto.Reply{Error: fmt.Sprintf("unknown op %q", req.Op)})
		st.Close()
	}
}
