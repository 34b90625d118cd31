package netdev_test

import (
	"context"
	"net/netip"
	"os"
	"strings"
	"testing"

	"banger/internal/execx"
	"banger/internal/netdev"
	"banger/internal/netdev/netdevtest"
	"banger/internal/testutil"
)

// TestFirewallXtablesRoot runs banger's firewall through the iptables tools
// instead of nftables, once per installed flavour, inside namespaces the
// test creates: it checks the chains, a few of the paths TestFirewallRoot
// covers, and that Clear leaves only other people's rules behind.
func TestFirewallXtablesRoot(t *testing.T) {
	testutil.RequireRoot(t)
	ran := false
	for _, variant := range []string{"iptables-nft", "iptables-legacy"} {
		if _, err := execx.LookPath(variant); err != nil {
			continue
		}
		ran = true
		t.Run(variant, func(t *testing.T) { testXtables(t, variant) })
	}
	if !ran {
		t.Skip("no iptables-nft or iptables-legacy installed")
	}
}

func testXtables(t *testing.T, variant string) {
	ctx := context.Background()
	tp := newTopology(t)
	v4, v6, err := netdev.UseXtables(tp.h, variant)
	if err != nil {
		t.Fatal(err)
	}
	if b := tp.h.Backend(); b != "xtables ("+variant+")" {
		t.Errorf("Backend() = %q", b)
	}
	tools := []string{v4}
	if v6 != "" {
		tools = append(tools, v6)
	}
	// ipt runs a tool inside the host namespace of the topology.
	ipt := func(bin string, args ...string) string {
		t.Helper()
		var out []byte
		tp.host.in(t, func() error {
			var err error
			out, err = execx.Default.Run(ctx, bin, append([]string{"-w"}, args...)...)
			return err
		})
		return string(out)
	}
	dump := func() string {
		var b strings.Builder
		for _, bin := range tools {
			for _, table := range []string{"filter", "nat", "raw"} {
				b.WriteString(ipt(bin, "-t", table, "-S"))
			}
		}
		return b.String()
	}
	foreign := "-A INPUT -p tcp -m tcp --dport 9999 -j ACCEPT"
	ipt(v4, "-t", "filter", "-A", "INPUT", "-p", "tcp", "-m", "tcp", "--dport", "9999", "-j", "ACCEPT")

	serveTCP(t, tp.host, ":53")
	serveTCP(t, tp.host, ":2222")
	serveTCP(t, tp.g2, ":7000")
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

	fw := netdev.Firewall{
		Bridge:   bridge,
		Subnet:   mustPrefix("172.30.0.0/24"),
		Gateway:  netip.MustParseAddr("172.30.0.1"),
		DNSPorts: []uint16{53},
		VMToVM:   true,
		NAT:      []netip.Addr{netip.MustParseAddr(g1Addr)},
		Guests:   tp.guests,
	}
	if v6 != "" {
		fw.AllowHost = []netip.AddrPort{netip.MustParseAddrPort("[fd00::1]:22")}
	}
	for range 2 {
		if err := tp.h.ApplyFirewall(ctx, fw); err != nil {
			t.Fatal(err)
		}
	}
	rules := dump()
	for _, want := range []string{
		"-N BANGER-PREROUTING", "-N BANGER-INPUT", "-N BANGER-FORWARD", "-N BANGER-POSTROUTING",
		"-A INPUT -m comment --comment banger -j BANGER-INPUT",
		"-A FORWARD -m comment --comment banger -j BANGER-FORWARD",
		"-A PREROUTING -m comment --comment banger -j BANGER-PREROUTING",
		"-A POSTROUTING -m comment --comment banger -j BANGER-POSTROUTING",
		foreign,
	} {
		if !strings.Contains(rules, want) {
			t.Errorf("missing %q in:\n%s", want, rules)
		}
	}
	if variant == "iptables-nft" {
		// The leak check sees iptables-nft's chains.
		l, err := netdevtest.LeaksIn(tp.host.path())
		if err != nil || !strings.Contains(strings.Join(l, ","), "nftables chain ip filter BANGER-INPUT") {
			t.Errorf("leak check while applied: %v, %v", l, err)
		}
	}
	if n := strings.Count(rules, "-j BANGER-INPUT"); n != len(tools) {
		t.Errorf("%d jumps to BANGER-INPUT after two applies, want %d:\n%s", n, len(tools), rules)
	}

	reach(tp.g1, "172.30.0.1:53")
	blocked(tp.g1, "172.30.0.1:2222")
	reach(tp.g1, g2Addr+":7000")
	if seen, err := dialTCP(tp.g1, upAddr+":80"); err != nil || seen != hostUp {
		t.Errorf("nat egress: saw %q, %v", seen, err)
	}
	blocked(tp.g2, upAddr+":80")
	blocked(tp.g1, metadata+":80")
	checkFramesConfined(t, tp)

	fw.VMToVM = false
	fw.NAT = nil
	if err := tp.h.ApplyFirewall(ctx, fw); err != nil {
		t.Fatal(err)
	}
	if rules := dump(); strings.Contains(rules, "BANGER-POSTROUTING") || !strings.Contains(rules, "physdev") {
		t.Errorf("after apply without NAT, VM-to-VM off:\n%s", rules)
	}
	blocked(tp.g1, upAddr+":80")
	// ebtables keeps guests apart whether or not br_netfilter hands
	// bridged frames to iptables.
	blocked(tp.g1, g2Addr+":7000")
	if _, err := os.Stat("/proc/sys/net/bridge/bridge-nf-call-iptables"); err == nil {
		setSysctl(t, tp.host, "net/bridge/bridge-nf-call-iptables", "0")
		blocked(tp.g1, g2Addr+":7000")
		setSysctl(t, tp.host, "net/bridge/bridge-nf-call-iptables", "1")
	}

	for range 2 {
		if err := tp.h.ClearFirewall(ctx); err != nil {
			t.Fatal(err)
		}
	}
	rules = dump()
	if strings.Contains(strings.ToLower(rules), "banger") {
		t.Errorf("banger rules left after clear:\n%s", rules)
	}
	if !strings.Contains(rules, foreign) {
		t.Errorf("foreign rule gone after clear:\n%s", rules)
	}
	reach(tp.g1, "172.30.0.1:2222")
}
