package image

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Storage is how a VM's root disk is made from its image.
type Storage string

// Storage backends. Auto resolves to one of the others (see ChooseStorage).
const (
	StorageAuto    Storage = "auto"
	StorageDM      Storage = "dm"      // a device-mapper snapshot of the image (root helper)
	StorageReflink Storage = "reflink" // a copy-on-write clone of the file (FICLONE)
	StorageOverlay Storage = "overlay" // a qcow2 file over the read-only image (QEMU only)
	StorageCopy    Storage = "copy"    // a sparse copy of the image's data
)

// ParseStorage checks a configured storage value.
func ParseStorage(s string) (Storage, error) {
	switch Storage(s) {
	case "", StorageAuto:
		return StorageAuto, nil
	case StorageDM, StorageReflink, StorageOverlay, StorageCopy:
		return Storage(s), nil
	}
	return "", fmt.Errorf("storage %q: want auto, dm, reflink, overlay or copy", s)
}

// StorageProbe is what the host offers.
type StorageProbe struct {
	DM         bool   // device-mapper snapshots are usable (and the helper can make them)
	DMWhy      string // why not
	Reflink    bool   // the state directory's filesystem shares extents
	ReflinkFS  string // its type, for messages
	Overlay    bool   // the VMM reads qcow2 overlays (QEMU, with qemu-img to make them)
	OverlayWhy string // why not
}

// ChooseStorage resolves want against what the host offers. An explicit
// backend the host cannot provide is an error naming why; auto takes dm,
// then reflink, then copy, and says what the fallback costs.
func ChooseStorage(want Storage, p StorageProbe) (Storage, string, error) {
	switch want {
	case StorageDM:
		if !p.DM {
			return "", "", fmt.Errorf("storage = dm: %s", p.DMWhy)
		}
		return StorageDM, "storage = dm in the config", nil
	case StorageReflink:
		if !p.Reflink {
			return "", "", fmt.Errorf("storage = reflink: the state directory's filesystem (%s) cannot clone extents", p.ReflinkFS)
		}
		return StorageReflink, "storage = reflink in the config", nil
	case StorageOverlay:
		if !p.Overlay {
			return "", "", fmt.Errorf("storage = overlay: %s", p.OverlayWhy)
		}
		return StorageOverlay, "storage = overlay in the config", nil
	case StorageCopy:
		return StorageCopy, "storage = copy in the config: every VM copies its image's data", nil
	}
	switch {
	case p.DM:
		return StorageDM, "auto: device-mapper snapshots (constant time whatever the image size)", nil
	case p.Reflink:
		return StorageReflink, fmt.Sprintf("auto: reflink clones on %s (device-mapper unavailable: %s)", p.ReflinkFS, p.DMWhy), nil
	case p.Overlay:
		return StorageOverlay, fmt.Sprintf("auto: qcow2 overlays over the image (constant time; device-mapper unavailable: %s; %s cannot clone extents)", p.DMWhy, p.ReflinkFS), nil
	}
	return StorageCopy, fmt.Sprintf("auto: sparse copies; device-mapper unavailable (%s), %s cannot clone extents and overlays are out (%s), so each VM create copies its image's data (time and disk grow with the image)", p.DMWhy, p.ReflinkFS, p.OverlayWhy), nil
}

// ProbeReflink reports whether files in dir can be cloned with FICLONE,
// and the filesystem's type.
func ProbeReflink(dir string) (bool, string) {
	fs := fsType(dir)
	a, err := os.CreateTemp(dir, ".reflink-probe-")
	if err != nil {
		return false, fs
	}
	defer os.Remove(a.Name())
	defer a.Close()
	if _, err := a.Write(make([]byte, 4096)); err != nil {
		return false, fs
	}
	b, err := os.CreateTemp(dir, ".reflink-probe-")
	if err != nil {
		return false, fs
	}
	defer os.Remove(b.Name())
	defer b.Close()
	return unix.IoctlFileClone(int(b.Fd()), int(a.Fd())) == nil, fs
}

func fsType(dir string) string {
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) != nil {
		return "unknown filesystem"
	}
	switch st.Type {
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case 0x2fc12fc1:
		return "zfs"
	}
	return fmt.Sprintf("filesystem 0x%x", st.Type)
}

// MakeRootDisk makes dst, a VM's private root disk, from the image at src
// with storage (reflink or copy; dm snapshots are the helper's, overlays MakeOverlay's).
func MakeRootDisk(storage Storage, src, dst string) error {
	switch storage {
	case StorageCopy, StorageReflink:
		in, err := os.Open(src)
		if err != nil {
			return fmt.Errorf("open image: %w", err)
		}
		defer in.Close()
		return cloneFrom(in, dst, storage)
	}
	return errors.New("make root disk: storage " + string(storage) + " is not a raw file backend")
}
