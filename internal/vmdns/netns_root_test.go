package vmdns

import (
	"context"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"banger/internal/testutil"
)

// ns is a network namespace the test made, held by its handle only.
type ns struct {
	h  netns.NsHandle
	nl *netlink.Handle
}

func newTestNS(t *testing.T) *ns {
	t.Helper()
	var h netns.NsHandle
	if err := onThread(func() error {
		orig, err := netns.Get()
		if err != nil {
			return err
		}
		defer orig.Close()
		if h, err = netns.New(); err != nil {
			return err
		}
		return netns.Set(orig)
	}); err != nil {
		t.Fatalf("create netns: %v", err)
	}
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		h.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { nl.Close(); h.Close() })
	n := &ns{h: h, nl: nl}
	n.up(t, "lo")
	return n
}

// onThread runs fn on a locked thread, dropped if fn leaves it elsewhere.
func onThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		ferr := fn()
		if cur, err := netns.Get(); err == nil {
			if cur.Equal(orig) {
				runtime.UnlockOSThread()
			}
			cur.Close()
		}
		errc <- ferr
	}()
	return <-errc
}

// do runs fn inside n; sockets fn makes stay in n.
func (n *ns) do(fn func() error) error {
	return onThread(func() error {
		orig, err := netns.Get()
		if err != nil {
			return err
		}
		defer orig.Close()
		if err := netns.Set(n.h); err != nil {
			return err
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			return err
		}
		return ferr
	})
}

func (n *ns) index(t *testing.T, name string) int {
	t.Helper()
	l, err := n.nl.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Index
}

func (n *ns) up(t *testing.T, name string, addrs ...string) {
	t.Helper()
	l, err := n.nl.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		addr, err := netlink.ParseAddr(a)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.nl.AddrAdd(l, addr); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.nl.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
}

// veth joins a (name) to b (peer).
func veth(t *testing.T, a *ns, name string, b *ns, peer string) {
	t.Helper()
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peer, PeerNamespace: netlink.NsFd(int(b.h))}
	if err := a.nl.LinkAdd(v); err != nil {
		t.Fatal(err)
	}
}

// The bridge listener, in namespaces: a guest on the bridge side is
// answered, and so is the host itself (over loopback); a client on another
// interface gets nothing, with its own address or one it forged from the
// VM subnet.
func TestGuestListenerInNamespaces(t *testing.T) {
	testutil.RequireRoot(t)
	host, guest, outside := newTestNS(t), newTestNS(t), newTestNS(t)
	veth(t, host, "br0", guest, "eth0")
	veth(t, host, "lan0", outside, "eth0")
	host.up(t, "br0", "10.99.0.1/24")
	host.up(t, "lan0", "192.0.2.1/24")
	guest.up(t, "eth0", "10.99.0.2/24")
	// The outsider also holds an address of the VM subnet, to forge it.
	outside.up(t, "eth0", "192.0.2.2/24", "10.99.0.5/32")
	if err := outside.nl.RouteAdd(&netlink.Route{Dst: &net.IPNet{IP: net.IP{10, 99, 0, 0}, Mask: net.CIDRMask(24, 32)},
		Gw: net.IP{192, 0, 2, 1}, LinkIndex: outside.index(t, "eth0")}); err != nil {
		t.Fatal(err)
	}

	s, err := New(Config{Listen: []string{"127.0.0.1:0"}, Upstreams: []string{"127.0.0.1:1"},
		GuestSubnet: netip.MustParsePrefix("10.99.0.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	// The serving goroutines live in the test's namespace: look the
	// interfaces up in the host namespace.
	br, lo := host.index(t, "br0"), host.index(t, "lo")
	s.ifaceOf = func(netip.Addr) (int, int) { return br, lo }
	var gw netip.AddrPort
	if err := host.do(func() error {
		if err := s.Start(); err != nil {
			return err
		}
		gw, err = s.AddListener("10.99.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	if err := s.Set("web", netip.MustParseAddr("10.99.0.2")); err != nil {
		t.Fatal(err)
	}
	gc := s.listeners[len(s.listeners)-1].udp.PacketConn.(*guestConn)

	ask := func(n *ns, network, from string, wait time.Duration) []byte {
		t.Helper()
		var c net.Conn
		if err := n.do(func() (err error) { c, err = dialFrom(network, from, gw); return err }); err != nil {
			if network == "tcp" {
				return nil // refused or unanswered handshake: no answer either
			}
			t.Fatal(err)
		}
		defer c.Close()
		return roundTrip(t, network, c, question("web.vm.", dns.TypeA), wait)
	}
	for _, network := range []string{"udp", "tcp"} {
		if raw := ask(guest, network, "10.99.0.2", 5*time.Second); raw == nil || len(unpack(t, raw).Answer) != 1 {
			t.Errorf("%s: the guest got no answer", network)
		}
		if raw := ask(host, network, "10.99.0.1", 5*time.Second); raw == nil || len(unpack(t, raw).Answer) != 1 {
			t.Errorf("%s: the host itself got no answer", network)
		}
		if raw := ask(outside, network, "192.0.2.2", 500*time.Millisecond); raw != nil {
			t.Errorf("%s: a client outside the subnet got an answer", network)
		}
	}
	before := gc.dropped.Load()
	if raw := ask(outside, "udp", "10.99.0.5", 500*time.Millisecond); raw != nil {
		t.Error("a forged subnet source from another interface got an answer")
	}
	if gc.dropped.Load() == before {
		t.Error("the forged packet was not dropped by the listener (its answer went to the bridge side)")
	}
}
