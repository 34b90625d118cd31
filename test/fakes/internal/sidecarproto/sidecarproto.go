// Package sidecarproto is the private protocol between the fake firecracker
// (jailed, unprivileged) and the fake jailer's sidecar (outside the jail,
// root), which runs the guest under QEMU on its behalf.
//
// The channel is an AF_UNIX SOCK_SEQPACKET socketpair: the jailer keeps one
// end for the sidecar and hands the other to firecracker as fd 3. Every
// datagram is one JSON Message; file descriptors travel with it as
// SCM_RIGHTS and are referred to by their index in that datagram.
//
// Firecracker sends requests (Op boot, agent, ctrl-alt-del, pause, resume)
// one at a time, each with a fresh Seq; the sidecar answers each with Op
// reply and the same Seq. Unsolicited, the sidecar sends Op hello (first,
// carrying its PID), Op port each time the guest opens or closes one of the
// agent's virtio-serial ports (Port, Open), and Op exit (once, when the VM
// is gone, with Reason). An agent request names the port (Port) it wants a
// connection to.
// Either side closing its end ends the session: the sidecar then kills QEMU
// and removes its private directory.
package sidecarproto

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// FD is the descriptor number the channel has in firecracker.
const FD = 3

// Greeting identifies the sidecar in its hello message, so that firecracker
// does not mistake an unrelated inherited fd 3 for it.
const Greeting = "fake-firecracker-sidecar/1"

// Limits of one datagram.
const (
	MaxMessage = 64 << 10
	MaxFDs     = 32
)

// Ops.
const (
	OpHello      = "hello"
	OpBoot       = "boot"
	OpAgent      = "agent"
	OpCtrlAltDel = "ctrl-alt-del"
	OpPause      = "pause"
	OpResume     = "resume"
	OpReply      = "reply"
	OpExit       = "exit"
	OpPort       = "port"
)

// Exit reasons. Any other reason means QEMU died unexpectedly.
const (
	ReasonGuestReset    = "guest-reset"    // guest reboot, triple fault or panic=N: real FC exits 0
	ReasonGuestShutdown = "guest-shutdown" // guest poweroff/halt: real FC keeps running
)

// Message is one datagram.
type Message struct {
	Op       string `json:"op"`
	Seq      uint64 `json:"seq,omitempty"`
	Error    string `json:"error,omitempty"`    // reply: empty on success
	Greeting string `json:"greeting,omitempty"` // hello
	PID      int    `json:"pid,omitempty"`      // hello: the sidecar's PID
	Boot     *Boot  `json:"boot,omitempty"`     // boot
	Reason   string `json:"reason,omitempty"`   // exit
	Port     int    `json:"port,omitempty"`     // agent, port: index of the agent port
	Open     bool   `json:"open,omitempty"`     // port: the guest has the port open
}

// Boot describes the guest. Every *FD field is an index into the fds sent
// with the message, or -1 for none. Files were opened by firecracker inside
// the jail as the jailed uid, so the sidecar never resolves a path itself.
type Boot struct {
	ID        string  `json:"id"`
	VCPU      int     `json:"vcpu"`
	MemMiB    int     `json:"mem_mib"`
	Cmdline   string  `json:"cmdline"`
	KernelFD  int     `json:"kernel_fd"`
	InitrdFD  int     `json:"initrd_fd"`
	Drives    []Drive `json:"drives,omitempty"` // in guest order: the root drive first
	Net       *Net    `json:"net,omitempty"`
	ConsoleFD int     `json:"console_fd"` // where serial output goes; -1: the sidecar's stdout
	Entropy   bool    `json:"entropy,omitempty"`
}

// Drive is one block device.
type Drive struct {
	FD       int  `json:"fd"`
	ReadOnly bool `json:"read_only"`
}

// Net is the guest NIC: a tap already attached with TUNSETIFF.
type Net struct {
	FD  int    `json:"fd"`
	MAC string `json:"mac"`
}

// Conn is one end of the channel.
type Conn struct {
	c *net.UnixConn
}

// Pair returns a connected SOCK_SEQPACKET socketpair, close-on-exec.
func Pair() (a, b *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("create socketpair: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "sidecar-a"), os.NewFile(uintptr(fds[1]), "sidecar-b"), nil
}

// IsChannel reports whether fd is an AF_UNIX SOCK_SEQPACKET socket.
func IsChannel(fd int) bool {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil || typ != unix.SOCK_SEQPACKET {
		return false
	}
	dom, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	return err == nil && dom == unix.AF_UNIX
}

// FromFile wraps f, which must be a channel end. f is closed: the Conn owns
// a close-on-exec duplicate, so the raw descriptor does not leak into
// children.
func FromFile(f *os.File) (*Conn, error) {
	defer f.Close()
	if !IsChannel(int(f.Fd())) {
		return nil, errors.New("open sidecar channel: not an AF_UNIX SOCK_SEQPACKET socket")
	}
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("open sidecar channel: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("open sidecar channel: unexpected %T", c)
	}
	return &Conn{c: uc}, nil
}

// UnixConn exposes the socket (deadlines).
func (c *Conn) UnixConn() *net.UnixConn { return c.c }

// Close closes the channel end.
func (c *Conn) Close() error { return c.c.Close() }

// Send writes m with files attached.
func (c *Conn) Send(m Message, files ...*os.File) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %s message: %w", m.Op, err)
	}
	if len(b) > MaxMessage {
		return fmt.Errorf("send %s message: %d bytes exceeds %d", m.Op, len(b), MaxMessage)
	}
	if len(files) > MaxFDs {
		return fmt.Errorf("send %s message: %d fds exceeds %d", m.Op, len(files), MaxFDs)
	}
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := c.c.WriteMsgUnix(b, oob, nil); err != nil {
		return fmt.Errorf("send %s message: %w", m.Op, err)
	}
	return nil
}

// Recv reads one message and the files sent with it (close-on-exec). It
// returns io.EOF once the peer has closed its end.
func (c *Conn) Recv() (Message, []*os.File, error) {
	buf := make([]byte, MaxMessage+1)
	oob := make([]byte, unix.CmsgSpace(MaxFDs*4))
	n, oobn, flags, _, err := c.c.ReadMsgUnix(buf, oob)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return Message{}, nil, io.EOF
		}
		return Message{}, nil, fmt.Errorf("receive message: %w", err)
	}
	files, ferr := parseRights(oob[:oobn])
	if n == 0 && oobn == 0 {
		// A zero-length datagram is how SOCK_SEQPACKET reports the peer's
		// close; the protocol never sends an empty message.
		return Message{}, nil, io.EOF
	}
	fail := func(err error) (Message, []*os.File, error) {
		for _, f := range files {
			f.Close()
		}
		return Message{}, nil, err
	}
	if ferr != nil {
		return fail(ferr)
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 || n > MaxMessage {
		return fail(errors.New("receive message: truncated datagram"))
	}
	var m Message
	if err := json.Unmarshal(buf[:n], &m); err != nil {
		return fail(fmt.Errorf("decode message: %w", err))
	}
	return m, files, nil
}

func parseRights(oob []byte) ([]*os.File, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("parse control message: %w", err)
	}
	var files []*os.File
	for _, cm := range msgs {
		fds, err := unix.ParseUnixRights(&cm)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			// Go may already ask for MSG_CMSG_CLOEXEC; setting it again is
			// harmless and keeps the fds out of QEMU unless passed on purpose.
			unix.CloseOnExec(fd)
			files = append(files, os.NewFile(uintptr(fd), "received"))
		}
	}
	return files, nil
}
