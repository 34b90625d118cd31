package netdev

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// HostPrefix is one IPv4 address or route of the host (or of the Host's
// namespace), as the subnet check sees it.
type HostPrefix struct {
	// Prefix is an address with its prefix length ("192.168.1.5/24"), or a
	// route's destination.
	Prefix netip.Prefix
	Route  bool
	// Dev names the device; empty for routes without one (blackhole,
	// multipath).
	Dev string
	// Table and Type describe a route: its table (254 is main) and its
	// kind when not plain unicast ("local", "blackhole", ...).
	Table int
	Type  string
}

func (p HostPrefix) String() string {
	if !p.Route {
		return fmt.Sprintf("address %s on %s", p.Prefix, p.Dev)
	}
	var b strings.Builder
	b.WriteString("route ")
	if p.Type != "" {
		b.WriteString(p.Type + " ")
	}
	b.WriteString(p.Prefix.String())
	if p.Dev != "" {
		b.WriteString(" dev " + p.Dev)
	}
	if p.Table != 0 && p.Table != unix.RT_TABLE_MAIN {
		fmt.Fprintf(&b, " table %d", p.Table)
	}
	return b.String()
}

// MinRouteBits is the shortest route SubnetConflict counts. Shorter ones
// are catch-alls (the default route, a VPN's 0.0.0.0/1 and 128.0.0.0/1)
// that any subnet lies inside; a bridge subnet beside them takes nothing
// that was addressed to a network of its own.
const MinRouteBits = 8

// SubnetConflict reports, as one error naming each of them, the host
// addresses and routes that overlap subnet. Those on device own (banger's
// bridge, whose address the subnet is meant to move) and catch-all routes
// do not count. nil means the subnet takes no address or network the host
// already uses.
func SubnetConflict(subnet netip.Prefix, own string, host []HostPrefix) error {
	var hits []string
	for _, h := range host {
		if own != "" && h.Dev == own {
			continue
		}
		if !h.Prefix.Addr().Is4() || (h.Route && h.Prefix.Bits() < MinRouteBits) {
			continue
		}
		if h.Prefix.Masked().Overlaps(subnet) {
			hits = append(hits, h.String())
		}
	}
	if len(hits) == 0 {
		return nil
	}
	return fmt.Errorf("subnet %s overlaps the host's %s", subnet, strings.Join(hits, "; "))
}

// HostPrefixes lists every IPv4 address on every link and every IPv4 route
// of every table.
func (h *Host) HostPrefixes(ctx context.Context) ([]HostPrefix, error) {
	unlock, err := h.lock(ctx)
	if err != nil {
		return nil, fmt.Errorf("list host addresses: %w", err)
	}
	defer unlock()
	links, err := dump(h.nl.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	names := make(map[int]string, len(links))
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	addrs, err := dump(func() ([]netlink.Addr, error) { return h.nl.AddrList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return nil, fmt.Errorf("list host addresses: %w", err)
	}
	var out []HostPrefix
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok {
			out = append(out, HostPrefix{Prefix: p, Dev: names[a.LinkIndex]})
		}
	}
	routes, err := dump(func() ([]netlink.Route, error) {
		return h.nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, fmt.Errorf("list host routes: %w", err)
	}
	for _, r := range routes {
		p := netip.PrefixFrom(netip.IPv4Unspecified(), 0) // a nil Dst is the default route
		if r.Dst != nil {
			var ok bool
			if p, ok = prefixOf(r.Dst); !ok {
				continue
			}
		}
		out = append(out, HostPrefix{Prefix: p, Route: true, Dev: names[r.LinkIndex], Table: r.Table, Type: routeType(r.Type)})
	}
	return out, nil
}

// routeType names a route type other than unicast.
func routeType(t int) string {
	switch t {
	case unix.RTN_UNICAST, unix.RTN_UNSPEC:
		return ""
	case unix.RTN_LOCAL:
		return "local"
	case unix.RTN_BROADCAST:
		return "broadcast"
	case unix.RTN_BLACKHOLE:
		return "blackhole"
	case unix.RTN_UNREACHABLE:
		return "unreachable"
	case unix.RTN_PROHIBIT:
		return "prohibit"
	case unix.RTN_MULTICAST:
		return "multicast"
	}
	return fmt.Sprintf("type-%d", t)
}
