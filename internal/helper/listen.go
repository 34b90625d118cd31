package helper

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
)

// Listen creates the helper's socket at path and returns its listener.
//
// The parent directory is created with mode 0711 if missing (its own parent
// must exist); an existing one must be a real directory owned by the
// calling euid and writable by no one else, and is set to 0711 — startup
// fails closed otherwise. A stale socket at path is removed; any other kind
// of file there is an error. The socket is made mode 0660 with group gid
// (the owner's primary group; gid < 0 leaves the group alone), so the
// owner can connect but cannot remove, replace or re-mode it. The socket
// file is removed when the listener closes.
func Listen(path string, gid int) (*net.UnixListener, error) {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return nil, fmt.Errorf("listen %q: want a clean absolute path (abstract sockets are not used)", path)
	}
	dir := filepath.Dir(path)
	if err := os.Mkdir(dir, 0o711); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if err := checkPrivateDir(dir); err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("listen: %s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("listen: remove stale socket: %w", err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen: %w", err)
	}
	if gid >= 0 {
		if err := os.Lchown(path, -1, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("listen: %w", err)
		}
	}
	return ln, nil
}

// checkPrivateDir requires dir to be a directory (not a symlink) owned by
// the calling euid and not writable by group or others.
func checkPrivateDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory (or is a symlink)", dir)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s is group or world writable (mode %v)", dir, fi.Mode().Perm())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int64(st.Uid) != int64(os.Geteuid()) {
		return fmt.Errorf("%s is owned by uid %d, not %d", dir, st.Uid, os.Geteuid())
	}
	return nil
}

// PrepareStateDir creates the helper's state directory (mode 0711) if
// missing and checks it like the socket directory. It is searchable by
// others because the Firecracker jails live below it and bangerd must
// reach their sockets; what it holds stays private (ledgers 0600, build
// directories 0700).
func PrepareStateDir(dir string) error {
	if !filepath.IsAbs(dir) || filepath.Clean(dir) != dir {
		return fmt.Errorf("state dir %q: want a clean absolute path", dir)
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return fmt.Errorf("prepare state dir: %w", err)
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		return fmt.Errorf("prepare state dir: %w", err)
	}
	if err := checkPrivateDir(dir); err != nil {
		return fmt.Errorf("prepare state dir: %w", err)
	}
	return nil
}
