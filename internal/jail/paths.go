package jail

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"banger/internal/trustpath"
)

// The jailer trusts every path it is given (its docs: inputs and their
// parents must not be writable by other users), and so does the helper:
// a path is trusted when no user but root could have put something else
// there. Each check walks the path with Lstat from /, so a symlink is seen
// as a symlink and refused rather than followed.

// CheckBase checks the jail base directory before each launch: every
// component from / down is a real directory (no symlink), root-owned, not
// writable by group or others (a root-owned sticky directory such as /tmp
// is accepted: no one else can rename root's entries in it). It need not be
// searchable by others: the owner reaches nothing in a jail (the helper
// connects bangerd to the VM's sockets). The filesystem must allow device nodes (the jailer mknods /dev/kvm and
// /dev/net/tun in the chroot) and executables (it execs the copied binary).
func CheckBase(base string) error { return checkBase(base, 0) }

// CheckBinary checks a firecracker or jailer binary: a regular file (not a
// symlink), root-owned, executable, not writable by group or others, in
// directories that are root-owned and not writable by group or others all
// the way up.
func CheckBinary(path string) error { return checkBinary(path, 0) }

// checkBase is CheckBase with one more trusted uid, for tests that cannot
// chown to root.
func checkBase(base string, trusted int) error {
	if !filepath.IsAbs(base) || filepath.Clean(base) != base {
		return fmt.Errorf("jail base %q: want a clean absolute path", base)
	}
	if err := trustpath.DirChain(base, trusted); err != nil {
		return fmt.Errorf("jail base: %w", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(base, &st); err != nil {
		return fmt.Errorf("jail base: statfs %s: %w", base, err)
	}
	if st.Flags&unix.ST_NODEV != 0 {
		return fmt.Errorf("jail base %s is on a nodev mount: the jailer could not create /dev/kvm in the chroot; choose a base on a filesystem without nodev (not a tmpfs /tmp or /run)", base)
	}
	if st.Flags&unix.ST_NOEXEC != 0 {
		return fmt.Errorf("jail base %s is on a noexec mount: the jailer could not exec firecracker in the chroot", base)
	}
	return nil
}

// checkBinary is CheckBinary with one more trusted uid, for tests.
func checkBinary(path string, trusted int) error { return trustpath.Binary(path, trusted) }

// openNoFollow opens path as an O_PATH fd, one component at a time from /,
// refusing a symlink at any component (the last one included). The caller
// closes the fd.
func openNoFollow(path string) (int, error) {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return -1, fmt.Errorf("open %q: want a clean absolute path", path)
	}
	fd, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open /: %w", err)
	}
	if path == "/" {
		return fd, nil
	}
	for _, c := range strings.Split(path[1:], "/") {
		next, err := openAtNoFollow(fd, c)
		unix.Close(fd)
		if err != nil {
			return -1, fmt.Errorf("open %s: %w", path, err)
		}
		fd = next
	}
	return fd, nil
}

// openAtNoFollow opens name in dir as an O_PATH fd without following a
// symlink: a symlink there is refused.
func openAtNoFollow(dir int, name string) (int, error) {
	fd, err := unix.Openat(dir, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", name, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("stat %s: %w", name, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		unix.Close(fd)
		return -1, fmt.Errorf("%s is a symlink: %w", name, ErrUnsafe)
	}
	return fd, nil
}

// fdPath names fd's file through procfs, for the calls that take only a
// path (mount, chmod of an O_PATH fd): the kernel resolves it to exactly
// that file, with no path walk another user could race.
func fdPath(fd int) string { return fmt.Sprintf("/proc/self/fd/%d", fd) }

// isNotExist reports whether err says a file is missing.
func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
