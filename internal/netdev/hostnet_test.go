package netdev

import (
	"net/netip"
	"strings"
	"testing"
)

// TestSubnetConflict: a bridge subnet is refused when it overlaps any
// address or route of the host, except those of banger's own bridge and
// catch-all routes, and the error names each conflict.
func TestSubnetConflict(t *testing.T) {
	pfx := netip.MustParsePrefix
	host := []HostPrefix{
		{Prefix: pfx("127.0.0.1/8"), Dev: "lo"},
		{Prefix: pfx("192.168.1.23/24"), Dev: "eth0"},
		{Prefix: pfx("192.168.1.0/24"), Route: true, Dev: "eth0", Table: 254},
		{Prefix: pfx("0.0.0.0/0"), Route: true, Dev: "eth0", Table: 254},
		{Prefix: pfx("0.0.0.0/1"), Route: true, Dev: "tun0", Table: 254},
		{Prefix: pfx("10.8.0.0/16"), Route: true, Dev: "wg0", Table: 51820},
		{Prefix: pfx("10.66.0.0/24"), Route: true, Type: "blackhole", Table: 254},
		{Prefix: pfx("172.16.0.1/24"), Dev: "br-fc0"},
		{Prefix: pfx("172.16.0.0/24"), Route: true, Dev: "br-fc0", Table: 254},
		{Prefix: pfx("172.16.0.1/32"), Route: true, Dev: "br-fc0", Table: 255, Type: "local"},
		{Prefix: pfx("fd00::1/64"), Dev: "eth0"},
	}
	for _, tc := range []struct {
		subnet, own string
		want        []string // conflicts named; none = accepted
	}{
		{"172.16.0.0/24", "br-fc0", nil},
		{"172.16.0.0/16", "br-fc0", nil},
		{"172.16.0.0/24", "br-fc1", []string{"address 172.16.0.1/24 on br-fc0", "route 172.16.0.0/24 dev br-fc0", "route local 172.16.0.1/32 dev br-fc0 table 255"}},
		{"172.16.0.0/24", "", []string{"address 172.16.0.1/24 on br-fc0"}},
		{"192.168.1.0/30", "br-fc0", []string{"address 192.168.1.23/24 on eth0", "route 192.168.1.0/24 dev eth0"}},
		{"192.168.0.0/16", "br-fc0", []string{"address 192.168.1.23/24 on eth0"}},
		{"192.168.2.0/24", "br-fc0", nil},
		{"10.8.3.0/24", "br-fc0", []string{"route 10.8.0.0/16 dev wg0 table 51820"}},
		{"10.66.0.0/29", "br-fc0", []string{"route blackhole 10.66.0.0/24"}},
		{"10.0.0.0/8", "br-fc0", []string{"wg0", "blackhole"}},
		{"10.9.0.0/24", "br-fc0", nil},
	} {
		err := SubnetConflict(pfx(tc.subnet), tc.own, host)
		if len(tc.want) == 0 {
			if err != nil {
				t.Errorf("%s (own %q): %v, want no conflict", tc.subnet, tc.own, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s (own %q): no conflict, want %q", tc.subnet, tc.own, tc.want)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s (own %q): %v; want it to name %q", tc.subnet, tc.own, err, w)
			}
		}
		if !strings.Contains(err.Error(), "subnet "+tc.subnet+" overlaps") {
			t.Errorf("%s: %v; want it to name the subnet", tc.subnet, err)
		}
	}
}
