package ipam

import (
	"errors"
	"net/netip"
	"testing"
)

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		cidr, gw, subnet string
		ok               bool
	}{
		{"172.16.0.0/24", "172.16.0.1", "172.16.0.0/24", true},
		{"172.16.0.77/24", "172.16.0.1", "172.16.0.0/24", true},
		{"10.0.0.0/8", "10.0.0.1", "10.0.0.0/8", true},
		{"192.168.5.0/29", "192.168.5.1", "192.168.5.0/29", true},
		{"192.168.5.0/30", "", "", false},
		{"10.0.0.0/7", "", "", false},
		{"fd00::/64", "", "", false},
		{"nonsense", "", "", false},
	} {
		p, err := New(tc.cidr)
		if (err == nil) != tc.ok {
			t.Errorf("New(%q) err = %v, want ok=%v", tc.cidr, err, tc.ok)
			continue
		}
		if tc.ok && (p.Gateway.String() != tc.gw || p.Subnet.String() != tc.subnet) {
			t.Errorf("New(%q) = %v gw %v, want %s gw %s", tc.cidr, p.Subnet, p.Gateway, tc.subnet, tc.gw)
		}
	}
}

func TestAllocate(t *testing.T) {
	p, _ := New("172.16.0.0/29") // hosts .1-.6, gateway .1, broadcast .7
	for _, tc := range []struct {
		used []netip.Addr
		want string
		err  error
	}{
		{nil, "172.16.0.2", nil},
		{addrs("172.16.0.2"), "172.16.0.3", nil},
		{addrs("172.16.0.3", "172.16.0.2"), "172.16.0.4", nil},
		{addrs("172.16.0.2", "172.16.0.4"), "172.16.0.3", nil},
		{addrs("172.16.0.2", "172.16.0.3", "172.16.0.4", "172.16.0.5", "172.16.0.6"), "", ErrExhausted},
	} {
		got, err := p.Allocate(tc.used)
		if !errors.Is(err, tc.err) || (tc.err == nil && got.String() != tc.want) {
			t.Errorf("Allocate(%v) = %v, %v; want %s, %v", tc.used, got, err, tc.want, tc.err)
		}
	}
}

func TestContainsAndMAC(t *testing.T) {
	p, _ := New("172.16.0.0/24")
	for a, want := range map[string]bool{"172.16.0.0": false, "172.16.0.1": false, "172.16.0.2": true, "172.16.0.254": true, "172.16.0.255": false, "172.16.1.2": false} {
		if got := p.Contains(netip.MustParseAddr(a)); got != want {
			t.Errorf("Contains(%s) = %v", a, got)
		}
	}
	if got := MAC(netip.MustParseAddr("172.16.0.2")); got != "02:fc:ac:10:00:02" {
		t.Errorf("MAC = %s", got)
	}
	if got := p.GatewayPrefix().String(); got != "172.16.0.1/24" {
		t.Errorf("GatewayPrefix = %s", got)
	}
}
