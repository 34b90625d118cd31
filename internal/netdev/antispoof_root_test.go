package netdev_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"banger/internal/netdev"
	"banger/internal/testutil"
)

// Frames are built by hand and sent from a guest's eth0 through a packet
// socket, so a test controls every address a hostile guest could forge.

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

func ether(dst, src net.HardwareAddr, typ uint16, payload []byte) []byte {
	f := append(append(append([]byte{}, dst...), src...), byte(typ>>8), byte(typ))
	f = append(f, payload...)
	for len(f) < 60 {
		f = append(f, 0)
	}
	return f
}

// ipv4UDP is an IPv4 header (with its checksum) and a UDP datagram without
// a checksum, carrying data.
func ipv4UDP(src, dst string, dport uint16, data []byte) []byte {
	udp := make([]byte, 8, 8+len(data))
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], dport)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(data)))
	udp = append(udp, data...)
	h := make([]byte, 20)
	h[0], h[8], h[9] = 0x45, 64, unix.IPPROTO_UDP
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(udp)))
	copy(h[12:], netip.MustParseAddr(src).AsSlice())
	copy(h[16:], netip.MustParseAddr(dst).AsSlice())
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(h[10:], ^uint16(sum))
	return append(h, udp...)
}

// arp is an Ethernet/IPv4 ARP packet (op 1 request, 2 reply) with the
// marker after it, inside the frame's padding.
func arp(op uint16, sha net.HardwareAddr, spa string, tha net.HardwareAddr, tpa string, marker []byte) []byte {
	p := []byte{0, 1, 0x08, 0x00, 6, 4, byte(op >> 8), byte(op)}
	p = append(p, sha...)
	p = append(p, netip.MustParseAddr(spa).AsSlice()...)
	p = append(p, tha...)
	p = append(p, netip.MustParseAddr(tpa).AsSlice()...)
	return append(p, marker...)
}

// ipv6NoNext is an IPv6 packet from a link-local address to all nodes
// with no next header, carrying data.
func ipv6NoNext(data string) []byte {
	h := make([]byte, 40)
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(data)))
	h[6], h[7] = 59, 1
	copy(h[8:], netip.MustParseAddr("fe80::fc:1").AsSlice())
	copy(h[24:], netip.MustParseAddr("ff02::1").AsSlice())
	return append(h, data...)
}

// sendFrame writes one raw frame out of dev inside ns.
func sendFrame(t *testing.T, ns *testNS, dev string, frame []byte) {
	t.Helper()
	ns.in(t, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		l, err := netlink.LinkByName(dev)
		if err != nil {
			return err
		}
		return unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: l.Attrs().Index, Halen: 6})
	})
}

// sniffer captures every frame arriving on dev inside ns.
type sniffer struct{ fd int }

func sniff(t *testing.T, ns *testNS, dev string) *sniffer {
	t.Helper()
	s := &sniffer{}
	ns.in(t, func() error {
		l, err := netlink.LinkByName(dev)
		if err != nil {
			return err
		}
		proto := int(htons(unix.ETH_P_ALL))
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return err
		}
		s.fd = fd
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: l.Attrs().Index})
	})
	tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(s.fd) })
	return s
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// saw reports whether a frame containing marker arrives within a short
// while.
func (s *sniffer) saw(marker []byte) bool {
	buf := make([]byte, 2048)
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(s.fd, buf, 0)
		if err == nil && bytes.Contains(buf[:n], marker) {
			return true
		}
	}
	return false
}

// TestAntiSpoofRoot sends forged frames from guest 1's side of its port
// and watches guest 2's side (the bridge floods broadcasts to it): each is
// seen there without banger's firewall, and none once it is applied, while
// guest 1's honest frames still pass.
func TestAntiSpoofRoot(t *testing.T) {
	testutil.RequireRoot(t)
	ctx := context.Background()
	tp := newTopology(t)
	g1MAC, g2MAC := guestMAC(g1Addr), guestMAC(g2Addr)
	g2 := sniff(t, tp.g2, "eth0")
	honest, forged := guestFrames()
	// Control: without banger's rules every frame crosses the bridge.
	for _, c := range append(honest, forged...) {
		sendFrame(t, tp.g1, "eth0", c.frame)
		if !g2.saw(c.marker()) {
			t.Fatalf("control: %s did not cross the bridge without a firewall", c.name)
		}
	}

	fw := netdev.Firewall{
		Bridge: bridge, Subnet: mustPrefix("172.30.0.0/24"), Gateway: netip.MustParseAddr("172.30.0.1"),
		DNSPorts: []uint16{53}, VMToVM: true, Guests: tp.guests,
	}
	if err := tp.h.ApplyFirewall(ctx, fw); err != nil {
		t.Fatal(err)
	}
	checkFramesConfined(t, tp)

	t.Run("gratuitous arp keeps the host's neighbour", func(t *testing.T) {
		// The host learns guest 2's MAC, then guest 1 claims its address.
		// The kernel ignores ARP updates within locktime of the last one,
		// so the claim waits it out.
		_, _ = dialTCP(tp.host, g2Addr+":1") // refused; the ARP exchange is what counts
		if got := neighbour(t, tp.host, g2Addr); got != g2MAC.String() {
			t.Fatalf("control: host's neighbour for %s is %s before the claim", g2Addr, got)
		}
		time.Sleep(1100 * time.Millisecond)
		gw := tp.host.link(t, bridge).Attrs().HardwareAddr
		sendFrame(t, tp.g1, "eth0", ether(broadcastMAC, g1MAC, 0x0806, arp(2, g1MAC, g2Addr, gw, "172.30.0.1", nil)))
		time.Sleep(100 * time.Millisecond)
		if got := neighbour(t, tp.host, g2Addr); got != g2MAC.String() {
			t.Errorf("host's neighbour for %s is %s, want guest 2's %s", g2Addr, got, g2MAC)
		}
	})

	// A tap the firewall does not list (or lists without an address)
	// sends nothing at all.
	fw.Guests = []netdev.Guest{tp.guests[1], {Tap: tp.guests[0].Tap}}
	if err := tp.h.ApplyFirewall(ctx, fw); err != nil {
		t.Fatal(err)
	}
	fresh := sniff(t, tp.g2, "eth0") // g2's socket holds the frames sent above
	if c := honest[0]; func() bool { sendFrame(t, tp.g1, "eth0", c.frame); return fresh.saw(c.marker()) }() {
		t.Error("a tap without a recorded address still sends")
	}
}

// testFrame is a frame guest 1 sends, with a marker to find it by.
type testFrame struct {
	name  string
	frame []byte
}

func (f testFrame) marker() []byte {
	i := bytes.Index(f.frame, []byte("honest-"))
	if i < 0 {
		i = bytes.Index(f.frame, []byte("forged-"))
	}
	end := i
	for end < len(f.frame) && f.frame[end] != 0 {
		end++
	}
	return f.frame[i:end]
}

// guestFrames are frames from guest 1's port: honest ones, and forgeries
// of every kind the firewall must stop.
func guestFrames() (honest, forged []testFrame) {
	g1MAC, g2MAC := guestMAC(g1Addr), guestMAC(g2Addr)
	stranger := net.HardwareAddr{0x02, 0xfc, 0xac, 0x1e, 0x00, 0x63}
	udp := func(src net.HardwareAddr, srcIP, marker string) []byte {
		return ether(broadcastMAC, src, 0x0800, ipv4UDP(srcIP, "172.30.0.255", 9, []byte(marker)))
	}
	honest = []testFrame{
		{"own mac and address", udp(g1MAC, g1Addr, "honest-ip")},
		{"arp for its own address", ether(broadcastMAC, g1MAC, 0x0806, arp(1, g1MAC, g1Addr, make(net.HardwareAddr, 6), "172.30.0.1", []byte("honest-arp")))},
	}
	forged = []testFrame{
		{"another guest's address", udp(g1MAC, g2Addr, "forged-ip")},
		{"the gateway's address", udp(g1MAC, "172.30.0.1", "forged-gw")},
		{"a stranger's mac", udp(stranger, g1Addr, "forged-mac")},
		{"another guest's mac and address", udp(g2MAC, g2Addr, "forged-both")},
		{"arp claiming another guest's address", ether(broadcastMAC, g1MAC, 0x0806, arp(2, g1MAC, g2Addr, broadcastMAC, g2Addr, []byte("forged-garp")))},
		{"arp naming another guest's mac", ether(broadcastMAC, g1MAC, 0x0806, arp(2, g2MAC, g1Addr, broadcastMAC, g1Addr, []byte("forged-sha")))},
		{"ipv6", ether(broadcastMAC, g1MAC, 0x86dd, ipv6NoNext("forged-ip6"))},
		{"vlan tagged", ether(broadcastMAC, g1MAC, 0x8100, append([]byte{0, 5, 0x08, 0x00}, ipv4UDP(g1Addr, "172.30.0.255", 9, []byte("forged-vlan"))...))},
	}
	return honest, forged
}

// checkFramesConfined sends guestFrames from guest 1 with the firewall in
// place: guest 2 sees the honest ones and none of the forgeries.
func checkFramesConfined(t *testing.T, tp *topology) {
	t.Helper()
	g2 := sniff(t, tp.g2, "eth0")
	honest, forged := guestFrames()
	for _, c := range honest {
		sendFrame(t, tp.g1, "eth0", c.frame)
		if !g2.saw(c.marker()) {
			t.Errorf("%s was dropped", c.name)
		}
	}
	for _, c := range forged {
		sendFrame(t, tp.g1, "eth0", c.frame)
		if g2.saw(c.marker()) {
			t.Errorf("%s crossed the bridge", c.name)
		}
	}
}

// neighbour returns the MAC the namespace's neighbour table has for addr.
func neighbour(t *testing.T, ns *testNS, addr string) string {
	t.Helper()
	neighs, err := ns.nl.NeighList(0, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range neighs {
		if n.IP.Equal(net.ParseIP(addr)) {
			return n.HardwareAddr.String()
		}
	}
	return "none"
}

// TestEgressDenylistRoot: a NAT guest reaches a public upstream, but not a
// private, CGNAT or link-local address behind the host, unless
// Firewall.Allow names it; metadata addresses stay closed even then.
func TestEgressDenylistRoot(t *testing.T) {
	testutil.RequireRoot(t)
	ctx := context.Background()
	tp := newTopology(t)
	dests := []string{"10.99.0.2", "192.168.77.2", "100.64.5.5", "169.254.10.1", "168.63.129.16"}
	for _, a := range dests {
		tp.up.addAddr(t, "lo", a+"/32")
		tp.host.addRoute(t, a+"/32", upAddr)
	}
	serveTCP(t, tp.up, ":80")
	fw := netdev.Firewall{
		Bridge: bridge, Subnet: mustPrefix("172.30.0.0/24"), Gateway: netip.MustParseAddr("172.30.0.1"),
		VMToVM: true, Guests: tp.guests, NAT: []netip.Addr{netip.MustParseAddr(g1Addr)},
	}
	if err := tp.h.ApplyFirewall(ctx, fw); err != nil {
		t.Fatal(err)
	}
	if _, err := dialTCP(tp.g1, upAddr+":80"); err != nil {
		t.Fatalf("public upstream: %v", err)
	}
	for _, a := range dests {
		if _, err := dialTCP(tp.g1, a+":80"); err == nil {
			t.Errorf("%s reachable by default", a)
		}
	}
	fw.Allow = []netip.Prefix{mustPrefix("192.168.77.0/24"), mustPrefix("10.99.0.2/32"), mustPrefix("168.63.0.0/16"), mustPrefix("169.254.0.0/16")}
	if err := tp.h.ApplyFirewall(ctx, fw); err != nil {
		t.Fatal(err)
	}
	for a, want := range map[string]bool{"10.99.0.2": true, "192.168.77.2": true, "169.254.10.1": true, "100.64.5.5": false, "168.63.129.16": false} {
		_, err := dialTCP(tp.g1, a+":80")
		if (err == nil) != want {
			t.Errorf("with allow, %s reachable = %v, want %v", a, err == nil, want)
		}
	}
}

// TestGatewayDNSBridgeOnlyRoot: the gateway's DNS port answers the subnet
// on the bridge, and nothing that arrives on another interface.
func TestGatewayDNSBridgeOnlyRoot(t *testing.T) {
	testutil.RequireRoot(t)
	ctx := context.Background()
	tp := newTopology(t)
	serveTCP(t, tp.host, "172.30.0.1:53")
	if _, err := dialTCP(tp.up, "172.30.0.1:53"); err != nil {
		t.Fatalf("control: upstream cannot reach the gateway at all: %v", err)
	}
	fw := netdev.Firewall{
		Bridge: bridge, Subnet: mustPrefix("172.30.0.0/24"), Gateway: netip.MustParseAddr("172.30.0.1"),
		DNSPorts: []uint16{53}, VMToVM: true, Guests: tp.guests,
	}
	if err := tp.h.ApplyFirewall(ctx, fw); err != nil {
		t.Fatal(err)
	}
	if _, err := dialTCP(tp.g1, "172.30.0.1:53"); err != nil {
		t.Errorf("guest dns: %v", err)
	}
	if _, err := dialTCP(tp.host, "172.30.0.1:53"); err != nil {
		t.Errorf("host's own lookups over loopback: %v", err)
	}
	if _, err := dialTCP(tp.up, "172.30.0.1:53"); err == nil {
		t.Error("dns on the gateway answered another interface")
	}
}

// TestBridgeAndTapSysctlsRoot: strict rp_filter on the bridge, IPv6 off on
// the bridge and on every tap, read back in the namespace.
func TestBridgeAndTapSysctlsRoot(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
		t.Skip("no IPv6 in this kernel")
	}
	ctx := context.Background()
	ns := newNS(t)
	h := hostIn(t, ns)
	if err := h.EnsureBridge(ctx, bridge, mustPrefix(gateway), 1500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.DeleteBridge(context.Background(), bridge) })
	const tap = "tap-fc-sys"
	if err := h.CreateTap(ctx, tap, bridge, 65534, 65534, 1500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.DeleteTap(context.Background(), tap) })
	for _, dev := range []string{tap, bridge} {
		if v := ns.sysctl(t, filepath.Join("net/ipv6/conf", dev, "disable_ipv6")); v != "1" {
			t.Errorf("%s disable_ipv6 = %s after create_tap", dev, v)
		}
	}
	// A bridge whose flags were reset (recreated, or changed by hand) gets
	// them back with the next firewall.
	setSysctl(t, ns, "net/ipv6/conf/"+bridge+"/disable_ipv6", "0")
	setSysctl(t, ns, "net/ipv4/conf/"+bridge+"/rp_filter", "0")
	fw := netdev.Firewall{Bridge: bridge, Subnet: mustPrefix("172.30.0.0/24"), Gateway: netip.MustParseAddr("172.30.0.1"), VMToVM: true}
	if err := h.ApplyFirewall(ctx, fw); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.ClearFirewall(context.Background()) })
	if v := ns.sysctl(t, "net/ipv4/conf/"+bridge+"/rp_filter"); v != "1" {
		t.Errorf("bridge rp_filter = %s", v)
	}
	if v := ns.sysctl(t, "net/ipv6/conf/"+bridge+"/disable_ipv6"); v != "1" {
		t.Errorf("bridge disable_ipv6 = %s", v)
	}
	addrs, err := ns.nl.AddrList(ns.link(t, bridge), netlink.FAMILY_V6)
	if err != nil || len(addrs) != 0 {
		t.Errorf("bridge IPv6 addresses %v, %v", addrs, err)
	}
}
