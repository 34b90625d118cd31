package sys

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
)

// NetConfig is the guest's static addressing, from banger.net= on the
// kernel command line (distro kernels lack the kernel's own ip= support).
type NetConfig struct {
	Addr    netip.Prefix
	Gateway netip.Addr
	DNS     []netip.Addr
	MTU     int
	// DNSPort is the port of the DNS servers when it is not 53: banger's
	// resolver runs unprivileged on the host, so the agent relays
	// 127.0.0.1:53 in the guest to it.
	DNSPort uint16
}

// ParseNetConfig parses "ADDR/LEN,gw=GW,dns=DNS[,dns=DNS2],mtu=N".
func ParseNetConfig(s string) (NetConfig, error) {
	var c NetConfig
	parts := strings.Split(s, ",")
	p, err := netip.ParsePrefix(parts[0])
	if err != nil || !p.Addr().Is4() {
		return c, fmt.Errorf("banger.net %q: want ADDR/LEN first", s)
	}
	c.Addr = p
	for _, kv := range parts[1:] {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "gw":
			if c.Gateway, err = netip.ParseAddr(v); err != nil {
				return c, fmt.Errorf("banger.net gw %q: %w", v, err)
			}
		case "dns":
			a, err := netip.ParseAddr(v)
			if err != nil {
				return c, fmt.Errorf("banger.net dns %q: %w", v, err)
			}
			c.DNS = append(c.DNS, a)
		case "dnsport":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 65535 {
				return c, fmt.Errorf("banger.net dnsport %q: want 1-65535", v)
			}
			c.DNSPort = uint16(n)
		case "mtu":
			if c.MTU, err = strconv.Atoi(v); err != nil || c.MTU < 576 || c.MTU > 65535 {
				return c, fmt.Errorf("banger.net mtu %q: want 576-65535", v)
			}
		default:
			return c, fmt.Errorf("banger.net: unknown key %q", k)
		}
	}
	return c, nil
}

// ConfigureNet gives the first ethernet interface the static address,
// brings it up, adds the default route and writes /etc/resolv.conf.
func ConfigureNet(c NetConfig) error {
	link, err := firstEthernet(3 * time.Second)
	if err != nil {
		return err
	}
	name := link.Attrs().Name
	if c.MTU > 0 {
		if err := netlink.LinkSetMTU(link, c.MTU); err != nil {
			return fmt.Errorf("set mtu of %s: %w", name, err)
		}
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: c.Addr.Addr().AsSlice(), Mask: net.CIDRMask(c.Addr.Bits(), 32)}}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("address %s: %w", name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring up %s: %w", name, err)
	}
	if c.Gateway.IsValid() {
		route := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: c.Gateway.AsSlice()}
		if err := netlink.RouteReplace(route); err != nil {
			return fmt.Errorf("default route via %s: %w", c.Gateway, err)
		}
	}
	if len(c.DNS) > 0 {
		var b strings.Builder
		b.WriteString("# written by banger-agent at boot\n")
		if c.DNSPort != 0 && c.DNSPort != 53 {
			// The relay lives as long as the agent.
			if _, err := StartDNSRelay("127.0.0.1:53", netip.AddrPortFrom(c.DNS[0], c.DNSPort).String()); err != nil {
				return err
			}
			b.WriteString("nameserver 127.0.0.1\n")
		} else {
			for _, d := range c.DNS {
				fmt.Fprintf(&b, "nameserver %s\n", d)
			}
		}
		// A symlink (systemd-resolved's stub) is replaced: the VM's own copy of
		// the root disk is ours to change, and banger's DNS is the resolver.
		_ = os.Remove("/etc/resolv.conf")
		if err := os.WriteFile("/etc/resolv.conf", []byte(b.String()), 0o644); err != nil {
			return fmt.Errorf("write resolv.conf: %w", err)
		}
	}
	return nil
}

// firstEthernet waits (bounded) for a non-loopback ethernet link: the
// virtio-net driver may still be probing when the agent starts.
func firstEthernet(wait time.Duration) (netlink.Link, error) {
	deadline := time.Now().Add(wait)
	for {
		links, err := netlink.LinkList()
		if err != nil {
			return nil, fmt.Errorf("list links: %w", err)
		}
		for _, l := range links {
			if l.Type() == "device" && l.Attrs().Flags&net.FlagLoopback == 0 && len(l.Attrs().HardwareAddr) == 6 {
				return l, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, errors.New("no ethernet interface appeared")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
