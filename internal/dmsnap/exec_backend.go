package dmsnap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"banger/internal/execx"

	"golang.org/x/sys/unix"
)

// Runner runs a program from an argv, never a shell; *execx.Runner is one.
type Runner interface {
	Run(ctx context.Context, bin string, args ...string) ([]byte, error)
	RunStdin(ctx context.Context, stdin io.Reader, bin string, args ...string) ([]byte, error)
}

// ExecBackend drives losetup (util-linux: busybox's lacks --list and
// --output) and dmsetup through a Runner. It is the fallback for hosts
// where a tool, not banger, should own the ioctls; IoctlBackend is the
// default. losetup cannot set autoclear, so its loops stay until detached
// (Manager always detaches them; reconcile catches the rest).
type ExecBackend struct {
	Run     Runner
	Losetup string // program name or path; "losetup" when empty
	Dmsetup string // "dmsetup" when empty
	// DevDir is where device nodes are looked for ("/dev" when empty):
	// dmsetup makes /dev/mapper/NAME only with udev or node creation on.
	DevDir string
}

func (b *ExecBackend) node(d DMDevice) string {
	dir := b.DevDir
	if dir == "" {
		dir = "/dev"
	}
	return findDMNode(dir, d)
}

func (b *ExecBackend) losetup() string {
	if b.Losetup != "" {
		return b.Losetup
	}
	return "losetup"
}

func (b *ExecBackend) dmsetup() string {
	if b.Dmsetup != "" {
		return b.Dmsetup
	}
	return "dmsetup"
}

// stderrOf returns the stderr an execx.Error carries.
func stderrOf(err error) string {
	var ee *execx.Error
	if errors.As(err, &ee) {
		return ee.Stderr
	}
	return ""
}

func classify(err error) error {
	s := stderrOf(err)
	switch {
	case strings.Contains(s, "Device or resource busy"):
		return ErrBusy
	case strings.Contains(s, "No such device or address"), strings.Contains(s, "Device does not exist"),
		strings.Contains(s, "No such device"):
		return ErrNotFound
	}
	return nil
}

// AttachLoop runs losetup --find --show on f's path, then checks the new
// loop's backing inode is f's: the path could have been swapped between
// the open and losetup's own open (only root can write under the root, so
// this is a guard, not the defence).
func (b *ExecBackend) AttachLoop(ctx context.Context, f *os.File, readOnly bool) (Loop, io.Closer, error) {
	var fst unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &fst); err != nil {
		return Loop{}, nil, fmt.Errorf("attach loop for %s: %w", f.Name(), err)
	}
	args, err := LosetupAttachArgs(f.Name(), readOnly)
	if err != nil {
		return Loop{}, nil, fmt.Errorf("attach loop: %w", err)
	}
	out, err := b.Run.Run(ctx, b.losetup(), args...)
	if err != nil {
		return Loop{}, nil, fmt.Errorf("attach loop for %s: %w", f.Name(), err)
	}
	dev := strings.TrimSpace(string(out))
	if err := CheckLoopDev(dev); err != nil {
		return Loop{}, nil, fmt.Errorf("attach loop for %s: losetup printed %q: %w", f.Name(), dev, err)
	}
	want := File{Path: f.Name(), Dev: uint64(fst.Dev), Ino: fst.Ino}
	loops, err := b.Loops(ctx)
	if err == nil {
		for _, l := range loops {
			if l.Path == dev {
				if !want.Matches(l) {
					err = fmt.Errorf("%s is bound to another file than the one opened", dev)
				}
				if err == nil {
					return l, nopCloser{}, nil
				}
			}
		}
		if err == nil {
			err = fmt.Errorf("%s missing from losetup --list", dev)
		}
	}
	if derr := b.detach(ctx, dev); derr != nil {
		return Loop{}, nil, fmt.Errorf("attach loop for %s: %w (and detaching %s: %w)", f.Name(), err, dev, derr)
	}
	return Loop{}, nil, fmt.Errorf("attach loop for %s: %w", f.Name(), err)
}

func (b *ExecBackend) detach(ctx context.Context, dev string) error {
	args, err := LosetupDetachArgs(dev)
	if err != nil {
		return err
	}
	if _, err := b.Run.Run(ctx, b.losetup(), args...); err != nil {
		if c := classify(err); c != nil {
			return fmt.Errorf("detach %s: %w: %w", dev, c, err)
		}
		return fmt.Errorf("detach %s: %w", dev, err)
	}
	return nil
}

// DetachLoop checks dev's backing file in losetup --list, then runs
// losetup --detach.
func (b *ExecBackend) DetachLoop(ctx context.Context, dev string, want File) error {
	if err := CheckLoopDev(dev); err != nil {
		return fmt.Errorf("detach loop: %w", err)
	}
	loops, err := b.Loops(ctx)
	if err != nil {
		return fmt.Errorf("detach %s: %w", dev, err)
	}
	for _, l := range loops {
		if l.Path != dev {
			continue
		}
		if !want.Matches(l) {
			return fmt.Errorf("detach %s: bound to another file than %s: %w", dev, want.Path, ErrNotFound)
		}
		return b.detach(ctx, dev)
	}
	return fmt.Errorf("detach %s: not bound: %w", dev, ErrNotFound)
}

// Loops runs losetup --list.
func (b *ExecBackend) Loops(ctx context.Context) ([]Loop, error) {
	out, err := b.Run.Run(ctx, b.losetup(), LosetupListArgs()...)
	if err != nil {
		return nil, fmt.Errorf("list loop devices: %w", err)
	}
	loops, err := ParseLosetupList(out)
	if err != nil {
		return nil, fmt.Errorf("list loop devices: %w", err)
	}
	return loops, nil
}

// CreateDM runs dmsetup create (which removes the device again when its
// load or resume fails), then dmsetup info for the device number.
func (b *ExecBackend) CreateDM(ctx context.Context, name, uuid string, table []Target) (DMDevice, error) {
	args, stdin, err := DmsetupCreateArgs(name, uuid, table)
	if err != nil {
		return DMDevice{}, fmt.Errorf("create dm device: %w", err)
	}
	if stdin != "" {
		_, err = b.Run.RunStdin(ctx, strings.NewReader(stdin), b.dmsetup(), args...)
	} else {
		_, err = b.Run.Run(ctx, b.dmsetup(), args...)
	}
	if err != nil {
		if s := stderrOf(err); strings.Contains(s, "already exists") || (strings.Contains(s, "create ioctl") && errors.Is(classify(err), ErrBusy)) {
			return DMDevice{}, fmt.Errorf("create dm device %s: %w: %w", name, ErrExists, err)
		}
		return DMDevice{}, fmt.Errorf("create dm device %s: %w", name, err)
	}
	devs, err := b.info(ctx, name)
	if err == nil && len(devs) == 1 && devs[0].UUID == uuid {
		d := devs[0]
		d.Path = b.node(d)
		return d, nil
	}
	if err == nil {
		err = fmt.Errorf("dmsetup info does not show it with uuid %s", uuid)
	}
	if rerr := b.RemoveDM(ctx, uuid); rerr != nil && !errors.Is(rerr, ErrNotFound) {
		return DMDevice{}, fmt.Errorf("create dm device %s: %w (and removing it again: %w)", name, err, rerr)
	}
	return DMDevice{}, fmt.Errorf("create dm device %s: %w", name, err)
}

func (b *ExecBackend) info(ctx context.Context, name string) ([]DMDevice, error) {
	args, err := DmsetupInfoArgs(name)
	if err != nil {
		return nil, err
	}
	out, err := b.Run.Run(ctx, b.dmsetup(), args...)
	if err != nil {
		if c := classify(err); c != nil {
			return nil, fmt.Errorf("dm info %s: %w: %w", name, c, err)
		}
		return nil, fmt.Errorf("dm info %s: %w", name, err)
	}
	return ParseDmsetupInfo(out)
}

// RemoveDM runs dmsetup remove --uuid.
func (b *ExecBackend) RemoveDM(ctx context.Context, uuid string) error {
	args, err := DmsetupRemoveArgs(uuid, false)
	if err != nil {
		return fmt.Errorf("remove dm device: %w", err)
	}
	if _, err := b.Run.Run(ctx, b.dmsetup(), args...); err != nil {
		if c := classify(err); c != nil {
			return fmt.Errorf("remove dm device %s: %w: %w", uuid, c, err)
		}
		return fmt.Errorf("remove dm device %s: %w", uuid, err)
	}
	return nil
}

// DMDevices runs dmsetup info -c over every device and keeps those whose
// name starts with prefix.
func (b *ExecBackend) DMDevices(ctx context.Context, prefix string) ([]DMDevice, error) {
	all, err := b.info(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("list dm devices: %w", err)
	}
	var out []DMDevice
	for _, d := range all {
		if strings.HasPrefix(d.Name, prefix) {
			d.Path = b.node(d)
			out = append(out, d)
		}
	}
	return out, nil
}
