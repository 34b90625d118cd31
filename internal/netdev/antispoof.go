package netdev

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Guest is one tap on banger's bridge and what the guest behind it may send:
// Ethernet frames from MAC only, IPv4 from IP only, and ARP that claims IP at
// MAC only. The helper fills these in from its ledger (it derives MAC from IP
// itself); a Guest without a valid IP may send nothing at all.
type Guest struct {
	Tap string
	MAC net.HardwareAddr
	IP  netip.Addr
}

// MetadataAddrs are cloud metadata and host-agent addresses guests never
// reach, whatever AllowHost or Allow say: on a cloud host they hand out the
// host's credentials or configure it. (IPv6 ones such as fd00:ec2::254
// need no entry: guests send no IPv6 at all.)
var MetadataAddrs = []netip.Addr{
	MetadataAddr,                           // AWS, GCP, Azure IMDS, OpenStack
	netip.MustParseAddr("169.254.170.2"),   // AWS ECS task credentials
	netip.MustParseAddr("168.63.129.16"),   // Azure wireserver
	netip.MustParseAddr("100.100.100.200"), // Alibaba Cloud
}

// EgressDenied are the destinations NATed guests do not reach unless
// Firewall.Allow opens them: the networks a host typically has behind it and
// trusts (RFC 1918 LANs, VPNs, Docker and libvirt bridges), carrier-grade
// NAT space (RFC 6598, also used by Tailscale and cloud metadata), and
// link-local.
var EgressDenied = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("169.254.0.0/16"),
}

// egressChain names the inet table's regular chain every routed guest
// packet passes before the NAT rules.
const egressChain = "egress"

// Ethernet types the bridge rules know.
const (
	etherTypeIPv4 = 0x0800
	etherTypeARP  = 0x0806
)

// guestPrerouting is the bridge family's prerouting chain: it sees every
// frame a port sends into the bridge, whether it is bridged to another
// port or delivered to the host, before either. Each guest's frames pass
// when they carry its MAC and either its IPv4 source or an ARP header for
// Ethernet/IPv4 with its MAC and IP as sender; every other frame from a
// banger tap is dropped: spoofed sources, other guests' ARP claims, IPv6
// and every other ethertype. Taps are matched by name and the final drop by
// prefix, so a tap the Firewall does not list sends nothing.
func guestPrerouting(fw Firewall) chain {
	c := chain{name: "prerouting", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookPrerouting, prio: *nftables.ChainPriorityFilter}
	for _, g := range fw.Guests {
		if !g.IP.IsValid() {
			continue
		}
		in, src := iifname(g.Tap), etherSaddr(g.MAC)
		c.rules = append(c.rules,
			rule{
				matches: []match{in, src, etherType(etherTypeIPv4, "ip"), bridgeIPSaddr(g.IP)},
				action:  accept(), comment: "banger: " + g.Tap + " sends ipv4 as " + g.IP.String(),
			},
			rule{
				matches: []match{in, src, etherType(etherTypeARP, "arp"), arpEthIPv4(), arpSender(g.MAC, g.IP)},
				action:  accept(), comment: "banger: " + g.Tap + " claims only " + g.IP.String() + " in arp",
			},
		)
	}
	c.rules = append(c.rules, rule{
		matches: []match{ifnamePrefix(expr.MetaKeyIIFNAME, "iifname", TapPrefix)},
		action:  drop(), comment: "banger: guests send only their own mac, ipv4 source and arp",
	})
	return c
}

// guestEgress is the inet table's egress chain, entered (jump) for every
// packet a guest sends to be routed off the bridge: metadata addresses are
// dropped, Allow's prefixes return to the forward chain (where NAT decides),
// then EgressDenied is dropped. What returns from it still needs a NAT rule.
func guestEgress(fw Firewall) chain {
	c := chain{name: egressChain}
	for _, a := range MetadataAddrs {
		c.rules = append(c.rules, rule{
			matches: []match{ipDaddr(a)},
			action:  drop(), comment: "banger: guests never reach metadata address " + a.String(),
		})
	}
	for _, p := range dedupPrefixes(fw.Allow) {
		c.rules = append(c.rules, rule{
			matches: []match{ipDaddrPrefix(p)},
			action:  ret(), comment: "banger: egress allowed to " + p.String(),
		})
	}
	for _, p := range EgressDenied {
		c.rules = append(c.rules, rule{
			matches: []match{ipDaddrPrefix(p)},
			action:  drop(), comment: "banger: no egress to " + p.String(),
		})
	}
	return c
}

// checkGuests refuses Guests whose rules would not confine each tap to its
// own addresses: a bad or duplicate tap name, MAC or IP, or an IP outside
// the guest subnet or on the gateway.
func checkGuests(fw Firewall) error {
	taps, macs, ips := map[string]bool{}, map[string]bool{}, map[netip.Addr]bool{}
	for _, g := range fw.Guests {
		if !strings.HasPrefix(g.Tap, TapPrefix) || len(g.Tap) >= unix.IFNAMSIZ || strings.ContainsAny(g.Tap, "/ \x00") {
			return fmt.Errorf("guest tap %q: not a banger tap", g.Tap)
		}
		if taps[g.Tap] {
			return fmt.Errorf("guest tap %s listed twice", g.Tap)
		}
		taps[g.Tap] = true
		if !g.IP.IsValid() {
			continue // it may send nothing
		}
		if len(g.MAC) != 6 || g.MAC[0]&1 != 0 || bytes.Equal(g.MAC, make([]byte, 6)) {
			return fmt.Errorf("guest tap %s: mac %s is not a unicast Ethernet address", g.Tap, g.MAC)
		}
		if !g.IP.Is4() || !fw.Subnet.Contains(g.IP) || g.IP == fw.Gateway {
			return fmt.Errorf("guest tap %s: address %s is not a guest address in %s", g.Tap, g.IP, fw.Subnet)
		}
		if macs[g.MAC.String()] || ips[g.IP] {
			return fmt.Errorf("guest tap %s: mac %s or address %s belongs to another tap", g.Tap, g.MAC, g.IP)
		}
		macs[g.MAC.String()], ips[g.IP] = true, true
	}
	for _, p := range fw.Allow {
		if !p.IsValid() || !p.Addr().Is4() || p.Masked() != p || p.Bits() == 0 {
			return fmt.Errorf("bad allow entry %s", p)
		}
	}
	return nil
}

// dnsFromBridgeOnly are the input rules that keep the gateway's DNS ports to
// the bridge: a packet for them that arrives on any other interface
// (spoofed, or routed in from the LAN) is dropped. Loopback is exempt: the
// host's own resolver reaches banger's DNS on the gateway address through it.
func dnsFromBridgeOnly(fw Firewall, port uint16, proto uint8) rule {
	return rule{
		matches: []match{iifnameNot(fw.Bridge), iifnameNot("lo"), ipDaddr(fw.Gateway), dport(proto, port)},
		action:  drop(), comment: "banger: gateway dns answers the bridge only",
	}
}

// Sysctls the helper sets on banger's own bridge and taps, and only on them.
func rpFilterKey(dev string) string    { return "net/ipv4/conf/" + dev + "/rp_filter" }
func disableIPv6Key(dev string) string { return "net/ipv6/conf/" + dev + "/disable_ipv6" }

// guardBridge sets strict reverse-path filtering on the bridge (a source
// the bridge's routes would not answer through it is dropped; the kernel
// uses the larger of this and conf/all, which banger leaves to the host)
// and turns IPv6 off on it, so the host has no IPv6 address guests could
// reach its [::] services through. A missing bridge is left for the next
// call, and a kernel without IPv6 has nothing to turn off.
func (h *Host) guardBridge(bridge string) error {
	return h.inNetns(func() error {
		if err := writeSysctlHere(rpFilterKey(bridge), "1"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("set strict rp_filter on bridge %s: %w", bridge, err)
		}
		return disableIPv6Here(bridge)
	})
}

// disableIPv6Here turns IPv6 off on dev in the current thread's namespace.
func disableIPv6Here(dev string) error {
	if err := writeSysctlHere(disableIPv6Key(dev), "1"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("disable ipv6 on %s: %w", dev, err)
	}
	return nil
}
