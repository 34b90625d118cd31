package dmsnap

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrOutsideRoot is returned for a backing file that is not under the
// Manager's root, is reached through a symlink, or is not a regular file.
var ErrOutsideRoot = errors.New("not a banger-owned file under the root")

// checkUnder checks lexically that path is a clean absolute path strictly
// inside root and returns it relative to root.
func checkUnder(root, path string) (string, error) {
	if err := checkBackingPath(path); err != nil {
		return "", fmt.Errorf("%w: %w", ErrOutsideRoot, err)
	}
	rel, ok := strings.CutPrefix(path, root+"/")
	if !ok || rel == "" {
		return "", fmt.Errorf("%s is not under %s: %w", path, root, ErrOutsideRoot)
	}
	return rel, nil
}

// openUnder opens path, which must lie inside root, walking down from root
// one component at a time with O_NOFOLLOW: a symlink anywhere below root
// (the file itself included) is refused, never followed, so a link planted
// in the tree cannot hand a host file to a VM. The result must be a regular
// file. flag and perm are those of open(2) (O_CREAT|O_EXCL to make a COW
// file).
func openUnder(root, path string, flag int, perm uint32) (*os.File, error) {
	rel, err := checkUnder(root, path)
	if err != nil {
		return nil, err
	}
	dirfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open root %s (a real directory, not a symlink): %w", root, err)
	}
	comps := strings.Split(rel, "/")
	for i, c := range comps[:len(comps)-1] {
		next, err := unix.Openat(dirfd, c, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			unix.Close(dirfd)
			at := filepath.Join(root, filepath.Join(comps[:i+1]...))
			if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
				return nil, fmt.Errorf("open %s: %s is a symlink or not a directory: %w", path, at, ErrOutsideRoot)
			}
			return nil, fmt.Errorf("open %s: %w", path, err)
		}
		unix.Close(dirfd)
		dirfd = next
	}
	// O_NONBLOCK so a FIFO cannot hang the open; cleared below.
	last := comps[len(comps)-1]
	fd, err := unix.Openat(dirfd, last, flag|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, perm)
	if errors.Is(err, unix.EEXIST) {
		// O_EXCL refuses a symlink with EEXIST: say what it is.
		var st unix.Stat_t
		if unix.Fstatat(dirfd, last, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			err = unix.ELOOP
		}
	}
	unix.Close(dirfd)
	if errors.Is(err, unix.ELOOP) {
		return nil, fmt.Errorf("open %s: is a symlink: %w", path, ErrOutsideRoot)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return nil, fmt.Errorf("open %s: not a regular file: %w", path, ErrOutsideRoot)
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err == nil {
		_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl&^unix.O_NONBLOCK)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return f, nil
}

// identify returns f's identity as recorded in the journal.
func identify(f *os.File) (File, int64, uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return File{}, 0, 0, fmt.Errorf("stat %s: %w", f.Name(), err)
	}
	return File{Path: f.Name(), Dev: uint64(st.Dev), Ino: st.Ino}, st.Size, uint64(st.Nlink), nil
}

// dupFiles checks the open files of s and duplicates them for the Manager:
// both given, regular files, the COW file open read-write (its mode is the
// caller's proof it may write it).
func dupFiles(s Spec) (base, cow *os.File, err error) {
	if s.BaseFile == nil || s.COWFile == nil {
		return nil, nil, errors.New("give both the base and the cow file open, or neither")
	}
	for _, c := range []struct {
		f     *os.File
		what  string
		write bool
	}{{s.BaseFile, "base", false}, {s.COWFile, "cow", true}} {
		var st unix.Stat_t
		if err := unix.Fstat(int(c.f.Fd()), &st); err != nil {
			return nil, nil, fmt.Errorf("stat %s file: %w", c.what, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			return nil, nil, fmt.Errorf("%s file %s is not a regular file: %w", c.what, c.f.Name(), ErrOutsideRoot)
		}
		fl, err := unix.FcntlInt(c.f.Fd(), unix.F_GETFL, 0)
		if err != nil {
			return nil, nil, fmt.Errorf("read %s file flags: %w", c.what, err)
		}
		switch acc := fl & unix.O_ACCMODE; {
		case fl&unix.O_PATH != 0 || acc == unix.O_WRONLY:
			return nil, nil, fmt.Errorf("%s file %s is not open for reading", c.what, c.f.Name())
		case c.write && acc != unix.O_RDWR:
			return nil, nil, fmt.Errorf("%s file %s is not open read-write", c.what, c.f.Name())
		}
	}
	// The duplicates carry the spec's names, which the journal records.
	dup := func(f *os.File, name string) (*os.File, error) {
		fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("duplicate %s: %w", f.Name(), err)
		}
		if name == "" {
			name = f.Name()
		}
		return os.NewFile(uintptr(fd), name), nil
	}
	if base, err = dup(s.BaseFile, s.Base); err != nil {
		return nil, nil, err
	}
	if cow, err = dup(s.COWFile, s.COW); err != nil {
		base.Close()
		return nil, nil, err
	}
	return base, cow, nil
}
