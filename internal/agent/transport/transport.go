// Package transport gives the guest agent its host connections. Under QEMU
// that is the virtio-serial port named agentproto.PortName; under
// Firecracker a vsock listener on agentproto.VsockPort. Either way the
// agent sees a listener that yields one byte stream per host connection.
package transport

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/agent/cmdline"
	"banger/internal/agentproto"
)

// Listener yields host connections. Each connection carries one handshake
// plus one yamux session. A virtio-serial port yields one connection at a
// time; vsock may yield several concurrently.
type Listener interface {
	Accept() (io.ReadWriteCloser, error)
	Close() error
}

// idlePoll is how often a port without a connected host is re-checked.
// Reads on such a port return 0 bytes at once, so waiting must not spin.
const idlePoll = 75 * time.Millisecond

// autoWait bounds how long Auto waits for a channel device to appear.
const autoWait = 30 * time.Second

// New returns the listener for a banger.transport= value. ports is
// banger.agentports=: how many virtio-serial agent ports to serve at once.
func New(kind string, ports int) (Listener, error) {
	switch kind {
	case "", cmdline.TransportAuto:
		return Auto("/sys", "/dev", ports, autoWait)
	case cmdline.TransportVirtioSerial:
		return NewPorts(ports), nil
	case cmdline.TransportVsock:
		return ListenVsock(unix.VMADDR_CID_ANY, agentproto.VsockPort)
	default:
		return nil, fmt.Errorf("unknown transport %q", kind)
	}
}

// VirtioSerial serves a named virtio-serial port. The port outlives host
// connections: each Accept reopens it once the previous connection is
// closed and data from a host is waiting.
type VirtioSerial struct {
	Name    string
	SysRoot string // "/sys" unless testing
	DevRoot string // "/dev" unless testing

	mu     sync.Mutex
	busy   chan struct{} // closed when the current connection is closed
	closed bool
	// Ready is called once, the first time the port is opened.
	Ready func(path string)
	// Logf reports why the port cannot be opened (once per distinct reason).
	Logf      func(format string, args ...any)
	readyOnce sync.Once
}

// NewVirtioSerial returns a listener for the port called name.
func NewVirtioSerial(name string) *VirtioSerial {
	return &VirtioSerial{Name: name, SysRoot: "/sys", DevRoot: "/dev"}
}

// FindPort returns the /dev node of the port called name by scanning
// /sys/class/virtio-ports/*/name (there is no udev to make by-name links
// when the agent is PID 1).
func (v *VirtioSerial) FindPort() (string, error) {
	ents, err := os.ReadDir(filepath.Join(v.SysRoot, "class", "virtio-ports"))
	if err != nil {
		return "", fmt.Errorf("list virtio ports: %w", err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(v.SysRoot, "class", "virtio-ports", e.Name(), "name"))
		if err != nil {
			continue
		}
		if strings.TrimSpace(string(b)) == v.Name {
			return filepath.Join(v.DevRoot, e.Name()), nil
		}
	}
	return "", fmt.Errorf("no virtio port named %q", v.Name)
}

// Accept blocks until the previous connection is closed, the port exists and
// a host has sent data, then returns the open port.
func (v *VirtioSerial) Accept() (io.ReadWriteCloser, error) {
	v.mu.Lock()
	busy := v.busy
	v.mu.Unlock()
	if busy != nil {
		<-busy
	}
	var lastErr string
	for attempt := 1; ; attempt++ {
		if v.isClosed() {
			return nil, errClosed
		}
		f, err := v.open()
		if err == nil {
			return f, nil
		}
		// The port may appear a little late (modules loading); complain only
		// when it stays missing, and once per distinct reason.
		if msg := err.Error(); attempt >= 10 && msg != lastErr {
			lastErr = msg
			if v.Logf != nil {
				v.Logf("waiting for port: %v", err)
			}
		}
		time.Sleep(idlePoll * 4)
	}
}

func (v *VirtioSerial) open() (io.ReadWriteCloser, error) {
	for {
		path, err := v.FindPort()
		if err != nil {
			return nil, err
		}
		// O_NONBLOCK puts the file in the runtime poller, so closing it
		// interrupts a blocked read or write when a session is torn down.
		fd, err := unix.Open(path, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", path, err)
		}
		v.readyOnce.Do(func() {
			if v.Ready != nil {
				v.Ready(path)
			}
		})
		prefix, left, err := waitForHost(fd, v.isClosed)
		if err != nil {
			_ = unix.Close(fd)
			if errors.Is(err, errClosed) {
				return nil, err
			}
			return nil, fmt.Errorf("wait for a host on %s: %w", path, err)
		}
		if left {
			_ = unix.Close(fd) // drops what the vanished host left queued
			continue
		}
		c := &portConn{File: os.NewFile(uintptr(fd), path), pending: prefix, done: make(chan struct{})}
		v.mu.Lock()
		v.busy = c.done
		v.mu.Unlock()
		return c, nil
	}
}

func (v *VirtioSerial) isClosed() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.closed
}

// Close stops Accept.
func (v *VirtioSerial) Close() error {
	v.mu.Lock()
	v.closed = true
	v.mu.Unlock()
	return nil
}

// portConn is an open port; closing it lets Accept reopen the port.
type portConn struct {
	*os.File
	pending []byte // read while waiting for the host, not yet returned
	once    sync.Once
	done    chan struct{}
}

func (c *portConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.File.Read(p)
}

func (c *portConn) Close() error {
	var err error
	c.once.Do(func() {
		err = c.File.Close()
		close(c.done)
	})
	return err
}
