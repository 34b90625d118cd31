package image

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"

	"banger/internal/execx"
)

// Overlays are qcow2 files whose reads fall through to the read-only raw
// image (their backing file) and whose writes stay in the overlay: made in
// constant time, without root, on any filesystem. Only QEMU reads them.

// ProbeOverlay reports whether overlays can be made here (qemu-img on
// PATH), and why not.
func ProbeOverlay() (bool, string) {
	if _, err := execx.LookPath("qemu-img"); err != nil {
		return false, "qemu-img is not installed (package qemu-utils)"
	}
	return true, ""
}

// MakeOverlay creates dst, a qcow2 overlay over the raw image base (an
// absolute path, which the overlay records: base must stay where it is).
func MakeOverlay(ctx context.Context, base, dst string) (err error) {
	if !filepath.IsAbs(base) {
		return fmt.Errorf("make overlay: base %q is not an absolute path", base)
	}
	st, err := os.Stat(base)
	if err != nil {
		return fmt.Errorf("make overlay: %w", err)
	}
	qemuImg, err := execx.LookPath("qemu-img")
	if err != nil {
		return fmt.Errorf("make overlay: %w", err)
	}
	tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp")
	_ = os.Remove(tmp)
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if _, err := execx.Default.Run(ctx, qemuImg, OverlayArgs(base, tmp, st.Size())...); err != nil {
		return fmt.Errorf("make overlay: %w", err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fmt.Errorf("make overlay: %w", err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("make overlay: %w", err)
	}
	return nil
}

// OverlayArgs is qemu-img's argv (without the program) to create overlay
// over the raw base of size bytes.
func OverlayArgs(base, overlay string, size int64) []string {
	return []string{"create", "-q", "-f", "qcow2", "-F", "raw", "-b", base, overlay, fmt.Sprint(size)}
}

// FlattenOverlay writes overlay's whole disk (its writes over its base) to
// dst as a sparse raw file, for a commit. dst appears only once complete.
func FlattenOverlay(ctx context.Context, overlay, dst string) (err error) {
	qemuImg, err := execx.LookPath("qemu-img")
	if err != nil {
		return fmt.Errorf("flatten overlay: %w", err)
	}
	out, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-")
	if err != nil {
		return fmt.Errorf("flatten overlay: %w", err)
	}
	tmp := out.Name()
	out.Close()
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if _, err := execx.Default.Run(ctx, qemuImg, "convert", "-q", "-f", "qcow2", "-O", "raw", overlay, tmp); err != nil {
		return fmt.Errorf("flatten overlay: %w", err)
	}
	if err := syncFile(tmp); err != nil {
		return fmt.Errorf("flatten overlay: %w", err)
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		return fmt.Errorf("flatten overlay: %w", err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("flatten overlay: %w", err)
	}
	return nil
}

// OverlaySize reads the virtual disk size from a qcow2 file's header (the
// big-endian "size" field at offset 24, after the "QFI\xfb" magic).
func OverlaySize(p string) (int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, fmt.Errorf("read overlay size: %w", err)
	}
	defer f.Close()
	var h [32]byte
	if _, err := io.ReadFull(f, h[:]); err != nil {
		return 0, fmt.Errorf("read overlay size of %s: %w", p, err)
	}
	return parseQCOW2Size(h[:])
}

func parseQCOW2Size(h []byte) (int64, error) {
	if len(h) < 32 || string(h[:4]) != "QFI\xfb" {
		return 0, errors.New("not a qcow2 file")
	}
	size := binary.BigEndian.Uint64(h[24:32])
	if size > math.MaxInt64 {
		return 0, fmt.Errorf("qcow2 size %d is out of range", size)
	}
	return int64(size), nil
}
