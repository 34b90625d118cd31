// Package peercred reads the kernel-recorded credentials of the process at
// the other end of a unix socket (SO_PEERCRED). The kernel takes them at
// connect(2) or listen(2) time and the peer cannot forge them; the pid is a
// snapshot, good for logs only.
package peercred

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// Cred is a peer's identity.
type Cred struct {
	PID int
	UID uint32
	GID uint32
}

// Get returns the credentials of conn's peer, read through the socket's raw
// fd without duplicating it.
func Get(conn *net.UnixConn) (Cred, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return Cred{}, fmt.Errorf("read peer credentials: %w", err)
	}
	var (
		uc   *unix.Ucred
		gerr error
	)
	if err := raw.Control(func(fd uintptr) {
		uc, gerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Cred{}, fmt.Errorf("read peer credentials: %w", err)
	}
	if gerr != nil {
		return Cred{}, fmt.Errorf("read peer credentials: %w", gerr)
	}
	return Cred{PID: int(uc.Pid), UID: uc.Uid, GID: uc.Gid}, nil
}
