package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// This file holds the jailer's steps from entering the jail to the exec,
// in the real jailer's order: a new mount namespace whose root is the
// chroot through pivot_root (old root unmounted), then, from inside, the
// folders, the device nodes and the PID file. Being inside when creating
// them matters: symlinks resolve in the jail, and a mount flag of the jail
// (nodev) applies to the nodes.

// oldRootDir is the directory pivot_root parks the old root on.
const oldRootDir = "old_root"

// jailFolders are made (0700, owned by uid:gid) inside the jail, in order.
var jailFolders = []string{"/", "/dev", "/dev/net", "/run"}

// jailDevice is a character device node the jailer makes in the jail.
type jailDevice struct {
	path         string
	major, minor uint32
	optional     bool // a failure is a warning only
}

// miscMajor is the major number of misc character devices.
const miscMajor = 10

// jailDevices lists the nodes in the order the jailer makes them. A
// /dev/userfaultfd node is added when the host's /proc/misc lists the
// device; like the others but /dev/urandom, failing to make it is fatal.
func jailDevices(uffdMinor *uint32) []jailDevice {
	devs := []jailDevice{
		{path: "/dev/net/tun", major: miscMajor, minor: 200},
		{path: "/dev/kvm", major: miscMajor, minor: 232},
		// Without urandom, Firecracker only loses MMDSv2 tokens.
		{path: "/dev/urandom", major: 1, minor: 9, optional: true},
	}
	if uffdMinor != nil {
		devs = append(devs, jailDevice{path: "/dev/userfaultfd", major: miscMajor, minor: *uffdMinor})
	}
	return devs
}

// miscMinor returns the minor of the misc device called name in the text
// of /proc/misc. It splits lines on single spaces and reads the first two
// fields, as the jailer does, so a minor printed with leading padding
// (below 100) is not found.
func miscMinor(procMisc, name string) (uint32, bool) {
	for _, line := range strings.Split(procMisc, "\n") {
		f := strings.Split(line, " ")
		if len(f) < 2 || f[1] != name {
			continue
		}
		n, err := strconv.ParseUint(f[0], 10, 32)
		if err != nil {
			return 0, false
		}
		return uint32(n), true
	}
	return 0, false
}

// userfaultfdMinor reads the host's userfaultfd minor; nil when the host
// has none or /proc/misc cannot be read.
func userfaultfdMinor() *uint32 {
	b, err := os.ReadFile("/proc/misc")
	if err != nil {
		return nil
	}
	if n, ok := miscMinor(string(b), "userfaultfd"); ok {
		return &n
	}
	return nil
}

// enterJail moves this thread into a new mount namespace whose root is
// chroot: recursive slave propagation, a recursive self-bind of the chroot
// (pivot_root needs a mount point), pivot_root into it and a lazy unmount
// of the old root, so that nothing of the host's mounts stays reachable in
// the namespace.
func enterJail(chroot string) error {
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("unshare into a new mount namespace: %w", rustErr(err))
	}
	if err := unix.Mount("", "/", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("change the propagation type to slave: %w", rustErr(err))
	}
	if err := unix.Mount(chroot, chroot, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind mount the jail root directory: %w", rustErr(err))
	}
	if err := unix.Chdir(chroot); err != nil {
		return fmt.Errorf("change current directory: %w", rustErr(err))
	}
	if err := unix.Mkdir(oldRootDir, unix.S_IRUSR|unix.S_IWUSR); err != nil {
		return fmt.Errorf("create the old root directory before pivoting root: %w", rustErr(err))
	}
	if err := unix.PivotRoot(".", oldRootDir); err != nil {
		return fmt.Errorf("pivot root: %w", rustErr(err))
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("chdir into the new root: %w", rustErr(err))
	}
	if err := unix.Unmount(oldRootDir, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount the old jail root: %w", rustErr(err))
	}
	if err := unix.Rmdir(oldRootDir); err != nil {
		return fmt.Errorf("remove the old jail root directory: %w", rustErr(err))
	}
	return nil
}

// setupJail makes the folders and device nodes from inside the jail, then
// the PID file. chmod and chown follow symlinks, as libc's do; inside the
// jail they cannot leave it.
func (c *jailConfig) setupJail() error {
	for _, d := range jailFolders {
		if err := createDirAll(d); err != nil {
			return fmt.Errorf("create directory %s: %w", d, err)
		}
		if err := unix.Chmod(d, 0o700); err != nil {
			return fmt.Errorf("change permissions on %s: %w", d, rustErr(err))
		}
		if err := unix.Chown(d, c.uid, c.gid); err != nil {
			return fmt.Errorf("change owner for %s: %w", d, rustErr(err))
		}
	}
	for _, d := range jailDevices(c.uffdMinor) {
		err := c.mknodOwned(d)
		if err != nil && d.optional {
			fmt.Printf("Warning! Could not create %s inside the jail: %v.\n", d.path, err)
			continue
		}
		if err != nil {
			return err
		}
	}
	return writePIDFile("/"+c.execName+".pid", os.Getpid())
}

// createDirAll makes p and its parents (mode 0777 before umask). An
// existing non-directory fails with EEXIST, as Rust's create_dir_all does.
func createDirAll(p string) error {
	if st, err := os.Stat(p); err == nil {
		if st.IsDir() {
			return nil
		}
		return rustErr(unix.EEXIST)
	}
	err := os.MkdirAll(p, 0o777)
	var pe *os.PathError
	if errors.As(err, &pe) {
		return rustErr(pe.Err)
	}
	return err
}

func (c *jailConfig) mknodOwned(d jailDevice) error {
	if err := unix.Mknod(d.path, unix.S_IFCHR|unix.S_IRUSR|unix.S_IWUSR, int(unix.Mkdev(d.major, d.minor))); err != nil {
		return fmt.Errorf("create %s via mknod inside the jail: %w", d.path, rustErr(err))
	}
	if err := unix.Chown(d.path, c.uid, c.gid); err != nil {
		return fmt.Errorf("change owner for %s: %w", d.path, rustErr(err))
	}
	return nil
}

// writePIDFile writes pid to a file that must not exist yet.
func writePIDFile(path string, pid int) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
	if err != nil {
		return fmt.Errorf("open file %s: %w", path, rustErr(err))
	}
	if _, err := fmt.Fprint(f, pid); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, rustErr(err))
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, rustErr(err))
	}
	return nil
}

// osError is an errno printed as Rust prints an io::Error.
type osError struct{ errno syscall.Errno }

func (e osError) Error() string {
	s := e.errno.Error()
	if s != "" {
		s = strings.ToUpper(s[:1]) + s[1:]
	}
	return s + " (os error " + strconv.Itoa(int(e.errno)) + ")"
}

func (e osError) Unwrap() error { return e.errno }

// rustErr wraps err's errno, if it has one, in an osError.
func rustErr(err error) error {
	var n syscall.Errno
	if errors.As(err, &n) {
		return osError{n}
	}
	return err
}
