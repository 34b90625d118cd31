package agentclient_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"banger/internal/agent"
	"banger/internal/agentclient"
	"banger/internal/agentclient/agenttest"
	"banger/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// session runs a real agent server on one end of a socket pair and the
// real host handshake on the other.
func session(t *testing.T) *agentclient.Session {
	t.Helper()
	hostEnd, guestEnd := testutil.SocketPair(t)
	srv := &agent.Server{Mode: agent.ModeService, Version: "test"}
	served := make(chan struct{})
	go func() {
		defer close(served)
		defer guestEnd.Close()
		_ = srv.ServeConn(guestEnd)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := agentclient.Handshake(ctx, hostEnd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.Close()
		select {
		case <-served:
		case <-time.After(5 * time.Second):
			t.Error("agent session did not end")
		}
	})
	return s
}

func listen(t *testing.T, handle func(c *net.TCPConn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		handle(c.(*net.TCPConn))
	}()
	t.Cleanup(func() { _ = l.Close(); <-done })
	return l.Addr().String()
}

func TestPorts(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s := session(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ports, err := s.Ports(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := uint16(l.Addr().(*net.TCPAddr).Port)
	for _, p := range ports {
		if p.Proto == "tcp" && p.Port == want && p.Addr == "127.0.0.1" && p.PID == os.Getpid() {
			return
		}
	}
	t.Fatalf("listener on port %d not in %+v", want, ports)
}

func TestConnectHalfClose(t *testing.T) {
	// The peer reads everything up to EOF, then answers with what it got.
	addr := listen(t, func(c *net.TCPConn) {
		got, err := io.ReadAll(c)
		if err != nil {
			return
		}
		_, _ = c.Write(bytes.ToUpper(got))
	})
	s := session(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := s.Connect(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello guest")); err != nil {
		t.Fatal(err)
	}
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		t.Fatalf("%T has no CloseWrite", c)
	}
	if err := cw.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "HELLO GUEST" {
		t.Fatalf("read %q, %v", got, err)
	}
}

func TestConnectClose(t *testing.T) {
	peerDone := make(chan error, 1)
	addr := listen(t, func(c *net.TCPConn) {
		_, err := io.Copy(io.Discard, c)
		peerDone <- err
	})
	s := session(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := s.Connect(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	readErr := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 10))
		readErr <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-readErr; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("blocked read after Close: %v", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: %v", err)
	}
	select {
	case err := <-peerDone:
		if err != nil {
			t.Fatalf("peer: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the peer did not see EOF after Close")
	}
}

func TestConnectRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s := session(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = s.Connect(ctx, addr)
	if !agentclient.IsGuestError(err) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("err = %v, want a guest error saying connection refused", err)
	}
	// The session is still usable afterwards.
	if _, err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestStats(t *testing.T) {
	s := session(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.MemTotal == 0 || st.Procs == 0 || len(st.Filesystems) != 2 {
		t.Fatalf("stats = %+v", st)
	}
}

// oldAgentSession is a session with an agent that knows no op at all, the
// way an agent built before an op answers it.
func oldAgentSession(t *testing.T) *agentclient.Session {
	t.Helper()
	hostEnd, guestEnd := testutil.SocketPair(t)
	served := make(chan struct{})
	go func() {
		defer close(served)
		defer guestEnd.Close()
		agenttest.OlderAgent(guestEnd)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := agentclient.Handshake(ctx, hostEnd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.Close()
		<-served
	})
	return s
}

func TestStatsFromAnOlderAgent(t *testing.T) {
	s := oldAgentSession(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := s.Stats(ctx)
	if !agentclient.IsUnknownOp(err) {
		t.Fatalf("err = %v, want an unknown op error", err)
	}
	if agentclient.IsUnknownOp(errors.New("unknown op \"stats\"")) {
		t.Error("a transport error is not the agent's answer")
	}
	if agentclient.IsUnknownOp(&agentclient.GuestError{Op: "get", Msg: "open /x: no such file"}) {
		t.Error("another guest error is not an unknown op")
	}
}
