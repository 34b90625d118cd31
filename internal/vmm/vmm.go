// Package vmm defines the driver interface every VMM backend implements
// (QEMU microvm today, Firecracker next) and the process handle bangerd keeps
// for a running VM. Drivers launch and find VMM processes; they do not know
// about the state database or the guest agent protocol beyond dialing its
// transport.
package vmm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/procstat"
)

// Drive is a block device given to the guest, in order: the first is the
// root disk (/dev/vda), the next the work disk (/dev/vdb).
type Drive struct {
	ID       string
	Path     string
	ReadOnly bool
	// File, when set, is the drive already open (read-write unless
	// ReadOnly) and Path only its name: a dm snapshot device the root
	// helper opened, which bangerd could not open by path. Block says it
	// is a block device rather than a regular file. The driver passes its
	// own copy to the VMM; the caller closes File.
	File  *os.File
	Block bool
	// Format is the disk format: "" for raw, FormatQCOW2 for an overlay
	// (QEMU only; other drivers refuse it).
	Format string
}

// FormatQCOW2 is Drive.Format of a qcow2 overlay.
const FormatQCOW2 = "qcow2"

// Spec is everything a driver needs to launch one VM.
type Spec struct {
	ID        string // VM id; drivers embed it in the process so adoption can verify it
	Name      string
	VCPU      int
	MemoryMiB int
	Kernel    string // uncompressed ELF vmlinux
	Initrd    string
	Cmdline   string // kernel command line
	Drives    []Drive
	RunDir    string // private dir for sockets (short path: sun_path is 108 bytes)
	LogPath   string // where the VMM's own stderr goes
	// ConsoleLog is the VM's console log. A driver whose VMM serves the
	// console on a socket (Handle.ConsoleSock) leaves it to bangerd; one
	// whose VMM can only write its serial port to stdout sends it here.
	ConsoleLog string
	Net        *Net // nil: no network device
}

// Net is the guest's network device: a tap opened by the root helper and
// handed over as a file, since an unprivileged VMM may not be able to open
// /dev/net/tun itself.
type Net struct {
	Tap     *os.File
	TapName string // for a VMM that opens the tap itself (Firecracker)
	MAC     string
}

// Handle identifies a running VMM process across bangerd restarts.
type Handle struct {
	VMM       string
	PID       int
	PIDStart  uint64
	AgentSock string
	// AgentPort, when set, makes AgentSock a Firecracker vsock socket:
	// a connection starts with "CONNECT <port>" and its "OK" answer.
	AgentPort uint32 `json:",omitempty"`
	// ConsoleSock is empty when the VMM writes the console to
	// Spec.ConsoleLog itself.
	ConsoleSock string
	Accel       string
	// JailID is the id the VMM runs under in its jail (Firecracker).
	JailID string `json:",omitempty"`
}

// Probe is a driver's verdict on this host.
type Probe struct {
	Available bool
	Accel     string // kvm | tcg
	Reason    string
}

// Driver is one VMM backend. Contracts:
//   - Start returns once the VMM process runs and its console can be read; it
//     does not wait for the guest. On error nothing is left running.
//   - Adopt re-attaches to a VMM from a Handle persisted earlier, and fails
//     with ErrGone when that exact process no longer exists.
type Driver interface {
	Name() string
	Probe(ctx context.Context) Probe
	Start(ctx context.Context, spec Spec) (*Process, error)
	Adopt(h Handle) (*Process, error)
}

// ErrGone means the VMM process of a handle no longer exists.
var ErrGone = errors.New("vmm process is gone")

// Process is a running VMM. Its pidfd makes signals and exit notification
// safe against pid reuse, for children and adopted processes alike.
type Process struct {
	Handle Handle
	pidfd  int
	exited chan struct{}
	// reach, when set, signals the process and dials its agent socket in
	// place of the pidfd and AgentSock: a VMM running as a uid of its own
	// (Firecracker) is reached through the root helper.
	reach Reacher
}

// Reacher reaches a VMM that bangerd may not signal or whose sockets it
// may not open itself.
type Reacher interface {
	Signal(ctx context.Context, sig syscall.Signal) error
	DialAgent(ctx context.Context) (net.Conn, error)
}

// ReachThrough makes p signal its process and dial its agent through r.
func (p *Process) ReachThrough(r Reacher) { p.reach = r }

// NewProcess wraps pid, verifying its start time when want is non-zero.
func NewProcess(h Handle) (*Process, error) {
	fd, err := unix.PidfdOpen(h.PID, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil, ErrGone
		}
		return nil, fmt.Errorf("open pidfd %d: %w", h.PID, err)
	}
	// Check the start time after opening the pidfd: if it matches now, the
	// pidfd refers to the process we launched, not to a reused pid.
	st, err := StartTime(h.PID)
	if err != nil || (h.PIDStart != 0 && st != h.PIDStart) {
		unix.Close(fd)
		return nil, ErrGone
	}
	p := &Process{Handle: h, pidfd: fd, exited: make(chan struct{})}
	p.Handle.PIDStart = st
	go p.watch()
	return p, nil
}

func (p *Process) watch() {
	for {
		fds := []unix.PollFd{{Fd: int32(p.pidfd), Events: unix.POLLIN}}
		_, err := unix.Poll(fds, -1)
		if err == nil || !errors.Is(err, unix.EINTR) {
			break
		}
	}
	close(p.exited)
}

// Exited is closed when the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Alive reports whether the process still runs.
func (p *Process) Alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Signal sends sig through the pidfd (or the Reacher).
func (p *Process) Signal(sig syscall.Signal) error {
	if p.reach != nil {
		if !p.Alive() {
			return nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return p.reach.Signal(ctx, sig)
	}
	err := unix.PidfdSendSignal(p.pidfd, sig, nil, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	return err
}

// Wait blocks until the process exits or ctx ends.
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-p.exited:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close releases the pidfd once the process has exited.
func (p *Process) Close() {
	<-p.exited
	unix.Close(p.pidfd)
}

// DialAgent connects to the guest agent's transport (before the handshake).
func (p *Process) DialAgent(ctx context.Context) (net.Conn, error) {
	var c net.Conn
	var err error
	if p.reach != nil {
		c, err = p.reach.DialAgent(ctx)
	} else {
		var d net.Dialer
		c, err = d.DialContext(ctx, "unix", p.Handle.AgentSock)
	}
	if err != nil || p.Handle.AgentPort == 0 {
		return c, err
	}
	if err := VsockConnect(ctx, c, p.Handle.AgentPort); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// VsockConnect runs the host side of Firecracker's hybrid vsock handshake
// on c: "CONNECT <port>\n", answered by "OK <host port>\n". Firecracker
// closes the connection instead when nothing listens on port in the guest.
func VsockConnect(ctx context.Context, c net.Conn, port uint32) error {
	deadline := time.Now().Add(5 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = c.SetDeadline(deadline)
	defer func() { _ = c.SetDeadline(time.Time{}) }()
	if _, err := fmt.Fprintf(c, "CONNECT %d\n", port); err != nil {
		return fmt.Errorf("vsock connect to port %d: %w", port, err)
	}
	// Read byte by byte: whatever follows the line is the guest's stream.
	var line []byte
	b := make([]byte, 1)
	for len(line) < 64 {
		if _, err := c.Read(b); err != nil {
			return fmt.Errorf("vsock connect to port %d: no answer (is the guest listening?): %w", port, err)
		}
		if b[0] == '\n' {
			if !strings.HasPrefix(string(line), "OK ") {
				return fmt.Errorf("vsock connect to port %d: unexpected answer %q", port, line)
			}
			return nil
		}
		line = append(line, b[0])
	}
	return fmt.Errorf("vsock connect to port %d: answer too long", port)
}

// DialConsole connects to the serial console stream.
func (p *Process) DialConsole(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", p.Handle.ConsoleSock)
}

// StartTime reads the start time (clock ticks since boot) of pid from
// /proc/<pid>/stat.
func StartTime(pid int) (uint64, error) {
	st, err := procstat.Read(pid)
	return st.StartTime, err
}

// Cmdline reads /proc/<pid>/cmdline as argv.
func Cmdline(pid int) ([]string, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return nil, err
	}
	return strings.Split(strings.TrimRight(string(data), "\x00"), "\x00"), nil
}

// WaitForSocket polls until path accepts connections, the process exits, or
// ctx ends, and returns the connection.
func WaitForSocket(ctx context.Context, path string, exited <-chan struct{}) (net.Conn, error) {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		c, err := net.Dial("unix", path)
		if err == nil {
			return c, nil
		}
		select {
		case <-exited:
			return nil, fmt.Errorf("vmm exited before %s appeared", path)
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for %s: %w", path, ctx.Err())
		case <-t.C:
		}
	}
}
