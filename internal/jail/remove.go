package jail

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"banger/internal/mountinfo"
)

// Remove tears l's jail down: it detaches every mount below the VM's jail
// directory, checks that none is left, then removes the directory tree.
// Removal never descends into a live mount and never follows a symlink
// (the owner owns the chroot once the jailer ran, and may have planted
// some). A jail that is already gone is fine. The caller makes sure the
// jail's firecracker is no longer running.
func Remove(l Layout) error {
	if _, err := NewLayout(l.Base, l.ExecName, l.VMID); err != nil {
		return err
	}
	dir := l.VMDir()
	if _, err := os.Lstat(dir); isNotExist(err) {
		return nil
	} else if err != nil {
		return fmt.Errorf("remove jail: %w", err)
	}
	if err := Unmount(dir); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove jail: %w", err)
	}
	return nil
}

// Unmount detaches every mount at or below dir, deepest first, and fails
// unless none is left. Each mount point is reached by a walk that refuses
// symlinks and unmounted through its fd, so a path the owner rearranged
// cannot redirect the unmount elsewhere; the lazy detach of the chroot's
// self-bind takes whatever is still below it.
func Unmount(dir string) error {
	var errs []error
	for range 3 {
		mps, err := MountsUnder(dir)
		if err != nil {
			return err
		}
		if len(mps) == 0 {
			return nil
		}
		for _, mp := range mps {
			if err := detach(mp); err != nil {
				errs = append(errs, err)
			}
		}
	}
	mps, err := MountsUnder(dir)
	if err != nil {
		return err
	}
	if len(mps) > 0 {
		return fmt.Errorf("unmount jail: still mounted below %s: %v: %w", dir, mps, errors.Join(errs...))
	}
	return nil
}

// detach lazily unmounts the mount at mp. A path that is gone or no longer
// a mount point (its parent's detach took it) is fine.
func detach(mp string) error {
	fd, err := openNoFollow(mp)
	if isNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("unmount %s: %w", mp, err)
	}
	defer unix.Close(fd)
	if err := unix.Unmount(fdPath(fd), unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unmount %s: %w", mp, err)
	}
	return nil
}

// MountsUnder lists the mount points at or below dir in the helper's
// mount namespace, deepest first.
func MountsUnder(dir string) ([]string, error) { return mountinfo.Under(dir) }

// Find lists the jails of vmID under base, whatever their exec name: for a
// cleanup that has no record of the binary's name.
func Find(base, vmID string) ([]Layout, error) {
	if _, err := NewLayout(base, "x", vmID); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(base)
	if isNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("find jails: %w", err)
	}
	var out []Layout
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		l := Layout{Base: base, ExecName: e.Name(), VMID: vmID}
		if _, err := os.Lstat(l.VMDir()); err == nil {
			out = append(out, l)
		} else if !isNotExist(err) {
			return nil, fmt.Errorf("find jails: %w", err)
		}
	}
	return out, nil
}
