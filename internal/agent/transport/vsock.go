package transport

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/agentproto"
)

// Vsock serves AF_VSOCK connections on a port, as under Firecracker: the
// host connects to the VM's vsock unix socket and sends "CONNECT <port>";
// each such connection arrives here as its own stream.
type Vsock struct {
	CID  uint32 // unix.VMADDR_CID_ANY in a guest; VMADDR_CID_LOCAL in tests
	Port uint32

	// f is the listening socket, non-blocking in the runtime poller: a
	// vsock listener blocked in accept is not woken by shutdown or close,
	// but closing f wakes a poller wait.
	f *os.File
}

// ListenVsock listens on port for connections from any CID.
func ListenVsock(cid, port uint32) (*Vsock, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("vsock socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: cid, Port: port}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind vsock port %d: %w", port, err)
	}
	if err := unix.Listen(fd, 16); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("listen on vsock port %d: %w", port, err)
	}
	return &Vsock{CID: cid, Port: port, f: os.NewFile(uintptr(fd), fmt.Sprintf("vsock-listen:%d", port))}, nil
}

// Accept returns the next host connection.
func (v *Vsock) Accept() (io.ReadWriteCloser, error) {
	rc, err := v.f.SyscallConn()
	if err != nil {
		return nil, errors.New("vsock listener closed")
	}
	nfd := -1
	var aerr error
	err = rc.Read(func(fd uintptr) bool {
		for {
			nfd, _, aerr = unix.Accept4(int(fd), unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
			switch {
			case errors.Is(aerr, unix.EINTR), errors.Is(aerr, unix.ECONNABORTED):
				continue
			case errors.Is(aerr, unix.EAGAIN):
				return false // wait in the poller
			}
			return true
		}
	})
	if err != nil {
		return nil, fmt.Errorf("accept on vsock port %d: %w", v.Port, err)
	}
	if aerr != nil {
		return nil, fmt.Errorf("accept on vsock port %d: %w", v.Port, aerr)
	}
	// Non-blocking, so the file joins the runtime poller and Close
	// interrupts a blocked read, as for the virtio-serial port.
	return os.NewFile(uintptr(nfd), fmt.Sprintf("vsock:%d", v.Port)), nil
}

// Close stops Accept, waking one that is blocked.
func (v *Vsock) Close() error {
	err := v.f.Close()
	if errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}

// virtioIDVsock is the virtio device id of a vsock device (the virtio
// specification's "socket device").
const virtioIDVsock = 19

// Auto picks the agent's channel for a command line that names none (an
// older bangerd's): the named virtio-serial port (QEMU) or a virtio vsock
// device (Firecracker). It looks for the device the VMM provides, never at
// /dev/vsock: that node exists whenever the vsock module is loaded, in a
// QEMU guest too (vsock_loopback, or the module loaded at boot), and a
// listener there would wait for a host that can never connect. Devices may
// show up a little after the agent starts, while modules load, so it waits
// for one of them, up to limit.
func Auto(sysRoot, devRoot string, ports int, limit time.Duration) (Listener, error) {
	vs := &VirtioSerial{Name: agentproto.PortName, SysRoot: sysRoot, DevRoot: devRoot}
	deadline := time.Now().Add(limit)
	for {
		if _, err := vs.FindPort(); err == nil {
			return newPortsAt(ports, sysRoot, devRoot), nil
		}
		if hasVirtioDevice(sysRoot, virtioIDVsock) {
			return ListenVsock(unix.VMADDR_CID_ANY, agentproto.VsockPort)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no agent channel after %s: neither a virtio-serial port named %q nor a virtio vsock device", limit, agentproto.PortName)
		}
		time.Sleep(idlePoll)
	}
}

// hasVirtioDevice reports whether a virtio device with the given device id
// is on the virtio bus (sysfs shows each as /sys/bus/virtio/devices/*/device,
// a hex id).
func hasVirtioDevice(sysRoot string, id uint64) bool {
	dir := filepath.Join(sysRoot, "bus", "virtio", "devices")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "device"))
		if err != nil {
			continue
		}
		if v, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimSpace(string(b)), "0x"), 16, 32); err == nil && v == id {
			return true
		}
	}
	return false
}
