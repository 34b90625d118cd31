package netdev

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// tunDevice is the clone device every tap queue is opened through.
const tunDevice = "/dev/net/tun"

// tapFlags is how banger's taps are created and attached. A single-queue
// tap only accepts queues whose IFF_MULTI_QUEUE setting matches its own, and
// the jailer opens Firecracker's tap with exactly these flags, so creation
// and OpenTap must use them too.
const tapFlags = unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR

// CreateTap creates a persistent tap owned by uid:gid (a negative gid leaves
// the group unset), turns IPv6 off on it (and on bridge, with strict
// rp_filter there), enslaves it to bridge, sets mtu and brings it up. If the
// tap already exists with the same owner, group and bridge, only its mtu and
// state are brought in line; an existing tap with another owner or bridge, or
// a non-tap link of that name, is refused. A tap this call created is removed
// again if a later step fails, so a failure leaves nothing behind.
//
// The tap is made with raw TUNSETIFF/TUNSETOWNER/TUNSETPERSIST ioctls rather
// than netlink's Tuntap: that code opens /dev/net/tun in the calling thread's
// namespace whatever handle it is called on, and keeps queue files open that
// would pin the tap to the helper.
func (h *Host) CreateTap(ctx context.Context, name, bridge string, uid, gid, mtu int) error {
	if uid < 0 {
		return fmt.Errorf("create tap %s: owner uid %d is negative", name, uid)
	}
	if mtu < 68 || mtu > 65535 {
		return fmt.Errorf("create tap %s: mtu %d out of range", name, mtu)
	}
	if len(name) == 0 || len(name) >= unix.IFNAMSIZ {
		return fmt.Errorf("create tap %q: name must be 1..%d bytes", name, unix.IFNAMSIZ-1)
	}
	unlock, err := h.lock(ctx)
	if err != nil {
		return fmt.Errorf("create tap %s: %w", name, err)
	}
	defer unlock()

	br, err := h.linkByName(bridge)
	if err != nil {
		return fmt.Errorf("look up bridge %s for tap %s: %w", bridge, name, err)
	}
	if br == nil || br.Type() != "bridge" {
		return fmt.Errorf("create tap %s: bridge %s does not exist", name, bridge)
	}

	l, err := h.linkByName(name)
	if err != nil {
		return fmt.Errorf("look up tap %s: %w", name, err)
	}
	created := false
	if l != nil {
		if err := sameTap(l, br, uid, gid); err != nil {
			return fmt.Errorf("create tap %s: %w", name, err)
		}
	} else {
		if err := h.inNetns(func() error { return makePersistentTap(name, uid, gid) }); err != nil {
			return fmt.Errorf("create tap %s: %w", name, err)
		}
		created = true
		if l, err = h.nl.LinkByName(name); err != nil {
			return h.undoTap(name, fmt.Errorf("look up new tap %s: %w", name, err))
		}
	}
	// IPv6 goes off on the tap before it comes up, and on the bridge in
	// case no firewall has been applied yet: guests are IPv4-only, and an
	// IPv6 address on either would be one the host answers them on.
	err = h.guardBridge(bridge)
	if err == nil {
		err = h.inNetns(func() error { return disableIPv6Here(name) })
	}
	if err == nil {
		err = h.configureTap(l, br, mtu)
	}
	if err != nil {
		if created {
			return h.undoTap(name, err)
		}
		return err
	}
	return nil
}

// sameTap reports why an existing link is not the tap CreateTap would make.
func sameTap(l netlink.Link, br netlink.Link, uid, gid int) error {
	t, ok := l.(*netlink.Tuntap)
	if !ok || t.Mode != netlink.TUNTAP_MODE_TAP {
		return fmt.Errorf("link exists but is a %s, not a tap", l.Type())
	}
	if t.NonPersist {
		return errors.New("tap exists but is not persistent")
	}
	if int(t.Owner) != uid {
		return fmt.Errorf("tap exists with owner uid %d, want %d", t.Owner, uid)
	}
	if gid >= 0 && int(t.Group) != gid {
		return fmt.Errorf("tap exists with group gid %d, want %d", t.Group, gid)
	}
	if m := t.Attrs().MasterIndex; m != 0 && m != br.Attrs().Index {
		return fmt.Errorf("tap exists on another bridge (ifindex %d)", m)
	}
	return nil
}

func (h *Host) configureTap(l netlink.Link, br netlink.Link, mtu int) error {
	name := l.Attrs().Name
	if l.Attrs().MTU != mtu {
		if err := h.nl.LinkSetMTU(l, mtu); err != nil {
			return fmt.Errorf("set mtu %d on tap %s: %w", mtu, name, err)
		}
	}
	if l.Attrs().MasterIndex != br.Attrs().Index {
		if err := h.nl.LinkSetMasterByIndex(l, br.Attrs().Index); err != nil {
			return fmt.Errorf("attach tap %s to bridge %s: %w", name, br.Attrs().Name, err)
		}
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := h.nl.LinkSetUp(l); err != nil {
			return fmt.Errorf("bring up tap %s: %w", name, err)
		}
	}
	return nil
}

// undoTap removes a tap CreateTap just made and returns cause, with any
// cleanup failure joined to it.
func (h *Host) undoTap(name string, cause error) error {
	if err := h.deleteTap(name); err != nil {
		return errors.Join(cause, fmt.Errorf("roll back tap %s: %w", name, err))
	}
	return cause
}

// makePersistentTap creates the tap through the clone device. IFF_TUN_EXCL
// makes the kernel refuse an existing device instead of attaching to it, so
// a tap created concurrently by someone else is never adopted by accident.
func makePersistentTap(name string, uid, gid int) error {
	fd, err := unix.Open(tunDevice, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", tunDevice, err)
	}
	// Closing the only queue of a persistent tap leaves the device in place.
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fmt.Errorf("build ifreq: %w", err)
	}
	ifr.SetUint16(uint16(tapFlags | unix.IFF_TUN_EXCL))
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return fmt.Errorf("TUNSETIFF: %w", err)
	}
	// From here on the device exists but vanishes with fd until
	// TUNSETPERSIST, so an early return leaves nothing behind.
	if err := unix.IoctlSetInt(fd, unix.TUNSETOWNER, uid); err != nil {
		return fmt.Errorf("TUNSETOWNER %d: %w", uid, err)
	}
	if gid >= 0 {
		if err := unix.IoctlSetInt(fd, unix.TUNSETGROUP, gid); err != nil {
			return fmt.Errorf("TUNSETGROUP %d: %w", gid, err)
		}
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1); err != nil {
		return fmt.Errorf("TUNSETPERSIST: %w", err)
	}
	return nil
}

// DeleteTap removes a tap. A missing tap is not an error; a link of that name
// that is not a tap is refused rather than deleted. A VMM still holding the
// tap's queue keeps working on a detached file until it closes it.
func (h *Host) DeleteTap(ctx context.Context, name string) error {
	unlock, err := h.lock(ctx)
	if err != nil {
		return fmt.Errorf("delete tap %s: %w", name, err)
	}
	defer unlock()
	return h.deleteTap(name)
}

func (h *Host) deleteTap(name string) error {
	l, err := h.linkByName(name)
	if err != nil {
		return fmt.Errorf("look up tap %s: %w", name, err)
	}
	if l == nil {
		return nil
	}
	if t, ok := l.(*netlink.Tuntap); !ok || t.Mode != netlink.TUNTAP_MODE_TAP {
		return fmt.Errorf("delete tap %s: link is a %s, not a tap", name, l.Type())
	}
	if err := h.nl.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete tap %s: %w", name, err)
	}
	return nil
}

// OpenTap attaches a new queue to an existing tap and returns it. The file is
// in blocking mode and close-on-exec; the caller passes it on (SCM_RIGHTS,
// then QEMU's -netdev tap,fd=N) and closes its own copy. This is what lets an
// unprivileged VMM use the tap where /dev/net/tun is root-only.
//
// OpenTap never creates a device: TUNSETIFF on a missing name would silently
// make a fresh non-persistent tap, so the name is checked to be an existing
// tap first. A tap can have one queue at a time; a second OpenTap while a VMM
// holds one fails with EBUSY.
func (h *Host) OpenTap(ctx context.Context, name string) (*os.File, error) {
	unlock, err := h.lock(ctx)
	if err != nil {
		return nil, fmt.Errorf("open tap %s: %w", name, err)
	}
	defer unlock()
	l, err := h.linkByName(name)
	if err != nil {
		return nil, fmt.Errorf("look up tap %s: %w", name, err)
	}
	if l == nil {
		return nil, fmt.Errorf("open tap %s: %w", name, os.ErrNotExist)
	}
	if t, ok := l.(*netlink.Tuntap); !ok || t.Mode != netlink.TUNTAP_MODE_TAP {
		return nil, fmt.Errorf("open tap %s: link is a %s, not a tap", name, l.Type())
	}
	var f *os.File
	err = h.inNetns(func() error {
		fd, err := unix.Open(tunDevice, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open %s: %w", tunDevice, err)
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return fmt.Errorf("build ifreq: %w", err)
		}
		ifr.SetUint16(tapFlags)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("TUNSETIFF: %w", err)
		}
		// Had the tap vanished since the lookup, TUNSETIFF made a new
		// throwaway one; only banger's persistent tap is acceptable.
		if err := unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("TUNGETIFF: %w", err)
		}
		if ifr.Uint16()&unix.IFF_PERSIST == 0 {
			unix.Close(fd)
			return errors.New("tap disappeared while opening it")
		}
		f = os.NewFile(uintptr(fd), tunDevice+":"+name)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open tap %s: %w", name, err)
	}
	return f, nil
}

// SetTapOwner gives an existing tap to uid:gid (TUNSETOWNER and
// TUNSETGROUP on a queue opened as OpenTap does), so a VMM running as them
// can open it by name. No VMM may hold the tap's queue meanwhile.
func (h *Host) SetTapOwner(ctx context.Context, name string, uid, gid int) error {
	f, err := h.OpenTap(ctx, name)
	if err != nil {
		return fmt.Errorf("set owner of tap %s: %w", name, err)
	}
	defer f.Close()
	if err := unix.IoctlSetInt(int(f.Fd()), unix.TUNSETOWNER, uid); err != nil {
		return fmt.Errorf("set owner of tap %s: TUNSETOWNER %d: %w", name, uid, err)
	}
	if err := unix.IoctlSetInt(int(f.Fd()), unix.TUNSETGROUP, gid); err != nil {
		return fmt.Errorf("set owner of tap %s: TUNSETGROUP %d: %w", name, gid, err)
	}
	return nil
}
