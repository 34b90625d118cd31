package jail

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// errNoSocket: the socket (or its directory) is not there yet.
var errNoSocket = errors.New("socket not there yet")

// Dial connects to the unix socket at rel (an absolute path as firecracker
// sees it, such as privop.JailAPISocket) inside the jail whose root is
// chroot, waiting up to wait for it to appear, and returns the connected
// socket. The jail is the VM's uid's to change, so the path is walked one
// component at a time from the chroot without following a symlink, the
// last component must be a socket, and the connection goes to that very
// inode (through /proc/self/fd). peerPID, when not zero, must be the
// process listening on it (SO_PEERCRED): root's connection is handed to
// the owner, and must reach the VM's firecracker, not whatever a
// subverted one bound there. alive, when not nil, ends the wait as soon as
// firecracker is gone.
func Dial(ctx context.Context, chroot, rel string, peerPID int, wait time.Duration, alive func() bool) (*os.File, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		f, err := dialOnce(chroot, rel, peerPID)
		if !errors.Is(err, errNoSocket) {
			return f, err
		}
		if alive != nil && !alive() {
			return nil, fmt.Errorf("dial %s: firecracker exited before creating it; see the VM's console log", rel)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("dial %s in the jail: not there within %s", rel, wait)
		case <-tick.C:
		}
	}
}

func dialOnce(chroot, rel string, peerPID int) (*os.File, error) {
	fd, err := openNoFollow(chroot)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", rel, err)
	}
	parts := strings.Split(strings.TrimPrefix(rel, "/"), "/")
	for i, p := range parts {
		if err := validName(p); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("dial %s: %w", rel, err)
		}
		next, err := openAtNoFollow(fd, p)
		unix.Close(fd)
		if errors.Is(err, unix.ENOENT) {
			return nil, errNoSocket
		}
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", rel, err)
		}
		fd = next
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("dial %s: stat %s: %w", rel, p, err)
		}
		want, what := uint32(unix.S_IFDIR), "a directory"
		if i == len(parts)-1 {
			want, what = unix.S_IFSOCK, "a socket"
		}
		if st.Mode&unix.S_IFMT != want {
			unix.Close(fd)
			return nil, fmt.Errorf("dial %s: %s in the jail is not %s: %w", rel, p, what, ErrUnsafe)
		}
	}
	defer unix.Close(fd)
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", rel, err)
	}
	if err := unix.Connect(s, &unix.SockaddrUnix{Name: fdPath(fd)}); err != nil {
		unix.Close(s)
		if errors.Is(err, unix.ECONNREFUSED) {
			// Bound but not listening yet (or no longer).
			return nil, errNoSocket
		}
		return nil, fmt.Errorf("dial %s: %w", rel, err)
	}
	if peerPID != 0 {
		cred, err := unix.GetsockoptUcred(s, unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			unix.Close(s)
			return nil, fmt.Errorf("dial %s: peer credentials: %w", rel, err)
		}
		if int(cred.Pid) != peerPID {
			unix.Close(s)
			return nil, fmt.Errorf("dial %s: it is served by pid %d, not the VM's firecracker (pid %d): %w", rel, cred.Pid, peerPID, ErrUnsafe)
		}
	}
	return os.NewFile(uintptr(s), rel), nil
}
