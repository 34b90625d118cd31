package netdev_test

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"banger/internal/netdev"
	"banger/internal/testutil"
)

// TestCreateBridgeNeverAdoptsRoot: CreateBridge refuses a link that
// already exists, bridge or not, with fs.ErrExist, and leaves it as it was.
func TestCreateBridgeNeverAdoptsRoot(t *testing.T) {
	testutil.RequireRoot(t)
	ctx := context.Background()
	ns := newNS(t)
	h := hostIn(t, ns)
	foreign := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br-fc-9", MTU: 1400}}
	if err := ns.nl.LinkAdd(foreign); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ns.nl.LinkDel(foreign) })
	ns.addAddr(t, "br-fc-9", "192.168.77.1/24")
	if err := h.CreateBridge(ctx, "br-fc-9", 1500); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("CreateBridge over an existing bridge = %v, want fs.ErrExist", err)
	}
	l := ns.link(t, "br-fc-9")
	addrs, err := ns.nl.AddrList(l, netlink.FAMILY_V4)
	if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != "192.168.77.1/24" || l.Attrs().MTU != 1400 {
		t.Errorf("foreign bridge now mtu %d, addresses %v (%v)", l.Attrs().MTU, addrs, err)
	}
	if err := h.CreateBridge(ctx, bridge, 1500); err != nil {
		t.Fatalf("CreateBridge of a new bridge: %v", err)
	}
	if l := ns.link(t, bridge); l.Type() != "bridge" || l.Attrs().MTU != 1500 {
		t.Errorf("new bridge %s mtu %d", l.Type(), l.Attrs().MTU)
	}
	if got := ns.sysctl(t, "net/ipv4/conf/"+bridge+"/forwarding"); got != "0" {
		t.Errorf("forwarding on the new bridge = %s, want 0", got)
	}
	if err := h.DeleteBridge(ctx, bridge); err != nil {
		t.Fatal(err)
	}
}

// TestHostPrefixesRoot: the namespace's addresses and routes, of every
// table, are listed with their devices, and an overlapping one is named.
func TestHostPrefixesRoot(t *testing.T) {
	testutil.RequireRoot(t)
	ctx := context.Background()
	ns := newNS(t)
	other := newNS(t)
	h := hostIn(t, ns)
	ns.veth(t, "lan0", other, "lan1")
	ns.addAddr(t, "lan0", "10.40.0.5/16")
	ns.addRoute(t, "10.41.0.0/16", "10.40.0.1")
	if err := ns.nl.RouteAdd(&netlink.Route{Dst: ipNet(t, "10.42.0.0/24"), LinkIndex: ns.link(t, "lan0").Attrs().Index, Table: 100}); err != nil {
		t.Fatal(err)
	}
	host, err := h.HostPrefixes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ subnet, want string }{
		{"10.40.7.0/24", "address 10.40.0.5/16 on lan0"},
		{"10.41.3.0/24", "route 10.41.0.0/16 dev lan0"},
		{"10.42.0.0/24", "route 10.42.0.0/24 dev lan0 table 100"},
	} {
		err := netdev.SubnetConflict(mustPrefix(tc.subnet), "br-fc", host)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want it to name %q (host: %v)", tc.subnet, err, tc.want, host)
		}
	}
	if err := netdev.SubnetConflict(mustPrefix("10.43.0.0/24"), "br-fc", host); err != nil {
		t.Errorf("a free subnet: %v", err)
	}
}

func ipNet(t *testing.T, s string) *net.IPNet {
	t.Helper()
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
