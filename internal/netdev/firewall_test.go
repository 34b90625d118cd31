package netdev

import (
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
	common := []string{
		`inet banger prerouting: iifname "br-fc" ip daddr 169.254.169.254 counter drop comment "banger: guests never reach the metadata address"`,
		`inet banger input: iifname "br-fc" ct state established,related counter accept comment "banger: replies to host connections into guests"`,
		`inet banger input: iifname "br-fc" ip daddr 172.30.0.1 udp dport 53 counter accept comment "banger: guest dns"`,
		`inet banger input: iifname "br-fc" ip daddr 172.30.0.1 tcp dport 53 counter accept comment "banger: guest dns"`,
	}
	inputDrop := `inet banger input: iifname "br-fc" counter drop comment "banger: guests reach nothing else on the host"`
	fwdTail := []string{
		`inet banger forward: iifname "br-fc" counter drop comment "banger: no other guest egress"`,
		`inet banger forward: oifname "br-fc" counter drop comment "banger: no new connections into guests from elsewhere"`,
	}
	fwdReplies := `inet banger forward: oifname "br-fc" ct state established,related counter accept comment "banger: replies to guest egress"`
	join := func(parts ...[]string) []string { return slices.Concat(parts...) }

	tests := []struct {
		name string
		mod  func(*Firewall)
		want []string
	}{
		{
			name: "minimal, vm-to-vm allowed, no nat",
			mod:  func(*Firewall) {},
			want: join(common, []string{inputDrop,
				`inet banger forward: iifname "br-fc" oifname "br-fc" counter accept comment "banger: vm-to-vm allowed"`,
				fwdReplies}, fwdTail),
		},
		{
			name: "vm-to-vm denied adds the bridge table",
			mod:  func(fw *Firewall) { fw.VMToVM = false },
			want: join(common, []string{inputDrop,
				`inet banger forward: iifname "br-fc" oifname "br-fc" counter drop comment "banger: vm-to-vm denied"`,
				fwdReplies}, fwdTail, []string{
				`bridge banger forward: iifname "tap-fc*" oifname "tap-fc*" counter drop comment "banger: vm-to-vm denied"`,
			}),
		},
		{
			name: "nat entries, deduplicated and sorted",
			mod: func(fw *Firewall) {
				fw.NAT = []netip.Addr{netip.MustParseAddr("172.30.0.9"), netip.MustParseAddr("172.30.0.2"), netip.MustParseAddr("172.30.0.9")}
			},
			want: join(common, []string{inputDrop,
				`inet banger forward: iifname "br-fc" oifname "br-fc" counter accept comment "banger: vm-to-vm allowed"`,
				fwdReplies,
				`inet banger forward: iifname "br-fc" ip saddr 172.30.0.2 oifname != "br-fc" counter accept comment "banger: nat egress 172.30.0.2"`,
				`inet banger forward: iifname "br-fc" ip saddr 172.30.0.9 oifname != "br-fc" counter accept comment "banger: nat egress 172.30.0.9"`,
			}, fwdTail, []string{
				`inet banger postrouting: ip saddr 172.30.0.2 oifname != "br-fc" counter masquerade comment "banger: nat 172.30.0.2"`,
				`inet banger postrouting: ip saddr 172.30.0.9 oifname != "br-fc" counter masquerade comment "banger: nat 172.30.0.9"`,
			}),
		},
		{
			name: "allow-host entries, v4 and v6, and extra dns port",
			mod: func(fw *Firewall) {
				fw.DNSPorts = []uint16{5353, 53, 53}
				fw.AllowHost = []netip.AddrPort{netip.MustParseAddrPort("172.30.0.1:8080"), netip.MustParseAddrPort("[fd00::1]:22")}
			},
			want: join(common, []string{
				`inet banger input: iifname "br-fc" ip daddr 172.30.0.1 udp dport 5353 counter accept comment "banger: guest dns"`,
				`inet banger input: iifname "br-fc" ip daddr 172.30.0.1 tcp dport 5353 counter accept comment "banger: guest dns"`,
				`inet banger input: iifname "br-fc" ip daddr 172.30.0.1 udp dport 8080 counter accept comment "banger: allow-host 172.30.0.1:8080"`,
				`inet banger input: iifname "br-fc" ip daddr 172.30.0.1 tcp dport 8080 counter accept comment "banger: allow-host 172.30.0.1:8080"`,
				`inet banger input: iifname "br-fc" ip6 daddr fd00::1 udp dport 22 counter accept comment "banger: allow-host [fd00::1]:22"`,
				`inet banger input: iifname "br-fc" ip6 daddr fd00::1 tcp dport 22 counter accept comment "banger: allow-host [fd00::1]:22"`,
				inputDrop,
				`inet banger forward: iifname "br-fc" oifname "br-fc" counter accept comment "banger: vm-to-vm allowed"`,
				fwdReplies}, fwdTail),
		},
		{
			name: "allowing the metadata address does not unblock it",
			mod: func(fw *Firewall) {
				fw.DNSPorts = nil
				fw.AllowHost = []netip.AddrPort{netip.MustParseAddrPort("169.254.169.254:80")}
			},
			want: join(common[:2], []string{
				`inet banger input: iifname "br-fc" ip daddr 169.254.169.254 udp dport 80 counter accept comment "banger: allow-host 169.254.169.254:80"`,
				`inet banger input: iifname "br-fc" ip daddr 169.254.169.254 tcp dport 80 counter accept comment "banger: allow-host 169.254.169.254:80"`,
				inputDrop,
				`inet banger forward: iifname "br-fc" oifname "br-fc" counter accept comment "banger: vm-to-vm allowed"`,
				fwdReplies}, fwdTail),
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
	// Batch begin/end, two tables, six chains, every rule.
	if want := 2 + 2 + 5 + rules; sent < want {
		t.Errorf("sent %d messages, want at least %d", sent, want)
	}
}
