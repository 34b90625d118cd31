package agent

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"banger/internal/agentproto"
)

// tcpServer serves each connection of a 127.0.0.1 listener with handle.
func tcpServer(t *testing.T, handle func(c *net.TCPConn)) *net.TCPAddr {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	conns := make(chan struct{}, 16)
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns <- struct{}{}
			go func() {
				defer func() { <-conns }()
				defer c.Close()
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		<-done
		for range cap(conns) {
			conns <- struct{}{} // wait for every handler
		}
	})
	return l.Addr().(*net.TCPAddr)
}

func echo(c *net.TCPConn) {
	if _, err := io.Copy(c, c); err == nil {
		_ = c.CloseWrite()
	}
}

func TestConnectEcho(t *testing.T) {
	addr := tcpServer(t, echo)
	h := newHost(t, testServer())
	port := strconv.Itoa(addr.Port)
	for _, a := range []string{addr.String(), ":" + port, port} {
		t.Run(a, func(t *testing.T) {
			st, br, rep := h.call(agentproto.Request{Op: agentproto.OpConnect, Addr: a})
			if !rep.OK {
				t.Fatalf("connect: %s", rep.Error)
			}
			defer st.Close()
			data := make([]byte, 1<<20) // several stream windows
			_, _ = rand.Read(data)
			werr := make(chan error, 1)
			go func() {
				_, err := st.Write(data)
				// A yamux Close is a half-close: the echo server sees EOF
				// and closes in turn.
				_ = st.Close()
				werr <- err
			}()
			got, err := io.ReadAll(br)
			if err != nil {
				t.Fatalf("read echo: %v", err)
			}
			if err := <-werr; err != nil {
				t.Fatalf("write: %v", err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("echo returned %d bytes, want the %d sent", len(got), len(data))
			}
		})
	}
}

func TestConnectPeerClosesFirst(t *testing.T) {
	addr := tcpServer(t, func(c *net.TCPConn) { _, _ = c.Write([]byte("bye\n")) })
	h := newHost(t, testServer())
	st, br, rep := h.call(agentproto.Request{Op: agentproto.OpConnect, Addr: addr.String()})
	if !rep.OK {
		t.Fatal(rep.Error)
	}
	defer st.Close()
	got, err := io.ReadAll(br)
	if err != nil || string(got) != "bye\n" {
		t.Fatalf("read %q, %v", got, err)
	}
}

func TestConnectErrors(t *testing.T) {
	// A port that was just free: nothing listens there.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()

	h := newHost(t, testServer())
	cases := []struct{ addr, want string }{
		{closed, "connect " + closed + ": connection refused"},
		{"", `connect "": port must be 1-65535`},
		{"0", `connect "0": port must be 1-65535`},
		{"127.0.0.1:99999", `port must be 1-65535`},
		{"a:b:c", `connect "a:b:c": address a:b:c: too many colons in address`},
	}
	for _, c := range cases {
		st, _, rep := h.call(agentproto.Request{Op: agentproto.OpConnect, Addr: c.addr})
		st.Close()
		if rep.OK || !strings.Contains(rep.Error, c.want) {
			t.Errorf("connect %q: reply %+v, want error containing %q", c.addr, rep, c.want)
		}
	}
}

func TestConnectAddr(t *testing.T) {
	cases := []struct {
		in, want string
		ok       bool
	}{
		{"8080", "127.0.0.1:8080", true},
		{":8080", "127.0.0.1:8080", true},
		{"10.0.0.5:22", "10.0.0.5:22", true},
		{"[::1]:22", "[::1]:22", true},
		{"localhost:80", "localhost:80", true},
		{"", "", false},
		{"0", "", false},
		{"65536", "", false},
		{"http", "", false},
		{"[::1]", "", false},
	}
	for _, c := range cases {
		got, err := connectAddr(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("connectAddr(%q) = %q, %v; want %q ok=%v", c.in, got, err, c.want, c.ok)
		}
	}
}

// A host that closes its direction and stops reading while the guest's
// peer keeps sending: the guest gives up after the stall bound and closes
// the peer's connection.
func TestConnectStalledHost(t *testing.T) {
	old := connectStall.Swap(int64(200 * time.Millisecond))
	t.Cleanup(func() { connectStall.Store(old) })

	peerErr := make(chan error, 1)
	addr := tcpServer(t, func(c *net.TCPConn) {
		buf := make([]byte, 64<<10)
		_ = c.SetWriteDeadline(time.Now().Add(20 * time.Second))
		for {
			if _, err := c.Write(buf); err != nil {
				peerErr <- err
				return
			}
		}
	})
	h := newHost(t, testServer())
	st, br, rep := h.call(agentproto.Request{Op: agentproto.OpConnect, Addr: addr.String()})
	if !rep.OK {
		t.Fatal(rep.Error)
	}
	if _, err := io.ReadFull(br, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	_ = st.Close() // FIN, and never read again
	select {
	case err := <-peerErr:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("peer write timed out instead of seeing the connection closed")
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the guest kept the peer's connection open")
	}
}

func TestPortsOp(t *testing.T) {
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	ul, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	// An established connection is not a listener.
	conn, err := net.Dial("tcp", tl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	h := newHost(t, testServer())
	st, _, rep := h.call(agentproto.Request{Op: agentproto.OpPorts})
	st.Close()
	if !rep.OK {
		t.Fatalf("ports: %s", rep.Error)
	}
	comm, _ := os.ReadFile("/proc/self/comm")
	find := func(proto string, port int) *agentproto.Port {
		for i, p := range rep.Ports {
			if p.Proto == proto && int(p.Port) == port {
				return &rep.Ports[i]
			}
		}
		return nil
	}
	for _, c := range []struct {
		proto string
		port  int
	}{
		{"tcp", tl.Addr().(*net.TCPAddr).Port},
		{"udp", ul.LocalAddr().(*net.UDPAddr).Port},
	} {
		p := find(c.proto, c.port)
		if p == nil {
			t.Fatalf("%s port %d not listed in %+v", c.proto, c.port, rep.Ports)
		}
		if p.Addr != "127.0.0.1" || p.PID != os.Getpid() || p.Process != strings.TrimSpace(string(comm)) {
			t.Errorf("%s port %d: %+v, want 127.0.0.1 owned by pid %d %q", c.proto, c.port, *p, os.Getpid(), comm)
		}
	}
	if p := find("tcp", conn.LocalAddr().(*net.TCPAddr).Port); p != nil {
		t.Errorf("client side of a connection listed: %+v", *p)
	}
}
