package jail

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"banger/internal/privop"

	"golang.org/x/sys/unix"
)

// SocketWait bounds how long ChownSocket waits for firecracker's API
// socket.
const SocketWait = 5 * time.Second

// errNoSocket: the API socket (or its directory) is not there yet.
var errNoSocket = errors.New("API socket not there yet")

// ChownSocket waits (at most SocketWait, and no longer than ctx) until
// firecracker's API socket exists in the jail whose root is chroot, then
// gives it to uid:gid. The socket is reached from the chroot one component
// at a time without following a symlink and changed through its fd, so a
// symlink planted anywhere on the way is refused and its target left
// alone. alive, when not nil, reports whether firecracker still runs;
// waiting stops as soon as it does not.
func ChownSocket(ctx context.Context, chroot string, uid, gid int, alive func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, SocketWait)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := chownSocketOnce(chroot, uid, gid)
		if !errors.Is(err, errNoSocket) {
			return err
		}
		if alive != nil && !alive() {
			return errors.New("wait for API socket: firecracker exited before creating it; see the VM's console log")
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for API socket %s%s: %w", chroot, privop.JailAPISocket, ctx.Err())
		case <-tick.C:
		}
	}
}

func chownSocketOnce(chroot string, uid, gid int) error {
	fd, err := openNoFollow(chroot)
	if err != nil {
		return fmt.Errorf("chown API socket: %w", err)
	}
	parts := strings.Split(strings.TrimPrefix(privop.JailAPISocket, "/"), "/")
	for i, p := range parts {
		next, err := openAtNoFollow(fd, p)
		unix.Close(fd)
		if errors.Is(err, unix.ENOENT) {
			return errNoSocket
		}
		if err != nil {
			return fmt.Errorf("chown API socket: %w", err)
		}
		fd = next
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return fmt.Errorf("chown API socket: stat %s: %w", p, err)
		}
		want, what := uint32(unix.S_IFDIR), "a directory"
		if i == len(parts)-1 {
			want, what = unix.S_IFSOCK, "a socket"
		}
		if st.Mode&unix.S_IFMT != want {
			unix.Close(fd)
			return fmt.Errorf("chown API socket: %s in the jail is not %s: %w", p, what, ErrUnsafe)
		}
		// A second name would be another socket hard-linked in (possible
		// where fs.protected_hardlinks is off): chowning it would give
		// that one away too.
		if want == unix.S_IFSOCK && st.Nlink != 1 {
			unix.Close(fd)
			return fmt.Errorf("chown API socket: it has %d links: %w", st.Nlink, ErrUnsafe)
		}
	}
	defer unix.Close(fd)
	if err := unix.Fchownat(fd, "", uid, gid, unix.AT_EMPTY_PATH); err != nil {
		return fmt.Errorf("chown API socket: %w", err)
	}
	return nil
}
