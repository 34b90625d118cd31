package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"banger/internal/execx"
)

// WorkDiskLabel is the ext4 label of a per-VM work disk.
const WorkDiskLabel = "banger-work"

// CloneFile copies src to dst for a VM's private disk: a reflink (FICLONE)
// where the filesystem shares extents, else a sparse copy that keeps
// holes. dst appears complete or not at all.
func CloneFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("open clone source: %w", err)
	}
	defer in.Close()
	return CloneFrom(in, dst)
}

// CloneFrom is CloneFile from an open file (e.g. one handed over by the
// root helper as an fd, with no path the caller could open).
func CloneFrom(in *os.File, dst string) error { return cloneFrom(in, dst, StorageAuto) }

// cloneFrom copies with mode: reflink only, sparse copy only, or (auto)
// a reflink where possible and a sparse copy otherwise.
func cloneFrom(in *os.File, dst string, mode Storage) (err error) {
	st, err := in.Stat()
	if err != nil {
		return fmt.Errorf("stat clone source: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("clone %s: not a regular file", in.Name())
	}
	out, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-")
	if err != nil {
		return fmt.Errorf("create clone: %w", err)
	}
	defer func() {
		if err != nil {
			out.Close()
			os.Remove(out.Name())
		}
	}()
	if err := out.Chmod(st.Mode().Perm()); err != nil {
		return fmt.Errorf("chmod clone: %w", err)
	}
	var cerr error = unix.EOPNOTSUPP
	if mode != StorageCopy {
		cerr = unix.IoctlFileClone(int(out.Fd()), int(in.Fd()))
	}
	if cerr != nil {
		if !reflinkUnsupported(cerr) || mode == StorageReflink {
			return fmt.Errorf("reflink clone: %w", cerr)
		}
		if err := sparseCopy(out, in, st.Size()); err != nil {
			return err
		}
	}
	if err := out.Sync(); err != nil {
		return fmt.Errorf("sync clone: %w", err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("close clone: %w", err)
	}
	if err := os.Rename(out.Name(), dst); err != nil {
		return fmt.Errorf("move clone into place: %w", err)
	}
	return nil
}

// reflinkUnsupported reports errors that mean "this filesystem (pair)
// cannot share extents", as opposed to a real I/O failure.
func reflinkUnsupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTSUP) ||
		errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EINVAL) ||
		errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM)
}

// sparseCopy copies only the data extents of in (found with SEEK_DATA and
// SEEK_HOLE) and sizes out to match, so holes stay holes.
func sparseCopy(out, in *os.File, size int64) error {
	if err := out.Truncate(size); err != nil {
		return fmt.Errorf("size clone: %w", err)
	}
	ifd := int(in.Fd())
	var off int64
	for off < size {
		data, err := unix.Seek(ifd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole remains
		}
		if err != nil {
			return fmt.Errorf("find data in clone source: %w", err)
		}
		hole, err := unix.Seek(ifd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("find hole in clone source: %w", err)
		}
		if _, err := io.Copy(io.NewOffsetWriter(out, data), io.NewSectionReader(in, data, hole-data)); err != nil {
			return fmt.Errorf("copy clone data: %w", err)
		}
		off = hole
	}
	return nil
}

// MakeWorkDisk creates a fresh, empty ext4 work disk of size bytes at path
// as a sparse file. Lazy inode-table and journal initialisation keeps it
// sub-second for multi-GiB disks; the guest kernel finishes that lazily.
func MakeWorkDisk(ctx context.Context, path string, size int64) (err error) {
	if size < 8<<20 {
		return fmt.Errorf("work disk size %d bytes: must be at least 8 MiB", size)
	}
	size &^= 4095
	mkfs, err := execx.LookPath("mkfs.ext4")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return fmt.Errorf("create work disk: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if err := f.Truncate(size); err != nil {
		f.Close()
		return fmt.Errorf("size work disk: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close work disk: %w", err)
	}
	// The positional size is in 1 KiB units unless suffixed: say "k".
	if _, err := execx.Default.Run(ctx, mkfs, "-q", "-F", "-b", "4096",
		"-E", "lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0",
		"-L", WorkDiskLabel, tmp, fmt.Sprintf("%dk", size/1024)); err != nil {
		return fmt.Errorf("make work disk filesystem: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("move work disk into place: %w", err)
	}
	return nil
}
