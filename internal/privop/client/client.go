// Package client is bangerd's side of the root helper protocol
// (internal/privop): it dials the helper's socket, checks through
// SO_PEERCRED that the process serving it is root before sending anything,
// sends one typed op per connection (with file descriptors for
// launch_firecracker) and returns the result, a typed *privop.Error, or a
// file descriptor passed with SCM_RIGHTS (open_tap, debootstrap_image).
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"time"

	"banger/internal/peercred"
	"banger/internal/privop"

	"golang.org/x/sys/unix"
)

// ErrNotRoot is wrapped when the socket is served by a process that is not
// root: it may be a squatter posing as the helper.
var ErrNotRoot = errors.New("helper socket is not served by root")

// DefaultTimeout bounds a call whose ctx has no deadline.
const DefaultTimeout = 90 * time.Second

// BuildTimeout bounds a DebootstrapImage call whose ctx has no deadline.
const BuildTimeout = privop.BuildCallTimeout

// Client calls the helper. The zero value is not usable; set Socket.
type Client struct {
	// Socket is the helper's socket path.
	Socket string
	// HelperUID is the uid the serving process must have. It is 0 (root)
	// in production; only tests that run an unprivileged helper change it.
	HelperUID uint32
}

// New returns a Client for the helper at socket.
func New(socket string) *Client { return &Client{Socket: socket} }

// Call sends op and returns the raw result and the fd that came with it,
// if any (the caller owns the file). A refusal or failure of the helper is
// a *privop.Error.
func (c *Client) Call(ctx context.Context, op privop.Op) (json.RawMessage, *os.File, error) {
	return c.CallWithFiles(ctx, op, nil)
}

// CallWithFiles is Call for an op whose request carries fds
// (privop.RequestFiles): files are sent with the request (SCM_RIGHTS) and
// stay the caller's.
func (c *Client) CallWithFiles(ctx context.Context, op privop.Op, files []*os.File) (json.RawMessage, *os.File, error) {
	if want := privop.RequestFiles(op); len(files) != want {
		return nil, nil, fmt.Errorf("%s: %d files given, the request carries %d", op.Name(), len(files), want)
	}
	body, err := privop.EncodeRequest(op)
	if err != nil {
		return nil, nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", c.Socket)
	if err != nil {
		return nil, nil, fmt.Errorf("dial helper: %w", err)
	}
	conn, ok := nc.(*net.UnixConn)
	if !ok {
		nc.Close()
		return nil, nil, fmt.Errorf("dial helper: %T is not a unix connection", nc)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}

	cred, err := peercred.Get(conn)
	if err != nil {
		return nil, nil, fmt.Errorf("check helper: %w", err)
	}
	if cred.UID != c.HelperUID {
		return nil, nil, fmt.Errorf("%s is served by uid %d (pid %d), want uid %d: %w", c.Socket, cred.UID, cred.PID, c.HelperUID, ErrNotRoot)
	}

	werr := writeRequest(conn, privop.Frame(body), files)
	answer, file, rerr := readAnswer(conn)
	if rerr != nil {
		if ctx.Err() != nil {
			return nil, nil, fmt.Errorf("%s: %w", op.Name(), ctx.Err())
		}
		// The connection's deadline is the context's: it may fire a
		// moment before the context reports it.
		if dl, ok := ctx.Deadline(); ok && errors.Is(rerr, os.ErrDeadlineExceeded) && !time.Now().Before(dl) {
			return nil, nil, fmt.Errorf("%s: %w", op.Name(), context.DeadlineExceeded)
		}
		if werr != nil {
			// The helper closed before reading, and said nothing.
			return nil, nil, fmt.Errorf("send %s: %w", op.Name(), werr)
		}
		return nil, nil, fmt.Errorf("%s: %w", op.Name(), rerr)
	}
	result, err := privop.DecodeAnswer(answer)
	if err != nil {
		if file != nil {
			file.Close()
		}
		return nil, nil, err
	}
	return result, file, nil
}

// writeRequest writes one request frame, with files' fds on its first
// byte.
func writeRequest(conn *net.UnixConn, frame []byte, files []*os.File) error {
	if len(files) == 0 {
		_, err := conn.Write(frame)
		return err
	}
	fds := make([]int, len(files))
	for i, f := range files {
		if f == nil {
			return fmt.Errorf("send request: file %d is nil", i)
		}
		// Not f.Fd(): that would switch the caller's file to blocking
		// mode for good.
		rc, err := f.SyscallConn()
		if err != nil {
			return fmt.Errorf("send request: file %d: %w", i, err)
		}
		if err := rc.Control(func(fd uintptr) { fds[i] = int(fd) }); err != nil {
			return fmt.Errorf("send request: file %d: %w", i, err)
		}
	}
	n, _, err := conn.WriteMsgUnix(frame, unix.UnixRights(fds...), nil)
	runtime.KeepAlive(files) // the fds must stay open until sent
	if err == nil && n < len(frame) {
		_, err = conn.Write(frame[n:])
	}
	return err
}

// readAnswer reads one answer frame, collecting any fds passed with it.
// At most one fd is kept; extras are closed.
func readAnswer(conn *net.UnixConn) ([]byte, *os.File, error) {
	var (
		buf   []byte
		fds   []int
		chunk = make([]byte, 4096)
		oob   = make([]byte, unix.CmsgSpace(4*4))
	)
	closeFDs := func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	for {
		n, oobn, _, _, err := conn.ReadMsgUnix(chunk, oob)
		// On an error (a deadline, say) n may be -1: nothing was read.
		n, oobn = max(n, 0), max(oobn, 0)
		if oobn > 0 {
			got, perr := parseRights(oob[:oobn])
			fds = append(fds, got...)
			if perr != nil {
				closeFDs()
				return nil, nil, perr
			}
		}
		buf = append(buf, chunk[:n]...)
		if len(buf) >= 4 {
			size := int(uint32(buf[0])<<24 | uint32(buf[1])<<16 | uint32(buf[2])<<8 | uint32(buf[3]))
			if size > privop.MaxAnswer {
				closeFDs()
				return nil, nil, fmt.Errorf("read answer: %d bytes exceeds %d: %w", size, privop.MaxAnswer, privop.ErrFrameTooLarge)
			}
			if len(buf) >= 4+size {
				var f *os.File
				for i, fd := range fds {
					if i == 0 {
						f = os.NewFile(uintptr(fd), "helper-fd")
						continue
					}
					unix.Close(fd)
				}
				return buf[4 : 4+size], f, nil
			}
		}
		if err != nil {
			closeFDs()
			return nil, nil, fmt.Errorf("read answer: %w", err)
		}
		if n == 0 && oobn == 0 {
			closeFDs()
			return nil, nil, errors.New("read answer: connection closed early")
		}
	}
}

func parseRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("parse control message: %w", err)
	}
	var fds []int
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_RIGHTS {
			continue
		}
		got, err := unix.ParseUnixRights(&m)
		if err != nil {
			return fds, fmt.Errorf("parse rights: %w", err)
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

// Do implements privop.Host for ops without a result.
func (c *Client) Do(ctx context.Context, op privop.Op, _ func(string)) error {
	_, f, err := c.Call(ctx, op)
	if f != nil {
		f.Close()
	}
	return err
}

// Ping asks the helper for its version, owner and ops.
func (c *Client) Ping(ctx context.Context) (privop.PingResult, error) {
	var r privop.PingResult
	raw, f, err := c.Call(ctx, privop.Ping{})
	if f != nil {
		f.Close()
	}
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return r, fmt.Errorf("decode ping result: %w", err)
	}
	return r, nil
}

// OpenTap returns an open queue of tap, for a VMM (QEMU -netdev tap,fd=N).
func (c *Client) OpenTap(ctx context.Context, tap string) (*os.File, error) {
	_, f, err := c.Call(ctx, privop.OpenTap{Tap: tap})
	if err != nil {
		return nil, err
	}
	if f == nil {
		return nil, fmt.Errorf("open tap %s: helper sent no file descriptor", tap)
	}
	return f, nil
}

// SyncResolverRouting asks the helper to route the host's ".vm" lookups on
// bridge's link to server ("IP:PORT", the bridge's gateway and bangerd's
// DNS port). A host without systemd-resolved is not an error: the result
// says Applied false and why.
func (c *Client) SyncResolverRouting(ctx context.Context, bridge, server string) (privop.ResolverRoutingResult, error) {
	return c.resolverRouting(ctx, privop.SyncResolverRouting{Bridge: bridge, Server: server})
}

// ClearResolverRouting asks the helper to revert the resolver settings of
// bridge's link.
func (c *Client) ClearResolverRouting(ctx context.Context, bridge string) (privop.ResolverRoutingResult, error) {
	return c.resolverRouting(ctx, privop.ClearResolverRouting{Bridge: bridge})
}

func (c *Client) resolverRouting(ctx context.Context, op privop.Op) (privop.ResolverRoutingResult, error) {
	var r privop.ResolverRoutingResult
	raw, f, err := c.Call(ctx, op)
	if f != nil {
		f.Close()
	}
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return r, fmt.Errorf("decode %s result: %w", op.Name(), err)
	}
	return r, nil
}

// DebootstrapImage asks the helper to build a Debian image for suite (e.g.
// "bookworm") from mirror (empty: the default Debian mirror). It returns the
// image's size and sha256 and the finished ext4, open read-only at offset 0;
// the caller owns the file (copy it where it belongs, then close it). The
// helper keeps no copy. It takes minutes: without a deadline in ctx the call
// is bounded by BuildTimeout. A build already in progress makes it fail
// with a *privop.Error of code busy.
func (c *Client) DebootstrapImage(ctx context.Context, suite, mirror string) (privop.DebootstrapImageResult, *os.File, error) {
	var r privop.DebootstrapImageResult
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, BuildTimeout)
		defer cancel()
	}
	raw, f, err := c.Call(ctx, privop.DebootstrapImage{Suite: suite, Mirror: mirror})
	if err != nil {
		return r, nil, err
	}
	if f == nil {
		return r, nil, fmt.Errorf("build %s image: helper sent no file descriptor", suite)
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		f.Close()
		return r, nil, fmt.Errorf("decode debootstrap_image result: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return r, nil, fmt.Errorf("stat built image: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Size() != r.Size {
		f.Close()
		return r, nil, fmt.Errorf("build %s image: helper sent a %v file of %d bytes, want a regular file of %d", suite, fi.Mode().Type(), fi.Size(), r.Size)
	}
	return r, f, nil
}

// LaunchFirecracker asks the helper to stage op.VMID's jail and start
// firecracker in it through the jailer, as a uid of the VM's own.
// files are the fds of op.Files, in that order: the console (opened for
// writing; it becomes firecracker's stdout and stderr), the kernel and
// initrd (opened for reading) and the drives (read-write unless the drive
// is read-only); they stay the caller's. The helper answers with
// firecracker's pid and the jail's root as the host sees it.
func (c *Client) LaunchFirecracker(ctx context.Context, op privop.LaunchFirecracker, files []*os.File) (privop.LaunchFirecrackerResult, error) {
	var r privop.LaunchFirecrackerResult
	raw, f, err := c.CallWithFiles(ctx, op, files)
	if f != nil {
		f.Close()
	}
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return r, fmt.Errorf("decode launch_firecracker result: %w", err)
	}
	return r, nil
}

// DialJail asks the helper to connect to socket (privop.SocketAPI or
// SocketVsock) of vmID's running firecracker, waiting up to wait for it to
// appear, and returns the connection.
func (c *Client) DialJail(ctx context.Context, vmID, socket string, wait time.Duration) (net.Conn, error) {
	op := privop.DialJail{VMID: vmID, Socket: socket, WaitMS: int(wait / time.Millisecond)}
	if deadline, ok := ctx.Deadline(); !ok || time.Until(deadline) > wait+5*time.Second {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, wait+5*time.Second)
		defer cancel()
	}
	_, f, err := c.Call(ctx, op)
	if err != nil {
		if f != nil {
			f.Close()
		}
		return nil, err
	}
	if f == nil {
		return nil, fmt.Errorf("dial_jail: the helper answered without a socket")
	}
	defer f.Close()
	conn, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("dial_jail: %w", err)
	}
	return conn, nil
}

// SignalVMM asks the helper to send signal (privop.SignalTerm or
// SignalKill) to vmID's recorded firecracker.
func (c *Client) SignalVMM(ctx context.Context, vmID, signal string) error {
	return c.Do(ctx, privop.SignalVMM{VMID: vmID, Signal: signal}, nil)
}

// CleanupJail asks the helper to unmount and remove vmID's jail. It is
// refused while that VM's firecracker still runs; a jail already gone is
// fine.
func (c *Client) CleanupJail(ctx context.Context, vmID string) error {
	return c.Do(ctx, privop.CleanupJail{VMID: vmID}, nil)
}

// CreateSnapshot asks the helper to make vmID's root disk a dm snapshot of
// base (open for reading) with writes going to cow (open read-write, made
// and sized by the caller); both stay the caller's. The answer carries the
// snapshot device open read-write.
func (c *Client) CreateSnapshot(ctx context.Context, vmID string, base, cow *os.File) (privop.CreateSnapshotResult, *os.File, error) {
	var r privop.CreateSnapshotResult
	raw, f, err := c.CallWithFiles(ctx, privop.CreateSnapshot{VMID: vmID}, []*os.File{base, cow})
	if err != nil {
		if f != nil {
			f.Close()
		}
		return r, nil, err
	}
	if f == nil {
		return r, nil, errors.New("dm_snapshot_create answered without the device")
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		f.Close()
		return r, nil, fmt.Errorf("decode dm_snapshot_create result: %w", err)
	}
	return r, f, nil
}

// RemoveSnapshot asks the helper to remove vmID's snapshot device (the COW
// file stays); none is fine.
func (c *Client) RemoveSnapshot(ctx context.Context, vmID string) error {
	return c.Do(ctx, privop.RemoveSnapshot{VMID: vmID}, nil)
}
