package image

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// copyChunk is the unit CopyDevice reads and, when all zero, skips.
const copyChunk = 1 << 20

// CopyDevice copies the block device (or file) in to a new sparse file dst:
// a snapshot device reads as a whole disk, so chunks that are all zero are
// left as holes rather than written. dst appears only once complete.
func CopyDevice(in *os.File, dst string) (err error) {
	size, err := in.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("size %s: %w", in.Name(), err)
	}
	if size <= 0 {
		return fmt.Errorf("copy %s: it is empty", in.Name())
	}
	out, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-")
	if err != nil {
		return fmt.Errorf("create copy: %w", err)
	}
	defer func() {
		if err != nil {
			out.Close()
			os.Remove(out.Name())
		}
	}()
	if err := out.Chmod(0o644); err != nil {
		return fmt.Errorf("chmod copy: %w", err)
	}
	if err := out.Truncate(size); err != nil {
		return fmt.Errorf("size copy: %w", err)
	}
	buf := make([]byte, copyChunk)
	zero := make([]byte, copyChunk)
	for off := int64(0); off < size; off += copyChunk {
		n, err := in.ReadAt(buf[:min(copyChunk, size-off)], off)
		if err != nil && !(errors.Is(err, io.EOF) && int64(n) == min(copyChunk, size-off)) {
			return fmt.Errorf("read %s at %d: %w", in.Name(), off, err)
		}
		if bytes.Equal(buf[:n], zero[:n]) {
			continue
		}
		if _, err := out.WriteAt(buf[:n], off); err != nil {
			return fmt.Errorf("write copy: %w", err)
		}
	}
	if err := out.Sync(); err != nil {
		return fmt.Errorf("sync copy: %w", err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("close copy: %w", err)
	}
	if err := os.Rename(out.Name(), dst); err != nil {
		return fmt.Errorf("move copy into place: %w", err)
	}
	return nil
}
