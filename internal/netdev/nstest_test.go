package netdev_test

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// testNS is a network namespace a test created; it is referenced by an open
// handle only (no bind mount anywhere), so it disappears with the handle.
type testNS struct {
	h  netns.NsHandle
	nl *netlink.Handle
}

// path names the namespace for NewInNetns and LeaksIn while the handle is open.
func (n *testNS) path() string { return fmt.Sprintf("/proc/self/fd/%d", int(n.h)) }

// newNS creates a fresh network namespace with loopback up, without moving
// any thread of the test into it for longer than the creation takes.
func newNS(t *testing.T) *testNS {
	t.Helper()
	var ns netns.NsHandle
	err := onThread(func() error {
		orig, err := netns.Get()
		if err != nil {
			return err
		}
		defer orig.Close()
		ns, err = netns.New() // creates and enters
		if err != nil {
			return err
		}
		return netns.Set(orig)
	})
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	nl, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		t.Fatalf("netlink in netns: %v", err)
	}
	n := &testNS{h: ns, nl: nl}
	t.Cleanup(func() {
		nl.Close()
		ns.Close()
	})
	lo, err := nl.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := nl.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	return n
}

// onThread runs fn on a locked OS thread, which is discarded rather than
// reused if fn leaves it in another namespace.
func onThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return // thread stays locked and is discarded
		}
		defer orig.Close()
		ferr := fn()
		cur, err := netns.Get()
		if err == nil && cur.Equal(orig) {
			runtime.UnlockOSThread()
		}
		if err == nil {
			cur.Close()
		}
		errc <- ferr
	}()
	return <-errc
}

// in runs fn inside the namespace. Sockets fn creates stay in it after.
func (n *testNS) in(t *testing.T, fn func() error) {
	t.Helper()
	if err := n.do(fn); err != nil {
		t.Fatal(err)
	}
}

func (n *testNS) do(fn func() error) error {
	return onThread(func() error {
		orig, err := netns.Get()
		if err != nil {
			return err
		}
		defer orig.Close()
		if err := netns.Set(n.h); err != nil {
			return err
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			return err
		}
		return ferr
	})
}

// link returns a link of the namespace by name.
func (n *testNS) link(t *testing.T, name string) netlink.Link {
	t.Helper()
	l, err := n.nl.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s: %v", name, err)
	}
	return l
}

func (n *testNS) addAddr(t *testing.T, dev string, p string) {
	t.Helper()
	a, err := netlink.ParseAddr(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.nl.AddrAdd(n.link(t, dev), a); err != nil {
		t.Fatalf("add %s to %s: %v", p, dev, err)
	}
}

func (n *testNS) addRoute(t *testing.T, dst, via string) {
	t.Helper()
	r := &netlink.Route{Gw: net.ParseIP(via)}
	if dst != "default" {
		_, ipn, err := net.ParseCIDR(dst)
		if err != nil {
			t.Fatal(err)
		}
		r.Dst = ipn
	}
	if err := n.nl.RouteAdd(r); err != nil {
		t.Fatalf("route %s via %s: %v", dst, via, err)
	}
}

func (n *testNS) up(t *testing.T, dev string) {
	t.Helper()
	if err := n.nl.LinkSetUp(n.link(t, dev)); err != nil {
		t.Fatalf("up %s: %v", dev, err)
	}
}

// veth creates name in n and peer (called peerName) in other, both up.
func (n *testNS) veth(t *testing.T, name string, other *testNS, peerName string) {
	t.Helper()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	v := &netlink.Veth{LinkAttrs: attrs, PeerName: peerName, PeerNamespace: netlink.NsFd(int(other.h))}
	if err := n.nl.LinkAdd(v); err != nil {
		t.Fatalf("veth %s/%s: %v", name, peerName, err)
	}
	n.up(t, name)
	other.up(t, peerName)
}

// sysctl reads a sysctl in the namespace.
func (n *testNS) sysctl(t *testing.T, key string) string {
	t.Helper()
	var v string
	n.in(t, func() error {
		b, err := os.ReadFile(filepath.Join("/proc/sys", key))
		v = strings.TrimSpace(string(b))
		return err
	})
	return v
}

// sysfs mounts a sysfs instance that shows this namespace's devices (sysfs
// takes the network namespace of the mounting thread) on a private temporary
// directory, and unmounts it when the test ends.
func (n *testNS) sysfs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	n.in(t, func() error {
		return unix.Mount("sysfs", dir, "sysfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	})
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
