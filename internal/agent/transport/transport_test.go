package transport

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/agentproto"
)

func TestFindPort(t *testing.T) {
	sys := t.TempDir()
	for name, port := range map[string]string{"vport0p1": "org.qemu.guest_agent.0", "vport1p1": "banger.agent"} {
		dir := filepath.Join(sys, "class", "virtio-ports", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "name"), []byte(port+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	v := &VirtioSerial{Name: "banger.agent", SysRoot: sys, DevRoot: "/dev"}
	got, err := v.FindPort()
	if err != nil || got != "/dev/vport1p1" {
		t.Fatalf("FindPort = %q, %v", got, err)
	}
	v.Name = "missing"
	if _, err := v.FindPort(); err == nil {
		t.Fatal("found a port that does not exist")
	}
}

func TestNewRejectsUnknown(t *testing.T) {
	if _, err := New("carrier-pigeon", 1); err == nil {
		t.Fatal("unknown transport accepted")
	}
}

// TestAutoPicksTheChannelThatExists: a named virtio-serial port wins (QEMU);
// without one, a virtio vsock device means Firecracker; a /dev/vsock node
// alone (the vsock module loaded in a QEMU guest) is no reason to listen on
// vsock, so with nothing else Auto gives up after its limit.
func TestAutoPicksTheChannelThatExists(t *testing.T) {
	sys, dev := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(dev, "vsock"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// Other virtio devices (a disk, a console) are no vsock either.
	virtioDev(t, sys, "virtio0", "0x0002")
	virtioDev(t, sys, "virtio1", "0x0003")
	if l, err := Auto(sys, dev, 1, 150*time.Millisecond); err == nil || !strings.Contains(err.Error(), "neither a virtio-serial port") {
		t.Fatalf("Auto with only /dev/vsock: %T, %v", l, err)
	}

	vsys := t.TempDir()
	virtioDev(t, vsys, "virtio0", "0x0013")
	l, err := Auto(vsys, dev, 1, time.Second)
	if err == nil {
		defer l.Close()
		if _, ok := l.(*Vsock); !ok {
			t.Fatalf("Auto with a virtio vsock device chose %T", l)
		}
	} else if !strings.Contains(err.Error(), "vsock") {
		// This host may have no AF_VSOCK: then the attempt is the proof.
		t.Fatalf("Auto with a virtio vsock device: %v", err)
	}

	port := filepath.Join(sys, "class", "virtio-ports", "vport0p1")
	if err := os.MkdirAll(port, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(port, "name"), []byte(agentproto.PortName+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	virtioDev(t, sys, "virtio2", "0x0013") // the named port still wins
	l, err = Auto(sys, dev, 1, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := l.(*VirtioSerial); !ok {
		t.Fatalf("Auto with a virtio-serial port chose %T", l)
	}
	l, err = Auto(sys, dev, 3, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := l.(*Ports); !ok || len(p.Ports) != 3 {
		t.Fatalf("Auto with agentports=3 chose %T", l)
	}
}

func virtioDev(t *testing.T, sys, name, id string) {
	t.Helper()
	dir := filepath.Join(sys, "bus", "virtio", "devices", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "device"), []byte(id+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestNewNamesItsListener: an explicit transport is taken as said.
func TestNewNamesItsListener(t *testing.T) {
	for _, tc := range []struct {
		kind  string
		ports int
		want  string
	}{
		{"virtio-serial", 1, "*transport.VirtioSerial"},
		{"virtio-serial", 4, "*transport.Ports"},
	} {
		l, err := New(tc.kind, tc.ports)
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprintf("%T", l); got != tc.want {
			t.Errorf("New(%q, %d) = %s, want %s", tc.kind, tc.ports, got, tc.want)
		}
	}
}

// TestPortsServeConcurrently: with several agent ports, a second host
// connection is accepted while the first is still open (one port alone
// holds the second back until the first closes).
func TestPortsServeConcurrently(t *testing.T) {
	sys, dev := t.TempDir(), t.TempDir()
	var hosts []*os.File
	for i := range 2 {
		node := fmt.Sprintf("vport%dp1", i+1)
		dir := filepath.Join(sys, "class", "virtio-ports", node)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "name"), []byte(PortName(i)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		// A FIFO stands in for the port: what the "host" writes, the
		// agent reads.
		if err := unix.Mkfifo(filepath.Join(dev, node), 0o600); err != nil {
			t.Fatal(err)
		}
		h, err := os.OpenFile(filepath.Join(dev, node), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		hosts = append(hosts, h)
	}
	l := newPortsAt(2, sys, dev)
	defer l.Close()
	accepted := make(chan io.ReadWriteCloser, 2)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	for i, h := range hosts {
		if _, err := h.Write([]byte{'a' + byte(i)}); err != nil {
			t.Fatal(err)
		}
		select {
		case c := <-accepted:
			defer c.Close() // held open: the next must come anyway
		case <-time.After(5 * time.Second):
			t.Fatalf("connection %d not accepted while %d are open", i+1, i)
		}
	}
}

// TestVsockListener runs the vsock listener over the host's vsock loopback
// (CID 1), when the host has one: each connection is its own stream.
func TestVsockListener(t *testing.T) {
	const port = 52052
	l, err := ListenVsock(unix.VMADDR_CID_LOCAL, port)
	if err != nil {
		t.Skipf("no vsock loopback on this host: %v", err)
	}
	defer l.Close()
	dial := func() int {
		fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Connect(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_LOCAL, Port: port}); err != nil {
			unix.Close(fd)
			t.Skipf("vsock loopback connect: %v", err)
		}
		return fd
	}
	for i, msg := range []string{"first", "second"} {
		fd := dial()
		c, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := unix.Write(fd, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 16)
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != msg {
			t.Fatalf("connection %d read %q, %v", i, buf[:n], err)
		}
		c.Close()
		unix.Close(fd)
	}
	done := make(chan error, 1)
	go func() { _, err := l.Accept(); done <- err }()
	time.Sleep(50 * time.Millisecond)
	l.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Accept after Close returned a connection")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake a blocked Accept")
	}
}
