package image

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
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

// MakeWorkDisk creates a fresh, empty ext4 work disk of size bytes at path:
// MakeWorkDiskFromSeed without a seed.
func MakeWorkDisk(ctx context.Context, path string, size int64) error {
	return MakeWorkDiskFromSeed(ctx, path, size, "")
}

// MakeWorkDiskFromSeed creates the ext4 work disk of size bytes at path,
// holding the work seed at seed (see CaptureWorkSeed); "" makes it empty.
// It is built like an image (the seed staged, mkfs.ext4 -d, one debugfs
// pass for owners and modes) but as a sparse file with lazy inode-table and
// journal initialisation, which the guest kernel finishes: sub-second for
// multi-GiB disks. Its root becomes the guest's /root, so it is owned 0:0
// with mode 0700 whatever the seed says. path appears complete or not at
// all.
func MakeWorkDiskFromSeed(ctx context.Context, path string, size int64, seed string) error {
	if size < 8<<20 {
		return fmt.Errorf("work disk size %d bytes: must be at least 8 MiB", size)
	}
	// Round down: the disk must never be bigger than the VM's record says.
	opts := BuildOptions{Label: WorkDiskLabel, Size: size &^ 4095, lazyInit: true}
	_, err := withStaging(path, &opts, func(s *stager) (*Result, error) {
		if seed != "" {
			f, err := os.Open(seed)
			if err != nil {
				return nil, fmt.Errorf("open work seed: %w", err)
			}
			defer f.Close()
			if err := stageTar(ctx, s, tar.NewReader(bufio.NewReaderSize(f, 256<<10))); err != nil {
				return nil, fmt.Errorf("stage work seed: %w", err)
			}
		}
		root := s.entries[""]
		root.UID, root.GID, root.Mode = 0, 0, 0o700
		return buildExt4(ctx, s, path, &opts)
	})
	if err != nil {
		return fmt.Errorf("build work disk: %w", err)
	}
	return nil
}
