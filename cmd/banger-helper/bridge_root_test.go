package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"banger/internal/installmeta"
	"banger/internal/netdev/netdevtest"
	"banger/internal/privop"
	"banger/internal/privop/client"
	"banger/internal/testutil"
)

// runHelper starts the real helper on the given metadata and state, inside
// nsPath, and returns a client once it answers and a stop function.
func runHelper(t *testing.T, base, meta, nsPath string) (*client.Client, func()) {
	t.Helper()
	sock := filepath.Join(base, "run", "helper.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--socket", sock, "--install-meta", meta, "--state-dir", filepath.Join(base, "state"), "--netns", nsPath})
	}()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}
	t.Cleanup(stop)
	c := client.New(sock)
	cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ccancel()
	for {
		if _, err := c.Ping(cctx); err == nil {
			return c, stop
		} else if cctx.Err() != nil {
			t.Fatalf("helper never answered: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestHelperBridgeSubnetInNetns drives the real helper in a namespace the
// test creates: the pinned subnet is refused while an address or a route
// of the namespace overlaps it (checked at each ensure_bridge, as the host
// changes), and a bridge of banger's name that the helper did not create
// keeps its address through ensure_bridge, delete_bridge and a helper
// restart.
func TestHelperBridgeSubnetInNetns(t *testing.T) {
	testutil.RequireRoot(t)
	netdevtest.GuardHostNamespace(t)
	nsPath := newNetns(t)
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	nl, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()

	base, err := os.MkdirTemp("", "bhs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	meta := filepath.Join(base, "install.toml")
	if err := installmeta.Write(meta, installmeta.Meta{OwnerUser: "owner", OwnerUID: 4242, OwnerGID: 4242, OwnerHome: "/home/owner", Subnet: "10.50.1.0/24"}); err != nil {
		t.Fatal(err)
	}

	// Someone else's: a veth pair (a LAN link), and two bridges of banger's
	// name pattern with an address each: br-fc-9, a name banger could use,
	// and br-fc9, which matches the prefix but is no banger name.
	lan := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "lan0"}, PeerName: "lan1"}
	foreign := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br-fc-9"}}
	foreign2 := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br-fc9"}}
	for _, l := range []netlink.Link{lan, foreign, foreign2} {
		if err := nl.LinkAdd(l); err != nil {
			t.Fatalf("add %s: %v", l.Attrs().Name, err)
		}
	}
	for _, name := range []string{"lan0", "lan1", "br-fc-9", "br-fc9"} {
		l, err := nl.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := nl.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	foreignAddrs := map[string]string{"br-fc-9": "192.168.77.1/24", "br-fc9": "192.168.78.1/24"}
	for name, a := range foreignAddrs {
		l, err := nl.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		addr, _ := netlink.ParseAddr(a)
		if err := nl.AddrAdd(l, addr); err != nil {
			t.Fatal(err)
		}
	}
	foreignIntact := func(when string) {
		t.Helper()
		for name, want := range foreignAddrs {
			l, err := nl.LinkByName(name)
			if err != nil {
				t.Fatalf("%s: the foreign bridge %s is gone: %v", when, name, err)
			}
			addrs, err := nl.AddrList(l, netlink.FAMILY_V4)
			if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != want {
				t.Fatalf("%s: the foreign bridge %s has addresses %v (%v), want only %s", when, name, addrs, err, want)
			}
			if l.Attrs().OperState == netlink.OperDown && l.Attrs().Flags&net.FlagUp == 0 {
				t.Fatalf("%s: the foreign bridge %s was set down", when, name)
			}
		}
	}

	c, stop := runHelper(t, base, meta, nsPath)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ours := privop.EnsureBridge{Bridge: "br-fc", Gateway: "10.50.1.1/24", MTU: 1500}
	refused := func(op privop.Op, want string) {
		t.Helper()
		err := c.Do(ctx, op, nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: %v, want a refusal mentioning %q", op.Name(), err, want)
		}
	}

	// The foreign bridge is never adopted, changed or deleted.
	refused(privop.EnsureBridge{Bridge: "br-fc-9", Gateway: "10.50.1.1/24", MTU: 1500}, "bridge br-fc-9 exists and was not created by banger")
	foreignIntact("after ensure_bridge")
	refused(privop.DeleteBridge{Bridge: "br-fc-9"}, "not created by banger")
	foreignIntact("after delete_bridge")
	refused(privop.EnsureBridge{Bridge: "br-fc9", Gateway: "10.50.1.1/24", MTU: 1500}, "not a banger bridge name")
	refused(privop.DeleteBridge{Bridge: "br-fc9"}, "not a banger bridge name")
	foreignIntact("after ops naming br-fc9")
	stop()
	c, stop = runHelper(t, base, meta, nsPath) // start-up reconcile
	foreignIntact("after a helper restart")
	refused(privop.EnsureBridge{Bridge: "br-fc-9", Gateway: "10.50.1.1/24", MTU: 1500}, "was not created by banger")
	foreignIntact("after ensure_bridge by a restarted helper")

	// An address of the namespace overlaps the pinned subnet.
	overlap, _ := netlink.ParseAddr("10.50.0.5/16")
	if err := nl.AddrAdd(lan, overlap); err != nil {
		t.Fatal(err)
	}
	refused(ours, "overlaps the host's address 10.50.0.5/16 on lan0")
	if err := nl.AddrDel(lan, overlap); err != nil {
		t.Fatal(err)
	}
	// Then a route does.
	_, dst, _ := net.ParseCIDR("10.50.0.0/20")
	route := &netlink.Route{LinkIndex: lan.Attrs().Index, Dst: dst}
	if err := nl.RouteAdd(route); err != nil {
		t.Fatal(err)
	}
	refused(ours, "route 10.50.0.0/20 dev lan0")
	if _, err := nl.LinkByName("br-fc"); err == nil {
		t.Fatal("a refused ensure_bridge created br-fc")
	}
	if err := nl.RouteDel(route); err != nil {
		t.Fatal(err)
	}
	// Once the host no longer uses it, the subnet is fine.
	if err := c.Do(ctx, ours, nil); err != nil {
		t.Fatalf("ensure_bridge with no overlap: %v", err)
	}
	// Only the pinned subnet, even when nothing overlaps it.
	refused(privop.EnsureBridge{Bridge: "br-fc", Gateway: "10.51.1.1/24", MTU: 1500}, "root pinned the bridge subnet 10.50.1.0/24")

	if err := c.Do(ctx, privop.DeleteBridge{Bridge: "br-fc"}, nil); err != nil {
		t.Fatal(err)
	}
	foreignIntact("after banger's own bridge came and went")
	stop()
	for _, l := range []netlink.Link{lan, foreign, foreign2} {
		if err := nl.LinkDel(l); err != nil {
			t.Error(err)
		}
	}
	netdevtest.AssertNoLeaks(t, nsPath)
}
