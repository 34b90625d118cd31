package jail

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"banger/internal/dmsnap"
	"banger/internal/privop"

	"golang.org/x/sys/unix"
)

// File is one file staged into a jail from an fd bangerd opened: the fd's
// access mode is the proof that bangerd may read (or write) the file, so
// the helper never opens a path bangerd chose.
type File struct {
	Role     string // privop.JailKernel, privop.JailInitrd or privop.JailDrive
	Name     string // a single path element inside the chroot
	ReadOnly bool   // drives only
	F        *os.File
}

// Spec is one VM's jail to stage.
type Spec struct {
	Layout         Layout
	FirecrackerBin string
	UID, GID       int // the VM's own uid and gid, which firecracker runs as
	Files          []File
	// HostLibs are host directories made visible read-only at the same
	// path in the chroot, so a dynamically linked firecracker finds its
	// libraries; one that is a symlink on the host (merged /usr) becomes
	// the same symlink. Nil means DefaultHostLibs.
	HostLibs []string
}

// DefaultHostLibs are the library directories a dynamically linked
// firecracker may load from. /usr/lib64 is there because /lib64 is often
// a symlink to it and holds the loader.
var DefaultHostLibs = []string{"/usr/lib", "/usr/lib64", "/lib", "/lib64"}

// Holds are the loop devices a staged jail's drives sit on, held open by
// the helper: each was attached with autoclear, so it stays bound to its
// file while anyone holds it open and is released when the last holder,
// the helper or firecracker, closes it. Close them once firecracker is
// gone.
type Holds []*os.File

// Close releases the holds.
func (h Holds) Close() {
	for _, f := range h {
		f.Close()
	}
}

// Stage builds spec's jail: it checks the base and the firecracker binary,
// creates <base>/<exec-name> if missing and <base>/<exec-name>/<vm-id>,
// which must not exist yet, bind-mounts the chroot onto itself (so the
// whole jail hangs off one mount point, private, and is unmounted in one
// go), then stages the firecracker copy, fc.log and fc.metrics, the
// kernel and initrd (hard links, or copies across filesystems), the drives
// (device nodes: a block device passed as such, a regular file through a
// loop device attached to it) and the host's library directories. Every
// directory is root's, 0700, until the jailer gives the chroot to the
// VM's uid: nothing of a jail is reachable by the owner. On any failure
// everything done is undone; if that fails too, the error wraps
// ErrLeftBehind. The caller keeps the returned Holds until firecracker
// has exited.
func Stage(spec Spec) (_ Holds, err error) {
	l := spec.Layout
	if _, err := NewLayout(l.Base, l.ExecName, l.VMID); err != nil {
		return nil, err
	}
	if ExecName(spec.FirecrackerBin) != l.ExecName {
		return nil, fmt.Errorf("stage jail: exec name %q is not the base name of %s", l.ExecName, spec.FirecrackerBin)
	}
	if err := CheckBase(l.Base); err != nil {
		return nil, err
	}
	bin, err := openBinary(spec.FirecrackerBin)
	if err != nil {
		return nil, err
	}
	defer bin.Close()
	if err := ensureExecDir(l.ExecDir()); err != nil {
		return nil, err
	}
	if err := unix.Mkdir(l.VMDir(), 0o700); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("jail for VM %s already exists (%s): %w", l.VMID, l.VMDir(), ErrExists)
		}
		return nil, fmt.Errorf("create jail dir: %w", err)
	}
	s := &stager{uid: spec.UID, gid: spec.GID, vm: -1, root: -1, under: -1, vmDir: l.VMDir()}
	defer s.close()
	defer func() {
		if err != nil {
			s.holds.Close()
			if rerr := Remove(l); rerr != nil {
				err = errors.Join(err, fmt.Errorf("undo staging: %w (%w)", rerr, ErrLeftBehind))
			}
		}
	}()
	if err := s.makeRoot(l.VMDir()); err != nil {
		return nil, err
	}
	if err := copyExec(s.root, l.ExecName, bin); err != nil {
		return nil, err
	}
	for _, name := range []string{LogFile, MetricsFile} {
		if err := createEmpty(s.root, name, s.uid, s.gid); err != nil {
			return nil, err
		}
	}
	for _, f := range spec.Files {
		if err := s.stageFile(f); err != nil {
			return nil, err
		}
	}
	libs := spec.HostLibs
	if libs == nil {
		libs = DefaultHostLibs
	}
	for _, lib := range libs {
		if err := bindHostDir(s.root, lib); err != nil {
			return nil, err
		}
	}
	return s.holds, nil
}

// stager holds the fds staging works through.
type stager struct {
	uid, gid int
	vm       int // the VM's jail directory
	root     int // the chroot, on its self-bind mount
	under    int // the chroot directory below the self-bind (hard links only)
	vmDir    string
	holds    Holds
}

func (s *stager) close() {
	for _, fd := range []int{s.vm, s.root, s.under} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// makeRoot sets the mode of the fresh VM dir, creates the chroot in it and
// bind-mounts it onto itself, private, so that nothing mounted in the jail
// propagates back to the host's mount and the jail is one mount point.
func (s *stager) makeRoot(vmDir string) error {
	var err error
	if s.vm, err = unix.Open(vmDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err != nil {
		return fmt.Errorf("open jail dir: %w", err)
	}
	if err := unix.Fchmod(s.vm, 0o700); err != nil {
		return fmt.Errorf("chmod jail dir: %w", err)
	}
	if s.under, err = mkdirAt(s.vm, RootDir, 0o700); err != nil {
		return err
	}
	if err := unix.Mount(fdPath(s.under), fdPath(s.under), "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mount the chroot onto itself: %w", err)
	}
	// Looked up again, the name now crosses into the new mount.
	if s.root, err = unix.Openat(s.vm, RootDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err != nil {
		return fmt.Errorf("open chroot: %w", err)
	}
	if err := unix.Mount("", fdPath(s.root), "", unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make the chroot mount private: %w", err)
	}
	return nil
}

func (s *stager) stageFile(f File) error {
	if err := validName(f.Name); err != nil {
		return fmt.Errorf("stage %s: %w", f.Role, err)
	}
	if f.F == nil {
		return fmt.Errorf("stage %s %s: no file", f.Role, f.Name)
	}
	switch f.Role {
	case privop.JailKernel, privop.JailInitrd:
		return linkOrCopy(s.under, s.root, f.Name, f.F, s.gid)
	case privop.JailDrive:
		var st unix.Stat_t
		if err := unix.Fstat(int(f.F.Fd()), &st); err != nil {
			return fmt.Errorf("stat drive %s: %w", f.Name, err)
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			// Not a bind mount of the file: the fd may come from another
			// mount namespace (bangerd's unit has its own), whose mounts
			// cannot be bound here, and the file is the owner's, which
			// the VM's uid may not open. A loop device takes the open
			// file as it is, and its node is the VM's.
			if err := checkAccess(f.Name, f.F, !f.ReadOnly); err != nil {
				return err
			}
			lf, err := attachLoop(f.F, f.ReadOnly, s.vmDir)
			if err != nil {
				return fmt.Errorf("attach drive %s to a loop device: %w", f.Name, err)
			}
			s.holds = append(s.holds, lf)
			return mknodDevice(s.root, f.Name, lf, f.ReadOnly, s.uid, s.gid)
		case unix.S_IFBLK:
			return mknodDevice(s.root, f.Name, f.F, f.ReadOnly, s.uid, s.gid)
		default:
			return fmt.Errorf("drive %s: want a regular file or a block device, got mode %#o: %w", f.Name, st.Mode&unix.S_IFMT, ErrUnsafe)
		}
	default:
		return fmt.Errorf("stage %s: not a jail file role", f.Role)
	}
}

// attachLoop binds f to a free loop device (autoclear; read-only if asked)
// and returns the device, open. Where /dev has no node for it (a
// container's /dev is no devtmpfs), a passing node is made in nodeDir, the
// VM's root-only jail directory, which is on a filesystem that allows
// device nodes (CheckBase).
func attachLoop(f *os.File, readOnly bool, nodeDir string) (*os.File, error) {
	b := dmsnap.NewIoctlBackend()
	b.NodeDir = nodeDir
	_, c, err := b.AttachLoop(context.Background(), f, readOnly)
	if err != nil {
		return nil, err
	}
	return c.(*os.File), nil
}

// ensureExecDir creates <base>/<exec-name> (root, 0700) if missing and
// checks it: the base is root's alone, so an existing one is the helper's.
func ensureExecDir(dir string) error {
	if err := unix.Mkdir(dir, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat %s: %w", dir, err)
	}
	if st.Uid != 0 {
		return fmt.Errorf("%s is owned by uid %d, not root: %w", dir, st.Uid, ErrUnsafe)
	}
	// Set explicitly: a base made by an older helper had 0711.
	if err := unix.Fchmod(fd, 0o700); err != nil {
		return fmt.Errorf("chmod %s: %w", dir, err)
	}
	return nil
}

// openBinary checks path with CheckBinary and opens it without following a
// symlink, making sure the file opened is the file checked.
func openBinary(path string) (*os.File, error) {
	if err := CheckBinary(path); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open binary: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("stat binary: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Uid != 0 || st.Mode&0o022 != 0 {
		f.Close()
		return nil, fmt.Errorf("binary %s changed while it was checked: %w", path, ErrUnsafe)
	}
	return f, nil
}

// mkdirAt creates name in dir, root-owned with mode, and returns an fd on
// it. An existing name (even a symlink) is an error.
func mkdirAt(dir int, name string, mode uint32) (int, error) {
	if err := unix.Mkdirat(dir, name, 0o700); err != nil {
		return -1, fmt.Errorf("create %s: %w", name, err)
	}
	fd, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", name, err)
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("chmod %s: %w", name, err)
	}
	return fd, nil
}

// createFile creates name in dir exclusively (a symlink or any existing
// file there is an error), owned by uid:gid with mode, and returns it
// open for writing.
func createFile(dir int, name string, uid, gid int, mode uint32) (*os.File, error) {
	fd, err := unix.Openat(dir, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	if err := unix.Fchown(fd, uid, gid); err != nil {
		f.Close()
		return nil, fmt.Errorf("chown %s: %w", name, err)
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		f.Close()
		return nil, fmt.Errorf("chmod %s: %w", name, err)
	}
	return f, nil
}

// createEmpty creates an empty file owned by uid:gid, mode 0600.
func createEmpty(dir int, name string, uid, gid int) error {
	f, err := createFile(dir, name, uid, gid, 0o600)
	if err != nil {
		return err
	}
	return f.Close()
}

// copyExec copies the firecracker binary into the chroot, root-owned 0755.
// A copy, not a read-only bind: the jailer opens its destination for
// writing, copies over it and chowns it.
func copyExec(dir int, name string, bin *os.File) error {
	dst, err := createFile(dir, name, 0, 0, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, bin); err != nil {
		dst.Close()
		return fmt.Errorf("copy firecracker into the jail: %w", err)
	}
	if err := dst.Close(); err != nil {
		return fmt.Errorf("copy firecracker into the jail: %w", err)
	}
	return nil
}

// checkAccess refuses an fd that is a bare O_PATH reference or does not
// grant the access its use needs: an O_PATH fd can be had for a file one
// may not read at all, and staging it would hand the file over.
func checkAccess(what string, f *os.File, write bool) error {
	flags, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err != nil {
		return fmt.Errorf("inspect %s fd: %w", what, err)
	}
	if flags&unix.O_PATH != 0 {
		return fmt.Errorf("%s: an O_PATH fd grants no access: %w", what, ErrUnsafe)
	}
	switch acc := flags & unix.O_ACCMODE; {
	case write && acc != unix.O_RDWR:
		return fmt.Errorf("%s: a writable drive needs an fd opened read-write: %w", what, ErrUnsafe)
	case !write && acc != unix.O_RDONLY && acc != unix.O_RDWR:
		return fmt.Errorf("%s: fd not opened for reading: %w", what, ErrUnsafe)
	}
	return nil
}

// linkOrCopy puts the kernel or initrd open as f at name: a hard link of
// f's inode made through /proc/self/fd (which needs no
// CAP_DAC_READ_SEARCH), or, when f is not root's alone or lives on another
// filesystem (or mount namespace), a copy owned by root and the VM's gid,
// mode 0440. The link goes through under, the chroot
// below its self-bind, because a hard link cannot cross vfs mounts even
// within one filesystem.
func linkOrCopy(under, root int, name string, f *os.File, gid int) error {
	if err := checkAccess(name, f, false); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fmt.Errorf("stat %s: %w", name, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("%s: want a regular file, got mode %#o: %w", name, st.Mode&unix.S_IFMT, ErrUnsafe)
	}
	// Only a file root owns and no user can change is linked: a link to
	// another's file would be theirs to rewrite while the VM runs, and a
	// link kept to a setuid or setgid binary outlives its upgrade.
	if st.Uid != 0 || st.Mode&(unix.S_ISUID|unix.S_ISGID) != 0 || st.Mode&0o022 != 0 {
		return copyFile(root, name, f, st.Size, 0, gid)
	}
	err := unix.Linkat(unix.AT_FDCWD, fdPath(int(f.Fd())), under, name, unix.AT_SYMLINK_FOLLOW)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EXDEV) {
		return fmt.Errorf("link %s into the jail: %w", name, err)
	}
	return copyFile(root, name, f, st.Size, 0, gid)
}

// copyFile copies size bytes of src into a new file name, owned by
// uid:gid, mode 0440: firecracker reads it through its group and cannot
// change it.
func copyFile(dir int, name string, src *os.File, size int64, uid, gid int) error {
	dst, err := createFile(dir, name, uid, gid, 0o440)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, io.NewSectionReader(src, 0, size)); err != nil {
		dst.Close()
		return fmt.Errorf("copy %s into the jail: %w", name, err)
	}
	if err := dst.Close(); err != nil {
		return fmt.Errorf("copy %s into the jail: %w", name, err)
	}
	return nil
}

// mknodDevice creates a block device node name with src's device number.
// A writable drive's node is the VM uid's, mode 0600. A read-only drive's
// node is root's with the VM's group, mode 0440: a node firecracker owned
// could be chmodded to grant the write access the read-only fd did not.
func mknodDevice(dir int, name string, src *os.File, readOnly bool, uid, gid int) error {
	if err := checkAccess(name, src, !readOnly); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(src.Fd()), &st); err != nil {
		return fmt.Errorf("stat drive %s: %w", name, err)
	}
	owner, mode := uid, uint32(0o600)
	if readOnly {
		owner, mode = 0, 0o440
	}
	if err := unix.Mknodat(dir, name, unix.S_IFBLK|0o600, int(st.Rdev)); err != nil {
		return fmt.Errorf("create device node %s: %w", name, err)
	}
	fd, err := openAtNoFollow(dir, name)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var got unix.Stat_t
	if err := unix.Fstat(fd, &got); err != nil {
		return fmt.Errorf("stat device node %s: %w", name, err)
	}
	if got.Mode&unix.S_IFMT != unix.S_IFBLK || got.Rdev != st.Rdev {
		return fmt.Errorf("device node %s is not the one created: %w", name, ErrUnsafe)
	}
	if err := unix.Fchownat(fd, "", owner, gid, unix.AT_EMPTY_PATH); err != nil {
		return fmt.Errorf("chown device node %s: %w", name, err)
	}
	// An O_PATH fd takes no fchmod; chmod through procfs reaches the node
	// itself, which fstat just showed is no symlink.
	if err := unix.Chmod(fdPath(fd), mode); err != nil {
		return fmt.Errorf("chmod device node %s: %w", name, err)
	}
	return nil
}

// bindHostDir makes the host directory host visible at the same path in
// the chroot open as root: a read-only bind mount, or, when the host path
// is a symlink, the same symlink. A missing host path is skipped.
func bindHostDir(root int, host string) error {
	if !filepath.IsAbs(host) || filepath.Clean(host) != host || host == "/" {
		return fmt.Errorf("host library dir %q: want a clean absolute path", host)
	}
	fi, err := os.Lstat(host)
	if isNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check host library dir: %w", err)
	}
	parts := strings.Split(host[1:], "/")
	parent, err := openParents(root, parts[:len(parts)-1])
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	name := parts[len(parts)-1]
	if fi.Mode().Type() == os.ModeSymlink {
		target, err := os.Readlink(host)
		if err != nil {
			return fmt.Errorf("read host symlink: %w", err)
		}
		if err := unix.Symlinkat(target, parent, name); err != nil {
			return fmt.Errorf("create %s -> %s in the jail: %w", host, target, err)
		}
		return nil
	}
	if !fi.IsDir() {
		return fmt.Errorf("host library dir %s is not a directory", host)
	}
	dst, err := mkdirAt(parent, name, 0o755)
	if err != nil {
		return err
	}
	defer unix.Close(dst)
	src, err := unix.Open(host, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open host library dir: %w", err)
	}
	defer unix.Close(src)
	if err := unix.Mount(fdPath(src), fdPath(dst), "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mount %s into the jail: %w", host, err)
	}
	top, err := unix.Openat(parent, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s mount: %w", host, err)
	}
	defer unix.Close(top)
	if err := sameInode(top, src); err != nil {
		return fmt.Errorf("%s mount: %w", host, err)
	}
	if err := unix.Mount("", fdPath(top), "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("make %s read-only in the jail: %w", host, err)
	}
	return nil
}

// openParents opens (creating, root-owned 0755, when missing) the
// directories parts below root and returns an fd on the last one. Each
// must be a real directory: staging made it, the chroot being root's
// until the jailer runs.
func openParents(root int, parts []string) (int, error) {
	fd, err := unix.Openat(root, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open chroot: %w", err)
	}
	for _, p := range parts {
		next, err := unix.Openat(fd, p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) {
			next, err = mkdirAt(fd, p, 0o755)
		}
		unix.Close(fd)
		if err != nil {
			return -1, fmt.Errorf("open %s in the jail: %w", p, err)
		}
		fd = next
	}
	return fd, nil
}

// sameInode checks that two fds are the same file.
func sameInode(a, b int) error {
	var sa, sb unix.Stat_t
	if err := unix.Fstat(a, &sa); err != nil {
		return fmt.Errorf("stat: %w", err)
	}
	if err := unix.Fstat(b, &sb); err != nil {
		return fmt.Errorf("stat: %w", err)
	}
	if sa.Dev != sb.Dev || sa.Ino != sb.Ino {
		return fmt.Errorf("not the file mounted: %w", ErrUnsafe)
	}
	return nil
}
