package transport

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
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

	mu sync.Mutex
	fd int
}

// ListenVsock listens on port for connections from any CID.
func ListenVsock(cid, port uint32) (*Vsock, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
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
	return &Vsock{CID: cid, Port: port, fd: fd}, nil
}

// Accept returns the next host connection.
func (v *Vsock) Accept() (io.ReadWriteCloser, error) {
	for {
		v.mu.Lock()
		fd := v.fd
		v.mu.Unlock()
		if fd < 0 {
			return nil, errors.New("vsock listener closed")
		}
		nfd, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ECONNABORTED) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("accept on vsock port %d: %w", v.Port, err)
		}
		// Non-blocking, so the file joins the runtime poller and Close
		// interrupts a blocked read, as for the virtio-serial port.
		return os.NewFile(uintptr(nfd), fmt.Sprintf("vsock:%d", v.Port)), nil
	}
}

// Close stops Accept.
func (v *Vsock) Close() error {
	v.mu.Lock()
	fd := v.fd
	v.fd = -1
	v.mu.Unlock()
	if fd < 0 {
		return nil
	}
	// shutdown wakes a blocked accept; close alone does not.
	_ = unix.Shutdown(fd, unix.SHUT_RDWR)
	return unix.Close(fd)
}

// Auto picks the agent's channel by what the VMM provides: the named
// virtio-serial port (QEMU) or a vsock device (Firecracker). Devices may
// show up a little after the agent starts, while modules load, so it waits
// for one of them, up to limit.
func Auto(sysRoot, devRoot string, limit time.Duration) (Listener, error) {
	vs := &VirtioSerial{Name: agentproto.PortName, SysRoot: sysRoot, DevRoot: devRoot}
	deadline := time.Now().Add(limit)
	for {
		if _, err := vs.FindPort(); err == nil {
			return vs, nil
		}
		if _, err := os.Stat(devRoot + "/vsock"); err == nil {
			return ListenVsock(unix.VMADDR_CID_ANY, agentproto.VsockPort)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no agent channel after %s: neither a virtio-serial port named %q nor %s/vsock", limit, agentproto.PortName, devRoot)
		}
		time.Sleep(idlePoll)
	}
}
