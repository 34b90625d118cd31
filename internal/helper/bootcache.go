package helper

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"banger/internal/privop"

	"golang.org/x/sys/unix"
)

// BootCacheDir is the boot cache's name inside the state directory.
const BootCacheDir = "boot-cache"

// bootCacheKeep is how many boot files no jail uses the cache keeps.
const bootCacheKeep = 4

// maxBootFile bounds a kernel or initrd the helper copies into its own
// state directory: far above any real one (tens of MiB), far below what
// would fill root's disk for the owner.
const maxBootFile = 512 << 20

// bootCache holds root's copies of the kernels and initrds VMs boot, so a
// jail gets a hard link of a file no user can change, and a kernel is
// copied once, not at every boot. An entry is named after the identity of
// the file it was copied from (device, inode, size, change time): writing
// to a file or replacing it changes its change time, which no user can
// set, so a changed kernel is copied anew.
type bootCache struct{ dir string }

func (s *Server) bootCache() bootCache {
	return bootCache{dir: filepath.Join(s.cfg.StateDir, BootCacheDir)}
}

// key names src's content by its identity.
func key(st *unix.Stat_t) string {
	return fmt.Sprintf("%x-%x-%d-%d.%09d", st.Dev, st.Ino, st.Size, st.Ctim.Sec, st.Ctim.Nsec)
}

// file returns the cached copy of src (opened for reading), copying it in
// first when the cache has none.
func (c bootCache) file(src *os.File) (*os.File, error) {
	if err := checkReadable(src); err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(src.Fd()), &st); err != nil {
		return nil, fmt.Errorf("stat boot file: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("boot file: want a regular file, got mode %#o", st.Mode&unix.S_IFMT)
	}
	if st.Size > maxBootFile {
		return nil, privop.Errorf(privop.CodeBadRequest, "boot file: %d bytes, more than the %d a kernel or initrd may have", st.Size, maxBootFile)
	}
	if err := os.Mkdir(c.dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("create boot cache: %w", err)
	}
	name := filepath.Join(c.dir, key(&st))
	if f, err := os.OpenFile(name, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err == nil {
		now := time.Now()
		_ = os.Chtimes(name, now, now) // most recently used
		return f, nil
	}
	tmp, err := os.CreateTemp(c.dir, ".copy-*")
	if err != nil {
		return nil, fmt.Errorf("copy boot file: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if _, err := io.Copy(tmp, io.NewSectionReader(src, 0, st.Size)); err != nil {
		return nil, fmt.Errorf("copy boot file: %w", err)
	}
	var after unix.Stat_t
	if err := unix.Fstat(int(src.Fd()), &after); err != nil {
		return nil, fmt.Errorf("stat boot file: %w", err)
	}
	if key(&after) != key(&st) {
		return nil, errors.New("copy boot file: it changed while it was copied")
	}
	if err := tmp.Chmod(0o444); err != nil {
		return nil, fmt.Errorf("copy boot file: %w", err)
	}
	if err := os.Rename(tmp.Name(), name); err != nil {
		return nil, fmt.Errorf("copy boot file: %w", err)
	}
	return os.OpenFile(name, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

// prune removes the entries no jail links (one link: the cache's own)
// beyond the bootCacheKeep most recently used.
func (c bootCache) prune() error {
	ents, err := os.ReadDir(c.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("prune boot cache: %w", err)
	}
	type unused struct {
		name string
		used time.Time
	}
	var idle []unused
	for _, e := range ents {
		var st unix.Stat_t
		if unix.Lstat(filepath.Join(c.dir, e.Name()), &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1 {
			continue
		}
		idle = append(idle, unused{e.Name(), time.Unix(st.Mtim.Unix())})
	}
	slices.SortFunc(idle, func(a, b unused) int { return b.used.Compare(a.used) })
	var errs []error
	for i, u := range idle {
		if i >= bootCacheKeep {
			if err := os.Remove(filepath.Join(c.dir, u.name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// checkReadable refuses an fd that grants no read access (O_PATH, or
// opened write-only): such an fd can be had for a file one may not read.
func checkReadable(f *os.File) error {
	flags, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err != nil {
		return fmt.Errorf("inspect boot file fd: %w", err)
	}
	if flags&unix.O_PATH != 0 || flags&unix.O_ACCMODE == unix.O_WRONLY {
		return privop.Errorf(privop.CodeForbidden, "boot file: fd not opened for reading")
	}
	return nil
}
