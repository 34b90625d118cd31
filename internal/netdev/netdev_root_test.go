package netdev_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"banger/internal/helper"
	"banger/internal/ipam"
	"banger/internal/netdev"
	"banger/internal/netdev/netdevtest"
	"banger/internal/testutil"
)

// The helper programs against this interface; the kernel implementation
// and the fake must both satisfy it.
var (
	_ helper.Net = (*netdev.Host)(nil)
	_ helper.Net = (*netdevtest.Fake)(nil)
)

const (
	bridge  = "br-fc"
	gateway = "172.30.0.1/24"
	probeTO = 400 * time.Millisecond
)

// hostIn returns a Host bound to ns, closed when the test ends, and checks
// on the way out that every root test leaves its namespace and the
// machine's own namespace without banger links or tables.
func hostIn(t *testing.T, ns *testNS) *netdev.Host {
	t.Helper()
	netdevtest.GuardHostNamespace(t)
	h, err := netdev.NewInNetns(ns.path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Error(err)
		}
	})
	return h
}

func TestBridgeRoot(t *testing.T) {
	testutil.RequireRoot(t)
	ctx := context.Background()
	ns := newNS(t)
	h := hostIn(t, ns)

	if err := h.DeleteBridge(ctx, bridge); err != nil {
		t.Fatalf("delete missing bridge: %v", err)
	}
	for range 2 {
		if err := h.EnsureBridge(ctx, bridge, mustPrefix(gateway), 1400); err != nil {
			t.Fatal(err)
		}
	}
	l := ns.link(t, bridge)
	if l.Type() != "bridge" || l.Attrs().MTU != 1400 || l.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("bridge: type %s mtu %d flags %v", l.Type(), l.Attrs().MTU, l.Attrs().Flags)
	}
	assertAddrs(t, ns, bridge, gateway)
	if v := ns.sysctl(t, "net/ipv4/conf/"+bridge+"/forwarding"); v != "0" {
		t.Errorf("new bridge forwarding = %s, want 0", v)
	}

	// A changed subnet moves the bridge, leaving no stale address.
	if err := h.EnsureBridge(ctx, bridge, mustPrefix("172.31.0.1/16"), 1500); err != nil {
		t.Fatal(err)
	}
	assertAddrs(t, ns, bridge, "172.31.0.1/16")
	if m := ns.link(t, bridge).Attrs().MTU; m != 1500 {
		t.Errorf("mtu after change = %d", m)
	}

	// A non-bridge of that name is neither adopted nor deleted.
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "br-fc-dummy"
	if err := ns.nl.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "peer"}); err != nil {
		t.Fatal(err)
	}
	if err := h.EnsureBridge(ctx, "br-fc-dummy", mustPrefix(gateway), 1500); err == nil || !strings.Contains(err.Error(), "not a bridge") {
		t.Errorf("ensure over a dummy: %v", err)
	}
	if err := h.DeleteBridge(ctx, "br-fc-dummy"); err == nil {
		t.Error("deleted a dummy as a bridge")
	}
	if err := ns.nl.LinkDel(ns.link(t, "br-fc-dummy")); err != nil {
		t.Fatal(err)
	}

	if err := h.DeleteBridge(ctx, bridge); err != nil {
		t.Fatal(err)
	}
	if err := h.DeleteBridge(ctx, bridge); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	netdevtest.AssertNoLeaks(t, ns.path())
}

func assertAddrs(t *testing.T, ns *testNS, dev string, want ...string) {
	t.Helper()
	addrs, err := ns.nl.AddrList(ns.link(t, dev), netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range addrs {
		got = append(got, a.IPNet.String())
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("%s addresses = %v, want %v", dev, got, want)
	}
}

func TestTapRoot(t *testing.T) {
	testutil.RequireRoot(t)
	ctx := context.Background()
	ns := newNS(t)
	h := hostIn(t, ns)
	const tap = "tap-fc-1"

	if err := h.CreateTap(ctx, tap, bridge, 65534, 65534, 1400); err == nil {
		t.Fatal("tap created on a missing bridge")
	}
	netdevtest.AssertNoLeaks(t, ns.path())

	if err := h.EnsureBridge(ctx, bridge, mustPrefix(gateway), 1500); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second call must be a no-op
		if err := h.CreateTap(ctx, tap, bridge, 65534, 65534, 1400); err != nil {
			t.Fatal(err)
		}
	}
	sys := ns.sysfs(t)
	readSys := func(attr string) string {
		b, err := os.ReadFile(filepath.Join(sys, "class/net", tap, attr))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	if o, g := readSys("owner"), readSys("group"); o != "65534" || g != "65534" {
		t.Errorf("sysfs owner:group = %s:%s", o, g)
	}
	if m := readSys("mtu"); m != "1400" {
		t.Errorf("sysfs mtu = %s", m)
	}
	if tf := readSys("tun_flags"); tf != "0x5802" { // IFF_TAP|IFF_NO_PI|IFF_VNET_HDR|IFF_PERSIST
		t.Errorf("tun_flags = %s", tf)
	}
	master, err := os.Readlink(filepath.Join(sys, "class/net", tap, "master"))
	if err != nil || filepath.Base(master) != bridge {
		t.Errorf("master = %q, %v", master, err)
	}
	if l := ns.link(t, tap); l.Attrs().Flags&net.FlagUp == 0 {
		t.Error("tap not up")
	}
	if err := h.CreateTap(ctx, tap, bridge, 1000, 1000, 1400); err == nil || !strings.Contains(err.Error(), "owner") {
		t.Errorf("create over a tap with another owner: %v", err)
	}

	f, err := h.OpenTap(ctx, tap)
	if err != nil {
		t.Fatal(err)
	}
	ifr, err := unix.NewIfreq("")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlIfreq(int(f.Fd()), unix.TUNGETIFF, ifr); err != nil {
		t.Fatal(err)
	}
	if ifr.Name() != tap || ifr.Uint16()&(unix.IFF_TAP|unix.IFF_NO_PI|unix.IFF_VNET_HDR) != unix.IFF_TAP|unix.IFF_NO_PI|unix.IFF_VNET_HDR {
		t.Errorf("queue is %s flags %#x", ifr.Name(), ifr.Uint16())
	}
	// The queue works: a frame written with its virtio-net header arrives
	// on the interface.
	before := ns.link(t, tap).Attrs().Statistics.RxPackets
	frame := make([]byte, 10+60) // virtio_net_hdr, then a minimal frame
	copy(frame[10:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1, 0x88, 0xb5})
	if _, err := f.Write(frame); err != nil {
		t.Fatalf("write frame: %v", err)
	}
	if after := ns.link(t, tap).Attrs().Statistics.RxPackets; after != before+1 {
		t.Errorf("rx packets %d -> %d", before, after)
	}
	if g, err := h.OpenTap(ctx, tap); err == nil {
		g.Close()
		t.Error("second queue opened on a single-queue tap")
	}
	f.Close()
	f2, err := h.OpenTap(ctx, tap)
	if err != nil {
		t.Fatalf("reopen after close: %v", err)
	}
	f2.Close()

	if _, err := h.OpenTap(ctx, "tap-fc-none"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("open missing tap: %v", err)
	}
	if _, err := h.OpenTap(ctx, bridge); err == nil {
		t.Error("opened a bridge as a tap")
	}
	if err := h.DeleteTap(ctx, bridge); err == nil {
		t.Error("deleted a bridge as a tap")
	}
	// The host namespace never saw the tap (compared by name, not as a
	// clean namespace: a banger running on the host has its own links).
	if _, err := netlink.LinkByName(tap); err == nil {
		t.Errorf("tap %s appeared in the host namespace", tap)
	}

	if err := h.DeleteTap(ctx, tap); err != nil {
		t.Fatal(err)
	}
	if _, err := ns.nl.LinkByName(tap); err == nil {
		t.Error("tap still there after delete")
	}
	if err := h.DeleteTap(ctx, tap); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	if err := h.CreateTap(ctx, tap, bridge, 65534, -1, 1500); err != nil {
		t.Fatalf("recreate: %v", err)
	}
	if err := h.DeleteTap(ctx, tap); err != nil {
		t.Fatal(err)
	}
	if err := h.DeleteBridge(ctx, bridge); err != nil {
		t.Fatal(err)
	}
	netdevtest.AssertNoLeaks(t, ns.path())
}

// topology is a host namespace running banger's bridge, two guest
// namespaces attached to it by veth (standing in for VM taps) and an
// "upstream" namespace routed from the host, which also answers for the
// metadata address. All addresses live in these namespaces only.
type topology struct {
	host, g1, g2, up *testNS
	h                *netdev.Host
	// guests are the two veth ports as the helper would list them.
	guests []netdev.Guest
}

// guestMAC is ipam.MAC's MAC for a guest address.
func guestMAC(addr string) net.HardwareAddr {
	m, err := net.ParseMAC(ipam.MAC(netip.MustParseAddr(addr)))
	if err != nil {
		panic(err)
	}
	return m
}

const (
	g1Addr = "172.30.0.2"
	g2Addr = "172.30.0.3"
	// The upstream is a public (documentation) network, which guest
	// egress does not deny by default; it exists only in the test's
	// namespaces.
	upAddr   = "203.0.113.2"
	hostUp   = "203.0.113.1"
	metadata = "169.254.169.254"
)

func newTopology(t *testing.T) *topology {
	t.Helper()
	tp := &topology{host: newNS(t), g1: newNS(t), g2: newNS(t), up: newNS(t)}
	tp.h = hostIn(t, tp.host)
	ctx := context.Background()
	if err := tp.h.EnsureBridge(ctx, bridge, mustPrefix(gateway), 1500); err != nil {
		t.Fatal(err)
	}
	for i, g := range []struct {
		ns   *testNS
		addr string
	}{{tp.g1, g1Addr}, {tp.g2, g2Addr}} {
		// Named like banger's taps: the bridge-family rules know guest
		// ports by the tap prefix.
		port := []string{"tap-fc-vm1", "tap-fc-vm2"}[i]
		tp.host.veth(t, port, g.ns, "eth0")
		if err := tp.host.nl.LinkSetMaster(tp.host.link(t, port), tp.host.link(t, bridge)); err != nil {
			t.Fatal(err)
		}
		// The MAC banger's VMMs give the guest at this address.
		if err := g.ns.nl.LinkSetHardwareAddr(g.ns.link(t, "eth0"), guestMAC(g.addr)); err != nil {
			t.Fatal(err)
		}
		g.ns.addAddr(t, "eth0", g.addr+"/24")
		g.ns.addRoute(t, "default", "172.30.0.1")
	}
	tp.host.veth(t, "uplink", tp.up, "eth0")
	tp.host.addAddr(t, "uplink", hostUp+"/24")
	tp.up.addAddr(t, "eth0", upAddr+"/24")
	tp.up.addAddr(t, "lo", metadata+"/32")
	tp.host.addRoute(t, metadata+"/32", upAddr)
	// The upstream can route back to guests, so only banger's forward
	// chain (not a missing route) keeps un-NATed guests from getting out.
	tp.up.addRoute(t, "172.30.0.0/24", hostUp)
	tp.guests = []netdev.Guest{
		{Tap: "tap-fc-vm1", MAC: guestMAC(g1Addr), IP: netip.MustParseAddr(g1Addr)},
		{Tap: "tap-fc-vm2", MAC: guestMAC(g2Addr), IP: netip.MustParseAddr(g2Addr)},
	}

	t.Cleanup(func() {
		ctx := context.Background()
		if err := tp.h.ClearFirewall(ctx); err != nil {
			t.Error(err)
		}
		if err := tp.h.DeleteBridge(ctx, bridge); err != nil {
			t.Error(err)
		}
		for _, port := range []string{"tap-fc-vm1", "tap-fc-vm2"} {
			if l, err := tp.host.nl.LinkByName(port); err == nil {
				_ = tp.host.nl.LinkDel(l)
			}
		}
		netdevtest.AssertNoLeaks(t, tp.host.path())
	})
	return tp
}

// serveTCP listens on addr inside ns and answers each connection with the
// peer address it saw.
func serveTCP(t *testing.T, ns *testNS, addr string) {
	t.Helper()
	var ln net.Listener
	ns.in(t, func() (err error) { ln, err = net.Listen("tcp4", addr); return err })
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(time.Second))
			_, _ = io.WriteString(c, c.RemoteAddr().(*net.TCPAddr).IP.String()+"\n")
			c.Close()
		}
	}()
}

// serveUDP echoes datagrams on addr inside ns.
func serveUDP(t *testing.T, ns *testNS, addr string) {
	t.Helper()
	var pc net.PacketConn
	ns.in(t, func() (err error) { pc, err = net.ListenPacket("udp4", addr); return err })
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
}

// dialTCP connects from inside ns with a short timeout and returns the
// source address the server saw.
func dialTCP(ns *testNS, addr string) (string, error) {
	var seen string
	err := ns.do(func() error {
		c, err := net.DialTimeout("tcp4", addr, probeTO)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(probeTO))
		b, err := io.ReadAll(c)
		seen = strings.TrimSpace(string(b))
		return err
	})
	return seen, err
}

// pingUDP sends one datagram from inside ns and waits briefly for the echo.
func pingUDP(ns *testNS, addr string) error {
	return ns.do(func() error {
		c, err := net.DialTimeout("udp4", addr, probeTO)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(probeTO))
		if _, err := c.Write([]byte("banger")); err != nil {
			return err
		}
		buf := make([]byte, 16)
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		if string(buf[:n]) != "banger" {
			return errors.New("bad echo")
		}
		return nil
	})
}

func TestFirewallRoot(t *testing.T) {
	testutil.RequireRoot(t)
	ctx := context.Background()
	tp := newTopology(t)

	serveTCP(t, tp.host, ":53")
	serveUDP(t, tp.host, ":53")
	serveTCP(t, tp.host, ":2222")
	serveTCP(t, tp.host, ":8080")
	serveTCP(t, tp.g2, ":7000")
	serveTCP(t, tp.g1, ":7001")
	serveTCP(t, tp.up, ":80")

	reach := func(from *testNS, addr string) {
		t.Helper()
		if _, err := dialTCP(from, addr); err != nil {
			t.Errorf("%s should be reachable: %v", addr, err)
		}
	}
	blocked := func(from *testNS, addr string) {
		t.Helper()
		if _, err := dialTCP(from, addr); err == nil {
			t.Errorf("%s should be blocked", addr)
		}
	}

	// Control: without banger's rules the host port and the other VM are
	// reachable, so a later failure is the firewall's doing.
	reach(tp.g1, "172.30.0.1:2222")
	reach(tp.g1, g2Addr+":7000")

	fw := netdev.Firewall{
		Bridge:    bridge,
		Subnet:    mustPrefix("172.30.0.0/24"),
		Gateway:   netip.MustParseAddr("172.30.0.1"),
		DNSPorts:  []uint16{53},
		AllowHost: []netip.AddrPort{netip.MustParseAddrPort("172.30.0.1:8080")},
		VMToVM:    true,
		NAT:       []netip.Addr{netip.MustParseAddr(g1Addr)},
		Guests:    tp.guests,
	}
	for range 2 { // idempotent
		if err := tp.h.ApplyFirewall(ctx, fw); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("guest to host", func(t *testing.T) {
		if err := pingUDP(tp.g1, "172.30.0.1:53"); err != nil {
			t.Errorf("udp dns: %v", err)
		}
		reach(tp.g1, "172.30.0.1:53")
		reach(tp.g1, "172.30.0.1:8080")
		blocked(tp.g1, "172.30.0.1:2222")
		blocked(tp.g1, hostUp+":53") // DNS only on the gateway address
	})
	t.Run("host to guest", func(t *testing.T) {
		reach(tp.host, g1Addr+":7001")
	})
	t.Run("vm to vm allowed", func(t *testing.T) {
		reach(tp.g1, g2Addr+":7000")
	})
	t.Run("nat", func(t *testing.T) {
		seen, err := dialTCP(tp.g1, upAddr+":80")
		if err != nil {
			t.Fatalf("nat guest egress: %v", err)
		}
		if seen != hostUp {
			t.Errorf("upstream saw %s, want the masqueraded %s", seen, hostUp)
		}
		blocked(tp.g2, upAddr+":80") // no NAT entry for g2
		if v := tp.host.sysctl(t, "net/ipv4/conf/"+bridge+"/forwarding"); v != "1" {
			t.Errorf("bridge forwarding = %s with NAT", v)
		}
	})
	t.Run("metadata", func(t *testing.T) {
		// Same route and server as the NAT egress that worked above.
		blocked(tp.g1, metadata+":80")
	})

	fw.VMToVM = false
	fw.NAT = nil
	for range 2 { // the second pass replaces an existing bridge table
		if err := tp.h.ApplyFirewall(ctx, fw); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("vm to vm denied", func(t *testing.T) {
		blocked(tp.g1, g2Addr+":7000")
		// Without br_netfilter handing bridged frames to the IP hooks
		// (the default where the module is not loaded), only the
		// bridge-family table stands between the guests.
		key := "net/bridge/bridge-nf-call-iptables"
		if _, err := os.Stat(filepath.Join("/proc/sys", key)); err != nil {
			t.Skip("no br_netfilter: the bridge table was the only layer above")
		}
		setSysctl(t, tp.host, key, "0")
		defer setSysctl(t, tp.host, key, "1")
		blocked(tp.g1, g2Addr+":7000")
		if err := pingUDP(tp.g1, "172.30.0.1:53"); err != nil {
			t.Errorf("udp dns after reapply: %v", err)
		}
	})
	t.Run("no nat", func(t *testing.T) {
		blocked(tp.g1, upAddr+":80")
		if v := tp.host.sysctl(t, "net/ipv4/conf/"+bridge+"/forwarding"); v != "0" {
			t.Errorf("bridge forwarding = %s without NAT", v)
		}
		chains := nftChains(t, tp.host)
		if strings.Contains(chains, "postrouting") {
			t.Errorf("nat chain without NAT entries: %s", chains)
		}
		if !strings.Contains(chains, "bridge/forward") {
			t.Errorf("no bridge-family forward chain with VMToVM off: %s", chains)
		}
	})

	for range 2 { // a missing table is not an error
		if err := tp.h.ClearFirewall(ctx); err != nil {
			t.Fatal(err)
		}
	}
	reach(tp.g1, "172.30.0.1:2222")
	reach(tp.g1, g2Addr+":7000")
	want := "link br-fc,link tap-fc-vm1,link tap-fc-vm2" // no tables
	if l, err := netdevtest.LeaksIn(tp.host.path()); err != nil || strings.Join(l, ",") != want {
		t.Errorf("after clear, leak check = %v, %v; want %s", l, err, want)
	}
}

func setSysctl(t *testing.T, ns *testNS, key, v string) {
	t.Helper()
	ns.in(t, func() error { return os.WriteFile(filepath.Join("/proc/sys", key), []byte(v), 0o644) })
}

// nftChains lists banger's chains in ns as "family/name" pairs.
func nftChains(t *testing.T, ns *testNS) string {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.h)))
	if err != nil {
		t.Fatal(err)
	}
	chains, err := c.ListChains()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ch := range chains {
		if ch.Table.Name != netdev.TableName {
			continue
		}
		fam := "inet"
		if ch.Table.Family == nftables.TableFamilyBridge {
			fam = "bridge"
		}
		out = append(out, fam+"/"+ch.Name)
	}
	return strings.Join(out, " ")
}
