package transport

import (
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
	if _, err := New("carrier-pigeon"); err == nil {
		t.Fatal("unknown transport accepted")
	}
}

// TestAutoPicksTheChannelThatExists: a named virtio-serial port wins (QEMU);
// without one, a vsock device means Firecracker; with neither, Auto gives
// up after its limit with an error naming both.
func TestAutoPicksTheChannelThatExists(t *testing.T) {
	sys, dev := t.TempDir(), t.TempDir()
	if _, err := Auto(sys, dev, 150*time.Millisecond); err == nil || !strings.Contains(err.Error(), "neither a virtio-serial port") {
		t.Fatalf("Auto with no device: %v", err)
	}
	port := filepath.Join(sys, "class", "virtio-ports", "vport0p1")
	if err := os.MkdirAll(port, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(port, "name"), []byte(agentproto.PortName+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := Auto(sys, dev, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := l.(*VirtioSerial); !ok {
		t.Fatalf("Auto with a virtio-serial port chose %T", l)
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
