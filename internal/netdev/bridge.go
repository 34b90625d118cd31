package netdev

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// CreateBridge creates a new bridge named name with mtu, down and without
// addresses, and IPv4 forwarding off on it. It never adopts: when a link
// of that name already exists, whoever made it, the error wraps
// fs.ErrExist and nothing is changed. The kernel checks existence and
// creates in one step (NLM_F_EXCL), so no other bridge of the name can
// appear in between.
func (h *Host) CreateBridge(ctx context.Context, name string, mtu int) error {
	if mtu < 68 || mtu > 65535 {
		return fmt.Errorf("create bridge %s: mtu %d out of range", name, mtu)
	}
	unlock, err := h.lock(ctx)
	if err != nil {
		return fmt.Errorf("create bridge %s: %w", name, err)
	}
	defer unlock()
	return h.newBridge(name, mtu)
}

// newBridge creates the bridge exclusively and sets what every new bridge
// starts with; both CreateBridge and EnsureBridge make bridges through it.
// The caller holds the Host's lock.
func (h *Host) newBridge(name string, mtu int) error {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	attrs.MTU = mtu
	if err := h.nl.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create bridge %s: %w", name, fs.ErrExist)
		}
		return fmt.Errorf("create bridge %s: %w", name, err)
	}
	if err := h.writeSysctl(forwardingKey(name), "0"); err != nil {
		return fmt.Errorf("disable forwarding on bridge %s: %w", name, err)
	}
	return nil
}

// EnsureBridge creates the bridge if missing, makes gateway (the bridge
// address with the guest subnet's prefix length) its only IPv4 address, sets
// mtu and brings it up. Calling it again with the same arguments changes
// nothing; calling it with a new gateway moves the bridge to it, so a changed
// subnet in the config does not leave the old address behind. It adopts an
// existing bridge of that name: the caller must know the bridge is banger's
// (the helper's ledger), and makes new ones with CreateBridge.
//
// A new bridge starts with IPv4 forwarding off on it: guests reach the host
// by local delivery and each other by bridging, so only NAT needs the kernel
// to route their packets, and ApplyFirewall turns it on then.
func (h *Host) EnsureBridge(ctx context.Context, name string, gateway netip.Prefix, mtu int) error {
	if !gateway.Addr().Is4() || gateway.Bits() < 1 || gateway.Bits() > 30 {
		return fmt.Errorf("ensure bridge %s: gateway %s is not an IPv4 address with a /1../30 prefix", name, gateway)
	}
	if mtu < 68 || mtu > 65535 {
		return fmt.Errorf("ensure bridge %s: mtu %d out of range", name, mtu)
	}
	unlock, err := h.lock(ctx)
	if err != nil {
		return fmt.Errorf("ensure bridge %s: %w", name, err)
	}
	defer unlock()

	l, err := h.linkByName(name)
	if err != nil {
		return fmt.Errorf("look up bridge %s: %w", name, err)
	}
	if l == nil {
		if err := h.newBridge(name, mtu); err != nil {
			return err
		}
		if l, err = h.nl.LinkByName(name); err != nil {
			return fmt.Errorf("look up bridge %s: %w", name, err)
		}
	}
	if l.Type() != "bridge" {
		return fmt.Errorf("ensure bridge %s: link exists but is a %s, not a bridge", name, l.Type())
	}
	if l.Attrs().MTU != mtu {
		if err := h.nl.LinkSetMTU(l, mtu); err != nil {
			return fmt.Errorf("set mtu %d on bridge %s: %w", mtu, name, err)
		}
	}
	if err := h.setOnlyIPv4(l, gateway); err != nil {
		return fmt.Errorf("set address %s on bridge %s: %w", gateway, name, err)
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := h.nl.LinkSetUp(l); err != nil {
			return fmt.Errorf("bring up bridge %s: %w", name, err)
		}
	}
	return nil
}

// setOnlyIPv4 makes want the link's only IPv4 address. The new address goes
// on before stale ones come off so the bridge is never without a gateway.
func (h *Host) setOnlyIPv4(l netlink.Link, want netip.Prefix) error {
	addrs, err := dump(func() ([]netlink.Addr, error) { return h.nl.AddrList(l, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	have := false
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok && p == want {
			have = true
		}
	}
	if !have {
		ipn := &net.IPNet{IP: want.Addr().AsSlice(), Mask: net.CIDRMask(want.Bits(), 32)}
		if err := h.nl.AddrReplace(l, &netlink.Addr{IPNet: ipn}); err != nil {
			return fmt.Errorf("add: %w", err)
		}
	}
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok && p == want {
			continue
		}
		if err := h.nl.AddrDel(l, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("remove stale %s: %w", a.IPNet, err)
		}
	}
	return nil
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

// DeleteBridge removes the bridge. A missing bridge is not an error; a link
// of that name that is not a bridge is refused rather than deleted.
func (h *Host) DeleteBridge(ctx context.Context, name string) error {
	unlock, err := h.lock(ctx)
	if err != nil {
		return fmt.Errorf("delete bridge %s: %w", name, err)
	}
	defer unlock()
	l, err := h.linkByName(name)
	if err != nil {
		return fmt.Errorf("look up bridge %s: %w", name, err)
	}
	if l == nil {
		return nil
	}
	if l.Type() != "bridge" {
		return fmt.Errorf("delete bridge %s: link is a %s, not a bridge", name, l.Type())
	}
	if err := h.nl.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete bridge %s: %w", name, err)
	}
	return nil
}

// dump retries a netlink dump the kernel interrupted because the table
// changed under it; netlink returns partial results in that case.
func dump[T any](f func() ([]T, error)) ([]T, error) {
	var (
		out []T
		err error
	)
	for range 5 {
		out, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
	}
	return nil, err
}
