package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"banger/test/fakes/internal/sidecarproto"
)

// guestSide is a scripted sidecar: it boots nothing, reports the guest
// opening and closing agent ports when the test says, and answers each
// agent request with one end of a stream pair whose other end (the guest's
// port) it hands to the test.
type guestSide struct {
	t      *testing.T
	side   *sidecarproto.Conn
	agents chan guestConn
}

type guestConn struct {
	port int
	c    net.Conn
}

// sidecarEnv is a booted machine whose backend is the real sidecar client
// talking to a scripted sidecar.
func sidecarEnv(t *testing.T) (*testEnv, string, *guestSide) {
	t.Helper()
	a, b, err := sidecarproto.Pair()
	if err != nil {
		t.Fatal(err)
	}
	fcEnd, err := sidecarproto.FromFile(a)
	if err != nil {
		t.Fatal(err)
	}
	side, err := sidecarproto.FromFile(b)
	if err != nil {
		t.Fatal(err)
	}
	g := &guestSide{t: t, side: side, agents: make(chan guestConn, 8)}
	if err := side.Send(sidecarproto.Message{Op: sidecarproto.OpHello, Greeting: sidecarproto.Greeting}); err != nil {
		t.Fatal(err)
	}
	sc, err := connectSidecar(fcEnd)
	if err != nil {
		t.Fatal(err)
	}
	go g.serve()
	t.Cleanup(func() { side.Close() })
	e, uds := vsockEnv(t)
	e.m.backend = sc
	e.start()
	return e, uds, g
}

func (g *guestSide) serve() {
	for {
		m, files, err := g.side.Recv()
		if err != nil {
			return
		}
		closeFiles(files)
		rep := sidecarproto.Message{Op: sidecarproto.OpReply, Seq: m.Seq}
		if m.Op != sidecarproto.OpAgent {
			_ = g.side.Send(rep)
			continue
		}
		host, guest := streamPair(g.t)
		g.agents <- guestConn{port: m.Port, c: guest}
		_ = g.side.Send(rep, host)
		host.Close()
	}
}

// port reports the guest opening (or closing) agent port i.
func (g *guestSide) port(i int, open bool) {
	g.t.Helper()
	if err := g.side.Send(sidecarproto.Message{Op: sidecarproto.OpPort, Port: i, Open: open}); err != nil {
		g.t.Fatal(err)
	}
}

func (g *guestSide) accepted() guestConn {
	g.t.Helper()
	select {
	case c := <-g.agents:
		g.t.Cleanup(func() { c.c.Close() })
		return c
	case <-time.After(5 * time.Second):
		g.t.Fatal("no connection reached the guest")
		return guestConn{}
	}
}

// noAnswerYet fails if the host end got anything (or was closed) within d.
func noAnswerYet(t *testing.T, c net.Conn, r *bufio.Reader, d time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	b, err := r.ReadByte()
	var ne net.Error
	if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("host got %q, %v before the guest accepted", b, err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
}

// TestVsockOKOnlyAfterGuestAccept: a CONNECT made while no agent port is
// open in the guest is not answered; "OK" comes once the guest opens one,
// and the connection then reaches that port.
func TestVsockOKOnlyAfterGuestAccept(t *testing.T) {
	_, uds, g := sidecarEnv(t)
	c, r := dialConnect(t, uds, "CONNECT 52\n")
	noAnswerYet(t, c, r, 500*time.Millisecond)
	select {
	case gc := <-g.agents:
		t.Fatalf("the sidecar was asked for port %d before the guest opened it", gc.port)
	default:
	}
	g.port(2, true)
	if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "OK ") {
		t.Fatalf("CONNECT reply = %q, %v", line, err)
	}
	gc := g.accepted()
	if gc.port != 2 {
		t.Fatalf("connection went to port %d, the guest opened 2", gc.port)
	}
	go func() { _, _ = io.WriteString(c, "ping\n") }()
	if got, err := bufio.NewReader(gc.c).ReadString('\n'); err != nil || got != "ping\n" {
		t.Fatalf("guest read %q, %v", got, err)
	}
}

// TestVsockClosedWithoutAccept: when no guest port accepts within
// Firecracker's connection request timeout, the host connection is closed
// without an answer.
func TestVsockClosedWithoutAccept(t *testing.T) {
	_, uds, _ := sidecarEnv(t)
	start := time.Now()
	_, r := dialConnect(t, uds, "CONNECT 52\n")
	if line, err := r.ReadString('\n'); err == nil {
		t.Fatalf("CONNECT without a guest listener answered %q", line)
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("CONNECT without a guest listener was left hanging")
	}
	if d := time.Since(start); d < acceptTimeout-200*time.Millisecond {
		t.Fatalf("closed after %s, before the guest had %s to accept", d, acceptTimeout)
	}
}

// TestVsockConcurrentConnections: two host connections run side by side
// on two ports, neither replacing the other; a third waits until a port is
// both free and accepted on again by the guest.
func TestVsockConcurrentConnections(t *testing.T) {
	_, uds, g := sidecarEnv(t)
	g.port(0, true)
	g.port(1, true)
	c1, r1 := dialConnect(t, uds, "CONNECT 52\n")
	if line, err := r1.ReadString('\n'); err != nil || !strings.HasPrefix(line, "OK ") {
		t.Fatalf("first CONNECT reply = %q, %v", line, err)
	}
	g1 := g.accepted()
	c2, r2 := dialConnect(t, uds, "CONNECT 52\n")
	if line, err := r2.ReadString('\n'); err != nil || !strings.HasPrefix(line, "OK ") {
		t.Fatalf("second CONNECT (while the first is open) reply = %q, %v", line, err)
	}
	g2 := g.accepted()
	if g1.port == g2.port {
		t.Fatalf("both connections on port %d", g1.port)
	}
	// Both carry data, each to its own guest end.
	for i, p := range []struct {
		c net.Conn
		g net.Conn
	}{{c1, g1.c}, {c2, g2.c}} {
		msg := []string{"one\n", "two\n"}[i]
		go func() { _, _ = io.WriteString(p.c, msg) }()
		if got, err := bufio.NewReader(p.g).ReadString('\n'); err != nil || got != msg {
			t.Fatalf("connection %d: guest read %q, %v", i+1, got, err)
		}
	}

	// A third waits: both ports are held.
	c3, r3 := dialConnect(t, uds, "CONNECT 52\n")
	noAnswerYet(t, c3, r3, 300*time.Millisecond)
	// The first host leaves; its port is free but the guest has not
	// accepted on it again yet.
	c1.Close()
	noAnswerYet(t, c3, r3, 300*time.Millisecond)
	g.port(g1.port, false)
	g.port(g1.port, true)
	if line, err := r3.ReadString('\n'); err != nil || !strings.HasPrefix(line, "OK ") {
		t.Fatalf("third CONNECT reply = %q, %v", line, err)
	}
	if g3 := g.accepted(); g3.port != g1.port {
		t.Fatalf("third connection on port %d, want the freed %d", g3.port, g1.port)
	}
}

func TestGuestCmdline(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"console=ttyS0", "console=ttyS0"},
		{"console=ttyS0 banger.transport=vsock", "console=ttyS0 banger.transport=virtio-serial banger.agentports=4"},
		{"banger.transport=vsock reboot=k", "banger.transport=virtio-serial reboot=k banger.agentports=4"},
		{"a banger.transport=vsock banger.transport=vsock", "a banger.transport=virtio-serial banger.transport=virtio-serial banger.agentports=4"},
		{"banger.transport=vsockx", "banger.transport=vsockx"},
	} {
		if got := guestCmdline(tc.in); got != tc.want {
			t.Errorf("guestCmdline(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
