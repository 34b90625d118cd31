package dmsnap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// IoctlBackend drives loop devices and device-mapper with ioctls on
// /dev/loop-control, /dev/loopN and /dev/mapper/control, and reads loop
// state from sysfs: no external program, so a static binary works in a
// bare guest. It needs devtmpfs on DevDir (the kernel makes the loopN and
// dm-N nodes) and sysfs on SysDir; without devtmpfs (a container's /dev),
// AttachLoop makes the loop's node in NodeDir, when set.
type IoctlBackend struct {
	DevDir string
	SysDir string
	// NodeDir is a root-only directory on a filesystem that allows device
	// nodes, where AttachLoop makes a passing node for a loop device that
	// DevDir lacks. Empty: such a loop is an error.
	NodeDir string
}

// NewIoctlBackend returns an IoctlBackend on /dev and /sys.
func NewIoctlBackend() *IoctlBackend { return &IoctlBackend{DevDir: "/dev", SysDir: "/sys"} }

// maxGetFreeTries bounds the race for a free loop device: another process
// may bind the number LOOP_CTL_GET_FREE gave us before we do (EBUSY).
const maxGetFreeTries = 64

// AttachLoop binds f to a free loop device with LOOP_CONFIGURE (falling
// back to LOOP_SET_FD and LOOP_SET_STATUS64 on kernels before 5.8), with
// LO_FLAGS_AUTOCLEAR and, when readOnly, LO_FLAGS_READ_ONLY.
func (b *IoctlBackend) AttachLoop(ctx context.Context, f *os.File, readOnly bool) (Loop, io.Closer, error) {
	var fst unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &fst); err != nil {
		return Loop{}, nil, fmt.Errorf("attach loop for %s: %w", f.Name(), err)
	}
	ctl, err := os.OpenFile(filepath.Join(b.DevDir, "loop-control"), os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return Loop{}, nil, fmt.Errorf("attach loop for %s: %w", f.Name(), err)
	}
	defer ctl.Close()
	mode := os.O_RDWR
	if readOnly {
		// A device opened without write access binds read-only; the
		// flag below says so explicitly for LOOP_CONFIGURE.
		mode = os.O_RDONLY
	}
	for range maxGetFreeTries {
		if err := ctx.Err(); err != nil {
			return Loop{}, nil, fmt.Errorf("attach loop for %s: %w", f.Name(), err)
		}
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return Loop{}, nil, fmt.Errorf("attach loop for %s: find a free loop device: %w", f.Name(), err)
		}
		path := filepath.Join(b.DevDir, "loop"+strconv.Itoa(n))
		lf, err := os.OpenFile(path, mode|unix.O_CLOEXEC, 0)
		if errors.Is(err, fs.ErrNotExist) && b.NodeDir != "" {
			lf, err = b.openLoopNode(n, mode)
		}
		if err != nil {
			return Loop{}, nil, fmt.Errorf("attach loop for %s: %w", f.Name(), err)
		}
		err = configureLoop(lf, f, readOnly)
		if errors.Is(err, unix.EBUSY) {
			lf.Close()
			continue
		}
		if err != nil {
			lf.Close()
			return Loop{}, nil, fmt.Errorf("attach %s to %s: %w", f.Name(), path, err)
		}
		var lst unix.Stat_t
		if err := unix.Fstat(int(lf.Fd()), &lst); err != nil {
			_ = unix.IoctlSetInt(int(lf.Fd()), unix.LOOP_CLR_FD, 0)
			lf.Close()
			return Loop{}, nil, fmt.Errorf("attach %s to %s: %w", f.Name(), path, err)
		}
		return Loop{
			Path: path, Major: unix.Major(uint64(lst.Rdev)), Minor: unix.Minor(uint64(lst.Rdev)),
			Backing: f.Name(), BackingDev: uint64(fst.Dev), BackingIno: fst.Ino,
			ReadOnly: readOnly, Autoclear: true,
		}, lf, nil
	}
	return Loop{}, nil, fmt.Errorf("attach loop for %s: every free loop device was taken first %d times: %w", f.Name(), maxGetFreeTries, ErrBusy)
}

// openLoopNode opens loop device n through a node made in NodeDir from
// the numbers sysfs gives, removed again once open.
func (b *IoctlBackend) openLoopNode(n, mode int) (*os.File, error) {
	devNum, err := readSys(filepath.Join(b.SysDir, "block", "loop"+strconv.Itoa(n), "dev"))
	if err != nil {
		return nil, err
	}
	var major, minor uint32
	if _, err := fmt.Sscanf(devNum, "%d:%d", &major, &minor); err != nil {
		return nil, fmt.Errorf("loop%d: device number %q: %w", n, devNum, err)
	}
	node := filepath.Join(b.NodeDir, fmt.Sprintf(".loop%d-%d", n, os.Getpid()))
	_ = os.Remove(node)
	if err := unix.Mknod(node, unix.S_IFBLK|0o600, int(unix.Mkdev(major, minor))); err != nil {
		return nil, fmt.Errorf("make a node for loop%d: %w", n, err)
	}
	defer os.Remove(node)
	return os.OpenFile(node, mode|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
}

func configureLoop(lf, f *os.File, readOnly bool) error {
	defer runtime.KeepAlive(f)
	defer runtime.KeepAlive(lf)
	flags := uint32(unix.LO_FLAGS_AUTOCLEAR)
	if readOnly {
		flags |= unix.LO_FLAGS_READ_ONLY
	}
	cfg := unix.LoopConfig{Fd: uint32(f.Fd())}
	cfg.Info.Flags = flags
	copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], f.Name())
	err := unix.IoctlLoopConfigure(int(lf.Fd()), &cfg)
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOTTY) {
		return err
	}
	// Before 5.8: bind, then set the flags. Read-only follows from the
	// modes f and lf were opened with.
	if err := unix.IoctlSetInt(int(lf.Fd()), unix.LOOP_SET_FD, int(f.Fd())); err != nil {
		return err
	}
	info := unix.LoopInfo64{Flags: unix.LO_FLAGS_AUTOCLEAR}
	copy(info.File_name[:len(info.File_name)-1], f.Name())
	if err := unix.IoctlLoopSetStatus64(int(lf.Fd()), &info); err != nil {
		_ = unix.IoctlSetInt(int(lf.Fd()), unix.LOOP_CLR_FD, 0)
		return err
	}
	return nil
}

// DetachLoop checks, on the same open device, that dev is bound to want
// (LOOP_GET_STATUS64: backing device and inode) and then clears it
// (LOOP_CLR_FD), so a loop number reused by someone else is never
// detached.
func (b *IoctlBackend) DetachLoop(_ context.Context, dev string, want File) error {
	if err := CheckLoopDev(dev); err != nil {
		return fmt.Errorf("detach loop: %w", err)
	}
	name := filepath.Base(dev)
	lf, err := os.OpenFile(filepath.Join(b.DevDir, name), os.O_RDONLY|unix.O_CLOEXEC, 0)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("detach %s: %w", dev, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("detach %s: %w", dev, err)
	}
	defer lf.Close()
	info, err := unix.IoctlLoopGetStatus64(int(lf.Fd()))
	if errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("detach %s: not bound: %w", dev, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("detach %s: %w", dev, err)
	}
	got := Loop{BackingDev: info.Device, BackingIno: info.Inode}
	if want.Ino == 0 {
		got.Backing, got.Deleted = readBacking(filepath.Join(b.SysDir, "block", name))
	}
	if !want.Matches(got) {
		return fmt.Errorf("detach %s: bound to another file than %s: %w", dev, want.Path, ErrNotFound)
	}
	err = unix.IoctlSetInt(int(lf.Fd()), unix.LOOP_CLR_FD, 0)
	switch {
	case errors.Is(err, unix.ENXIO):
		return fmt.Errorf("detach %s: %w", dev, ErrNotFound)
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("detach %s: %w: %w", dev, ErrBusy, err)
	case err != nil:
		return fmt.Errorf("detach %s: %w", dev, err)
	}
	return nil
}

// Loops lists bound loop devices from sysfs, without opening any: opening
// and closing an unused autoclear loop would detach it.
func (b *IoctlBackend) Loops(_ context.Context) ([]Loop, error) {
	return scanLoops(filepath.Join(b.SysDir, "block"), b.DevDir)
}

// scanLoops reads <sysBlock>/loopN/{dev,ro,loop/backing_file,
// loop/autoclear,holders}; unbound loops have no backing_file.
func scanLoops(sysBlock, devDir string) ([]Loop, error) {
	ents, err := os.ReadDir(sysBlock)
	if err != nil {
		return nil, fmt.Errorf("list loop devices: %w", err)
	}
	var loops []Loop
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, "loop") || !isDecimal(strings.TrimPrefix(name, "loop")) {
			continue
		}
		dir := filepath.Join(sysBlock, name)
		backing, deleted := readBacking(dir)
		if backing == "" {
			continue
		}
		l := Loop{Path: filepath.Join(devDir, name), Backing: backing, Deleted: deleted}
		if s, err := readSys(filepath.Join(dir, "dev")); err == nil {
			l.Major, l.Minor, _ = parseMajMin(s)
		}
		if s, err := readSys(filepath.Join(dir, "ro")); err == nil {
			l.ReadOnly = s == "1"
		}
		if s, err := readSys(filepath.Join(dir, "loop", "autoclear")); err == nil {
			l.Autoclear = s == "1"
		}
		if hs, err := os.ReadDir(filepath.Join(dir, "holders")); err == nil {
			for _, h := range hs {
				l.Holders = append(l.Holders, h.Name())
			}
		}
		loops = append(loops, l)
	}
	return loops, nil
}

func readBacking(dir string) (string, bool) {
	s, err := os.ReadFile(filepath.Join(dir, "loop", "backing_file"))
	if err != nil {
		return "", false
	}
	return trimDeleted(strings.TrimSuffix(string(s), "\n"))
}

func readSys(p string) (string, error) {
	b, err := os.ReadFile(p)
	return strings.TrimSpace(string(b)), err
}

// dmIoctlNum is _IOWR(0xfd, cmd, struct dm_ioctl).
func dmIoctlNum(cmd uint) uint {
	const iocReadWrite = 3
	return iocReadWrite<<30 | dmIoctlSize<<16 | 0xfd<<8 | cmd
}

// The device-mapper commands used (linux/dm-ioctl.h).
var (
	dmListDevices = dmIoctlNum(2)
	dmDevCreate   = dmIoctlNum(3)
	dmDevRemove   = dmIoctlNum(4)
	dmDevSuspend  = dmIoctlNum(6)
	dmDevStatus   = dmIoctlNum(7)
	dmTableLoad   = dmIoctlNum(9)
)

func (b *IoctlBackend) openControl() (*os.File, error) {
	return os.OpenFile(filepath.Join(b.DevDir, "mapper", "control"), os.O_RDWR|unix.O_CLOEXEC, 0)
}

// dmIoctl passes buf to the kernel, which reads data_size bytes from it
// and writes its answer back in place; buf is at least dmIoctlSize long
// and data_size never exceeds it (dmRequest).
func dmIoctl(ctl *os.File, req uint, buf []byte) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, ctl.Fd(), uintptr(req), uintptr(unsafe.Pointer(&buf[0]))) //nolint:gosec // G103: the one pointer handed to the kernel, a Go-allocated buffer sized by dmRequest
	runtime.KeepAlive(ctl)
	if errno != 0 {
		return errno
	}
	return nil
}

// CreateDM runs DM_DEV_CREATE (name and uuid), DM_TABLE_LOAD and
// DM_DEV_SUSPEND without the suspend flag (resume), removing the device
// again if a later step fails.
func (b *IoctlBackend) CreateDM(_ context.Context, name, uuid string, table []Target) (DMDevice, error) {
	if err := checkUUID(uuid); err != nil {
		return DMDevice{}, fmt.Errorf("create dm device %s: %w", name, err)
	}
	create, err := dmRequest(name, uuid, 0, nil, 0)
	if err != nil {
		return DMDevice{}, fmt.Errorf("create dm device %s: %w", name, err)
	}
	load, err := dmRequest(name, "", 0, table, 0)
	if err != nil {
		return DMDevice{}, fmt.Errorf("create dm device %s: %w", name, err)
	}
	resume, err := dmRequest(name, "", 0, nil, 0)
	if err != nil {
		return DMDevice{}, fmt.Errorf("create dm device %s: %w", name, err)
	}
	ctl, err := b.openControl()
	if err != nil {
		return DMDevice{}, fmt.Errorf("create dm device %s: %w", name, err)
	}
	defer ctl.Close()
	if err := dmIoctl(ctl, dmDevCreate, create); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return DMDevice{}, fmt.Errorf("create dm device %s: name or uuid taken: %w: %w", name, ErrExists, err)
		}
		return DMDevice{}, fmt.Errorf("create dm device %s: %w", name, err)
	}
	undo := func(step string, err error) (DMDevice, error) {
		rm, rerr := dmRequest("", uuid, 0, nil, 0)
		if rerr == nil {
			rerr = dmIoctl(ctl, dmDevRemove, rm)
		}
		if rerr != nil {
			return DMDevice{}, fmt.Errorf("create dm device %s: %s: %w (and removing it again: %w)", name, step, err, rerr)
		}
		return DMDevice{}, fmt.Errorf("create dm device %s: %s: %w", name, step, err)
	}
	if err := dmIoctl(ctl, dmTableLoad, load); err != nil {
		return undo("load table "+FormatTable(table), err)
	}
	if err := dmIoctl(ctl, dmDevSuspend, resume); err != nil {
		return undo("resume", err)
	}
	h, err := parseHeader(resume)
	if err != nil {
		return undo("read answer", err)
	}
	d := DMDevice{Name: name, UUID: uuid, Major: devMajor(h.Dev), Minor: devMinor(h.Dev), OpenCount: int(h.OpenCount)}
	d.Path = b.dmNode(d)
	return d, nil
}

func (b *IoctlBackend) dmNode(d DMDevice) string { return findDMNode(b.DevDir, d) }

// findDMNode finds a node for d: devtmpfs's /dev/dm-N, else the
// /dev/mapper/NAME udev or dmsetup makes, checked to be the right block
// device (neither exists without devtmpfs or udev: "").
func findDMNode(devDir string, d DMDevice) string {
	want := mkdev(d.Major, d.Minor)
	for _, p := range []string{filepath.Join(devDir, "dm-"+strconv.FormatUint(uint64(d.Minor), 10)), filepath.Join(devDir, "mapper", d.Name)} {
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK && uint64(st.Rdev) == want {
			return p
		}
	}
	return ""
}

// RemoveDM runs DM_DEV_REMOVE, looking the device up by uuid only.
func (b *IoctlBackend) RemoveDM(_ context.Context, uuid string) error {
	if err := checkUUID(uuid); err != nil {
		return fmt.Errorf("remove dm device: %w", err)
	}
	req, err := dmRequest("", uuid, 0, nil, 0)
	if err != nil {
		return fmt.Errorf("remove dm device %s: %w", uuid, err)
	}
	ctl, err := b.openControl()
	if err != nil {
		return fmt.Errorf("remove dm device %s: %w", uuid, err)
	}
	defer ctl.Close()
	err = dmIoctl(ctl, dmDevRemove, req)
	switch {
	case errors.Is(err, unix.ENXIO):
		return fmt.Errorf("remove dm device %s: %w", uuid, ErrNotFound)
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("remove dm device %s: %w: %w", uuid, ErrBusy, err)
	case err != nil:
		return fmt.Errorf("remove dm device %s: %w", uuid, err)
	}
	return nil
}

// DMDevices runs DM_LIST_DEVICES (growing the buffer while the kernel
// says it is full), then DM_DEV_STATUS for each name with prefix.
func (b *IoctlBackend) DMDevices(_ context.Context, prefix string) ([]DMDevice, error) {
	ctl, err := b.openControl()
	if err != nil {
		return nil, fmt.Errorf("list dm devices: %w", err)
	}
	defer ctl.Close()
	var names []dmNameEntry
	for room := 16 << 10; ; room *= 4 {
		req, err := dmRequest("", "", 0, nil, room)
		if err != nil {
			return nil, fmt.Errorf("list dm devices: %w", err)
		}
		if err := dmIoctl(ctl, dmListDevices, req); err != nil {
			return nil, fmt.Errorf("list dm devices: %w", err)
		}
		names, err = parseNameList(req)
		if errors.Is(err, errBufferFull) && room < 16<<20 {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list dm devices: %w", err)
		}
		break
	}
	var out []DMDevice
	for _, n := range names {
		if !strings.HasPrefix(n.Name, prefix) {
			continue
		}
		req, err := dmRequest(n.Name, "", 0, nil, 0)
		if err != nil {
			continue // a name dm accepted but we cannot encode: not one of ours
		}
		if err := dmIoctl(ctl, dmDevStatus, req); err != nil {
			if errors.Is(err, unix.ENXIO) {
				continue // removed since the list
			}
			return nil, fmt.Errorf("list dm devices: status of %s: %w", n.Name, err)
		}
		h, err := parseHeader(req)
		if err != nil {
			return nil, fmt.Errorf("list dm devices: status of %s: %w", n.Name, err)
		}
		d := DMDevice{Name: h.Name, UUID: h.UUID, Major: devMajor(h.Dev), Minor: devMinor(h.Dev), OpenCount: int(h.OpenCount)}
		d.Path = b.dmNode(d)
		out = append(out, d)
	}
	return out, nil
}

// Probe reports why this host cannot make snapshots with IoctlBackend, or
// nil: device-mapper's control node and loop-control must exist (the
// snapshot target itself loads on first use).
func Probe() error {
	for _, n := range []struct{ path, why string }{
		{"/dev/mapper/control", "no device-mapper in this kernel (dm_mod)"},
		{"/dev/loop-control", "no loop devices in this kernel (loop)"},
	} {
		var st unix.Stat_t
		if err := unix.Stat(n.path, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR {
			return fmt.Errorf("%s missing: %s", n.path, n.why)
		}
	}
	return nil
}
