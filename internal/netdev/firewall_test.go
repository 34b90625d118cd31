package netdev

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
)

func baseFirewall() Firewall {
	return Firewall{
		Bridge:   "br-fc",
		Subnet:   netip.MustParsePrefix("172.30.0.0/24"),
		Gateway:  netip.MustParseAddr("172.30.0.1"),
		DNSPorts: []uint16{53},
		VMToVM:   true,
	}
}

func TestRules(t *testing.T) {
	pre := []string{
		`inet banger prerouting: iifname "br-fc" ip daddr 169.254.169.254 counter drop comment "banger: guests never reach metadata address 169.254.169.254"`,
		`inet banger prerouting: iifname "br-fc" ip daddr 169.254.170.2 counter drop comment "banger: guests never reach metadata address 169.254.170.2"`,
		`inet banger prerouting: iifname "br-fc" ip daddr 168.63.129.16 counter drop comment "banger: guests never reach metadata address 168.63.129.16"`,
		`inet banger prerouting: iifname "br-fc" ip daddr 100.100.100.200 counter drop comment "banger: guests never reach metadata address 100.100.100.200"`,
		`inet banger input: iifname "br-fc" ct state established,related counter accept comment "banger: replies to host connections into guests"`,
	}
	dns := func(port string) []string {
		var out []string
		for _, proto := range []string{"udp", "tcp"} {
			out = append(out,
				`inet banger input: iifname "br-fc" ip saddr 172.30.0.0/24 ip daddr 172.30.0.1 `+proto+` dport `+port+` counter accept comment "banger: guest dns"`,
				`inet banger input: iifname != "br-fc" iifname != "lo" ip daddr 172.30.0.1 `+proto+` dport `+port+` counter drop comment "banger: gateway dns answers the bridge only"`)
		}
		return out
	}
	common := slices.Concat(pre, dns("53"))
	inputDrop := `inet banger input: iifname "br-fc" counter drop comment "banger: guests reach nothing else on the host"`
	fwdTail := []string{
		`inet banger forward: iifname "br-fc" counter drop comment "banger: no other guest egress"`,
		`inet banger forward: oifname "br-fc" counter drop comment "banger: no new connections into guests from elsewhere"`,
	}
	fwdReplies := []string{
		`inet banger forward: oifname "br-fc" ct state established,related counter accept comment "banger: replies to guest egress"`,
		`inet banger forward: iifname "br-fc" oifname != "br-fc" counter jump egress comment "banger: guest egress passes the denylist"`,
	}
	egress := func(allow ...string) []string {
		out := []string{
			`inet banger egress: ip daddr 169.254.169.254 counter drop comment "banger: guests never reach metadata address 169.254.169.254"`,
			`inet banger egress: ip daddr 169.254.170.2 counter drop comment "banger: guests never reach metadata address 169.254.170.2"`,
			`inet banger egress: ip daddr 168.63.129.16 counter drop comment "banger: guests never reach metadata address 168.63.129.16"`,
			`inet banger egress: ip daddr 100.100.100.200 counter drop comment "banger: guests never reach metadata address 100.100.100.200"`,
		}
		for _, a := range allow {
			out = append(out, `inet banger egress: ip daddr `+a+` counter return comment "banger: egress allowed to `+a+`"`)
		}
		for _, d := range []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16"} {
			out = append(out, `inet banger egress: ip daddr `+d+` counter drop comment "banger: no egress to `+d+`"`)
		}
		return out
	}
	tapDrop := `bridge banger prerouting: iifname "tap-fc*" counter drop comment "banger: guests send only their own mac, ipv4 source and arp"`
	vmToVMAllowed := `inet banger forward: iifname "br-fc" oifname "br-fc" counter accept comment "banger: vm-to-vm allowed"`
	join := func(parts ...[]string) []string { return slices.Concat(parts...) }

	tests := []struct {
		name string
		mod  func(*Firewall)
		want []string
	}{
		{
			name: "minimal, vm-to-vm allowed, no nat",
			mod:  func(*Firewall) {},
			want: join(common, []string{inputDrop, vmToVMAllowed}, fwdReplies, fwdTail, egress(), []string{tapDrop}),
		},
		{
			name: "vm-to-vm denied adds the bridge forward chain",
			mod:  func(fw *Firewall) { fw.VMToVM = false },
			want: join(common, []string{inputDrop,
				`inet banger forward: iifname "br-fc" oifname "br-fc" counter drop comment "banger: vm-to-vm denied"`},
				fwdReplies, fwdTail, egress(), []string{
					tapDrop,
					`bridge banger forward: iifname "tap-fc*" oifname "tap-fc*" counter drop comment "banger: vm-to-vm denied"`,
				}),
		},
		{
			name: "nat entries, deduplicated and sorted",
			mod: func(fw *Firewall) {
				fw.NAT = []netip.Addr{netip.MustParseAddr("172.30.0.9"), netip.MustParseAddr("172.30.0.2"), netip.MustParseAddr("172.30.0.9")}
			},
			want: join(common, []string{inputDrop, vmToVMAllowed}, fwdReplies, []string{
				`inet banger forward: iifname "br-fc" ip saddr 172.30.0.2 oifname != "br-fc" counter accept comment "banger: nat egress 172.30.0.2"`,
				`inet banger forward: iifname "br-fc" ip saddr 172.30.0.9 oifname != "br-fc" counter accept comment "banger: nat egress 172.30.0.9"`,
			}, fwdTail, egress(), []string{
				`inet banger postrouting: ip saddr 172.30.0.2 oifname != "br-fc" counter masquerade comment "banger: nat 172.30.0.2"`,
				`inet banger postrouting: ip saddr 172.30.0.9 oifname != "br-fc" counter masquerade comment "banger: nat 172.30.0.9"`,
				tapDrop,
			}),
		},
		{
			name: "allow-host entries, v4 and v6, and extra dns port",
			mod: func(fw *Firewall) {
				fw.DNSPorts = []uint16{5353, 53, 53}
				fw.AllowHost = []netip.AddrPort{netip.MustParseAddrPort("172.30.0.1:8080"), netip.MustParseAddrPort("[fd00::1]:22")}
			},
			want: join(common, dns("5353"), []string{
				`inet banger input: iifname "br-fc" ip daddr 172.30.0.1 udp dport 8080 counter accept comment "banger: allow-host 172.30.0.1:8080"`,
				`inet banger input: iifname "br-fc" ip daddr 172.30.0.1 tcp dport 8080 counter accept comment "banger: allow-host 172.30.0.1:8080"`,
				`inet banger input: iifname "br-fc" ip6 daddr fd00::1 udp dport 22 counter accept comment "banger: allow-host [fd00::1]:22"`,
				`inet banger input: iifname "br-fc" ip6 daddr fd00::1 tcp dport 22 counter accept comment "banger: allow-host [fd00::1]:22"`,
				inputDrop, vmToVMAllowed}, fwdReplies, fwdTail, egress(), []string{tapDrop}),
		},
		{
			name: "allowing the metadata address does not unblock it",
			mod: func(fw *Firewall) {
				fw.DNSPorts = nil
				fw.AllowHost = []netip.AddrPort{netip.MustParseAddrPort("169.254.169.254:80")}
				fw.Allow = []netip.Prefix{netip.MustParsePrefix("169.254.0.0/16")}
			},
			// The prerouting drops come first, and the egress chain drops
			// metadata addresses before the allow list returns.
			want: join(pre, []string{
				`inet banger input: iifname "br-fc" ip daddr 169.254.169.254 udp dport 80 counter accept comment "banger: allow-host 169.254.169.254:80"`,
				`inet banger input: iifname "br-fc" ip daddr 169.254.169.254 tcp dport 80 counter accept comment "banger: allow-host 169.254.169.254:80"`,
				inputDrop, vmToVMAllowed}, fwdReplies, fwdTail, egress("169.254.0.0/16"), []string{tapDrop}),
		},
		{
			name: "allow list opens denied ranges, in order, once each",
			mod: func(fw *Firewall) {
				fw.Allow = []netip.Prefix{netip.MustParsePrefix("192.168.1.10/32"), netip.MustParsePrefix("10.1.2.0/24"), netip.MustParsePrefix("192.168.1.10/32")}
			},
			want: join(common, []string{inputDrop, vmToVMAllowed}, fwdReplies, fwdTail, egress("192.168.1.10/32", "10.1.2.0/24"), []string{tapDrop}),
		},
		{
			name: "guests: own mac and address only; one without an address sends nothing",
			mod: func(fw *Firewall) {
				fw.Guests = []Guest{
					{Tap: "tap-fc-a1", MAC: mustMAC("02:fc:ac:1e:00:02"), IP: netip.MustParseAddr("172.30.0.2")},
					{Tap: "tap-fc-old"},
					{Tap: "tap-fc-b2", MAC: mustMAC("02:fc:ac:1e:00:03"), IP: netip.MustParseAddr("172.30.0.3")},
				}
			},
			want: join(common, []string{inputDrop, vmToVMAllowed}, fwdReplies, fwdTail, egress(), []string{
				`bridge banger prerouting: iifname "tap-fc-a1" ether saddr 02:fc:ac:1e:00:02 ether type ip ip saddr 172.30.0.2 counter accept comment "banger: tap-fc-a1 sends ipv4 as 172.30.0.2"`,
				`bridge banger prerouting: iifname "tap-fc-a1" ether saddr 02:fc:ac:1e:00:02 ether type arp arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp saddr ether 02:fc:ac:1e:00:02 arp saddr ip 172.30.0.2 counter accept comment "banger: tap-fc-a1 claims only 172.30.0.2 in arp"`,
				`bridge banger prerouting: iifname "tap-fc-b2" ether saddr 02:fc:ac:1e:00:03 ether type ip ip saddr 172.30.0.3 counter accept comment "banger: tap-fc-b2 sends ipv4 as 172.30.0.3"`,
				`bridge banger prerouting: iifname "tap-fc-b2" ether saddr 02:fc:ac:1e:00:03 ether type arp arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp saddr ether 02:fc:ac:1e:00:03 arp saddr ip 172.30.0.3 counter accept comment "banger: tap-fc-b2 claims only 172.30.0.3 in arp"`,
				tapDrop,
			}),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fw := baseFirewall()
			tc.mod(&fw)
			got, err := Rules(fw)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("rules differ\ngot:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func TestRulesNoNATMeansNoMasquerade(t *testing.T) {
	got, err := Rules(baseFirewall())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range got {
		if strings.Contains(r, "masquerade") || strings.Contains(r, "postrouting") {
			t.Errorf("rule without NAT entries: %s", r)
		}
	}
}

func TestRulesRefusesBadFirewall(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Firewall)
	}{
		{"empty bridge", func(fw *Firewall) { fw.Bridge = "" }},
		{"long bridge", func(fw *Firewall) { fw.Bridge = "br-fc-0123456789" }},
		{"slash in bridge", func(fw *Firewall) { fw.Bridge = "br/fc" }},
		{"no subnet", func(fw *Firewall) { fw.Subnet = netip.Prefix{} }},
		{"v6 subnet", func(fw *Firewall) { fw.Subnet = netip.MustParsePrefix("fd00::/64") }},
		{"gateway outside subnet", func(fw *Firewall) { fw.Gateway = netip.MustParseAddr("10.0.0.1") }},
		{"dns port zero", func(fw *Firewall) { fw.DNSPorts = []uint16{0} }},
		{"allow-host port zero", func(fw *Firewall) { fw.AllowHost = []netip.AddrPort{netip.MustParseAddrPort("172.30.0.1:0")} }},
		{"allow-host invalid", func(fw *Firewall) { fw.AllowHost = []netip.AddrPort{{}} }},
		{"nat outside subnet", func(fw *Firewall) { fw.NAT = []netip.Addr{netip.MustParseAddr("10.0.0.2")} }},
		{"nat is the gateway", func(fw *Firewall) { fw.NAT = []netip.Addr{netip.MustParseAddr("172.30.0.1")} }},
		{"nat v6", func(fw *Firewall) { fw.NAT = []netip.Addr{netip.MustParseAddr("fd00::2")} }},
		{"guest tap not banger's", func(fw *Firewall) { fw.Guests = []Guest{guest("eth0", "172.30.0.2")} }},
		{"guest tap twice", func(fw *Firewall) {
			fw.Guests = []Guest{guest("tap-fc-a", "172.30.0.2"), guest("tap-fc-a", "172.30.0.3")}
		}},
		{"guest address outside subnet", func(fw *Firewall) { fw.Guests = []Guest{guest("tap-fc-a", "10.0.0.2")} }},
		{"guest address is the gateway", func(fw *Firewall) { fw.Guests = []Guest{guest("tap-fc-a", "172.30.0.1")} }},
		{"two guests, one address", func(fw *Firewall) {
			fw.Guests = []Guest{guest("tap-fc-a", "172.30.0.2"), guest("tap-fc-b", "172.30.0.2")}
			fw.Guests[1].MAC = mustMAC("02:fc:00:00:00:09")
		}},
		{"two guests, one mac", func(fw *Firewall) {
			fw.Guests = []Guest{guest("tap-fc-a", "172.30.0.2"), guest("tap-fc-b", "172.30.0.3")}
			fw.Guests[1].MAC = fw.Guests[0].MAC
		}},
		{"guest multicast mac", func(fw *Firewall) {
			fw.Guests = []Guest{guest("tap-fc-a", "172.30.0.2")}
			fw.Guests[0].MAC = mustMAC("03:00:00:00:00:01")
		}},
		{"guest without mac", func(fw *Firewall) { fw.Guests = []Guest{{Tap: "tap-fc-a", IP: netip.MustParseAddr("172.30.0.2")}} }},
		{"allow /0", func(fw *Firewall) { fw.Allow = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")} }},
		{"allow with host bits", func(fw *Firewall) { fw.Allow = []netip.Prefix{netip.MustParsePrefix("10.1.2.3/24")} }},
		{"allow v6", func(fw *Firewall) { fw.Allow = []netip.Prefix{netip.MustParsePrefix("fd00::/8")} }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fw := baseFirewall()
			tc.mod(&fw)
			if _, err := Rules(fw); err == nil {
				t.Error("accepted")
			}
		})
	}
}

// TestRulesetMarshals runs the whole batch ApplyFirewall sends through the
// nftables library's encoder against a fake netlink socket, so an expression
// the library cannot encode fails here rather than only under root.
func TestRulesetMarshals(t *testing.T) {
	fw := baseFirewall()
	fw.VMToVM = false
	fw.NAT = []netip.Addr{netip.MustParseAddr("172.30.0.2")}
	fw.AllowHost = []netip.AddrPort{netip.MustParseAddrPort("[fd00::1]:22")}
	fw.Guests = []Guest{guest("tap-fc-a", "172.30.0.2"), {Tap: "tap-fc-b"}}
	fw.Allow = []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}
	rs, err := buildRuleset(fw)
	if err != nil {
		t.Fatal(err)
	}
	var sent int
	c, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		sent += len(req)
		// Acknowledge every message the way the kernel does.
		reply := make([]netlink.Message, 0, len(req))
		for _, m := range req {
			reply = append(reply, netlink.Message{Header: netlink.Header{Type: netlink.Error, Sequence: m.Header.Sequence, PID: m.Header.PID}, Data: make([]byte, 4)})
		}
		return reply, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range rs.tables {
		rs.queue(c, tb)
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	rules := 0
	for _, tb := range rs.tables {
		for _, ch := range tb.chains {
			rules += len(ch.rules)
		}
	}
	// Batch begin/end, two tables, seven chains, every rule.
	if want := 2 + 2 + 7 + rules; sent < want {
		t.Errorf("sent %d messages, want at least %d", sent, want)
	}
}

// guest is a Guest on tap at ip with the MAC banger derives from it.
func guest(tap, ip string) Guest {
	a := netip.MustParseAddr(ip).As4()
	return Guest{Tap: tap, MAC: net.HardwareAddr{0x02, 0xfc, a[0], a[1], a[2], a[3]}, IP: netip.MustParseAddr(ip)}
}
