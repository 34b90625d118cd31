package helper

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"banger/internal/netdev"
	"banger/internal/privop"
)

// TestEnsureBridgeOnlyPinnedSubnet: the owner cannot choose the bridge
// address; only the first host of the pinned subnet, with its length, is
// accepted, and ping and apply_firewall hold to the same subnet.
func TestEnsureBridgeOnlyPinnedSubnet(t *testing.T) {
	h := startServer(t, func(c *Config) { c.Subnet = netip.MustParsePrefix("10.77.0.0/24") })
	ctx := ctxT(t)
	for _, gw := range []string{"192.168.1.1/30", "172.16.0.1/24", "10.77.0.1/16", "10.77.0.2/24", "10.77.0.1/25"} {
		err := h.client.Do(ctx, privop.EnsureBridge{Bridge: "br-fc", Gateway: gw, MTU: 1500}, nil)
		wantCode(t, err, privop.CodeForbidden, "root pinned the bridge subnet 10.77.0.0/24")
	}
	if calls := h.net.Calls(); len(calls) != 0 {
		t.Errorf("refused gateways reached the host: %v", calls)
	}
	if b, _ := h.ledger.Names(); len(b) != 0 {
		t.Errorf("refused gateways left ledger entries %v", b)
	}
	if err := h.client.Do(ctx, privop.EnsureBridge{Bridge: "br-fc", Gateway: "10.77.0.1/24", MTU: 1500}, nil); err != nil {
		t.Fatalf("the pinned gateway: %v", err)
	}
	for _, fw := range []privop.ApplyFirewall{
		{Bridge: "br-fc", Subnet: "172.16.0.0/24", Gateway: "172.16.0.1"},
		{Bridge: "br-fc", Subnet: "10.77.0.0/16", Gateway: "10.77.0.1"},
		{Bridge: "br-fc", Subnet: "10.77.0.0/24", Gateway: "10.77.0.9"},
	} {
		err := h.client.Do(ctx, fw, nil)
		wantCode(t, err, privop.CodeForbidden, "root pinned the bridge subnet 10.77.0.0/24")
	}
	if err := h.client.Do(ctx, privop.ApplyFirewall{Bridge: "br-fc", Subnet: "10.77.0.0/24", Gateway: "10.77.0.1"}, nil); err != nil {
		t.Fatalf("firewall on the pinned subnet: %v", err)
	}
	raw, _, err := h.client.Call(ctx, privop.Ping{})
	var ping privop.PingResult
	if err == nil {
		err = json.Unmarshal(raw, &ping)
	}
	if err != nil || ping.Subnet != "10.77.0.0/24" {
		t.Errorf("ping = %+v, %v; want subnet 10.77.0.0/24", ping, err)
	}
}

// TestEnsureBridgeRefusesHostOverlap: a pinned subnet that overlaps an
// address or route the host has now (not only at install) is refused,
// naming it, and nothing is created; the bridge's own address does not
// count.
func TestEnsureBridgeRefusesHostOverlap(t *testing.T) {
	h := startServer(t, nil) // the default pin, 172.16.0.0/24
	ctx := ctxT(t)
	op := privop.EnsureBridge{Bridge: "br-fc", Gateway: "172.16.0.1/24", MTU: 1500}
	pfx := netip.MustParsePrefix
	for _, tc := range []struct {
		host netdev.HostPrefix
		want string
	}{
		{netdev.HostPrefix{Prefix: pfx("172.16.0.77/16"), Dev: "eth0"}, "address 172.16.0.77/16 on eth0"},
		{netdev.HostPrefix{Prefix: pfx("172.16.0.0/22"), Route: true, Dev: "wg0", Table: 51820}, "route 172.16.0.0/22 dev wg0 table 51820"},
	} {
		h.net.mu.Lock()
		h.net.host = []netdev.HostPrefix{tc.host}
		h.net.mu.Unlock()
		wantCode(t, h.client.Do(ctx, op, nil), privop.CodeForbidden, tc.want)
		if calls := h.net.Calls(); len(calls) != 0 {
			t.Fatalf("an overlapping subnet reached the host: %v", calls)
		}
		if b, _ := h.ledger.Names(); len(b) != 0 {
			t.Fatalf("an overlapping subnet left ledger entries %v", b)
		}
	}
	h.net.mu.Lock()
	h.net.host = []netdev.HostPrefix{
		{Prefix: pfx("172.16.0.1/24"), Dev: "br-fc"}, // the bridge's own
		{Prefix: pfx("0.0.0.0/0"), Route: true, Dev: "eth0", Table: 254},
		{Prefix: pfx("172.17.0.1/16"), Dev: "docker0"},
	}
	h.net.mu.Unlock()
	if err := h.client.Do(ctx, op, nil); err != nil {
		t.Fatalf("no overlap but the bridge's own: %v", err)
	}
}

// TestForeignBridgeNeverAdopted: a bridge of banger's name pattern that
// the ledger does not record is neither addressed, nor recorded, nor
// deleted.
func TestForeignBridgeNeverAdopted(t *testing.T) {
	h := startServer(t, nil)
	ctx := ctxT(t)
	h.net.setBridge("br-fc-9", "gateway=192.168.7.1/24 mtu=1500")
	before := h.net.Render()
	err := h.client.Do(ctx, privop.EnsureBridge{Bridge: "br-fc-9", Gateway: "172.16.0.1/24", MTU: 1500}, nil)
	wantCode(t, err, privop.CodeForbidden, "bridge br-fc-9 exists and was not created by banger; remove it or choose another bridge_name")
	err = h.client.Do(ctx, privop.DeleteBridge{Bridge: "br-fc-9"}, nil)
	wantCode(t, err, privop.CodeForbidden, "bridge br-fc-9 was not created by banger")
	if after := h.net.Render(); after != before {
		t.Errorf("foreign bridge changed:\n%s\nwas:\n%s", after, before)
	}
	if b, _ := h.ledger.Names(); len(b) != 0 {
		t.Errorf("foreign bridge recorded: %v", b)
	}
	if calls := h.net.Calls(); slices.ContainsFunc(calls, func(c string) bool {
		return strings.HasPrefix(c, "EnsureBridge") || strings.HasPrefix(c, "DeleteBridge")
	}) {
		t.Errorf("a foreign bridge was configured or deleted: %v", calls)
	}
}

// TestBridgeIntentRecovers: a crash after the ledger recorded a bridge
// (intent) leaves an entry that the next ensure_bridge completes, whether
// the kernel made the bridge before the crash or not.
func TestBridgeIntentRecovers(t *testing.T) {
	h := startServer(t, nil)
	ctx := ctxT(t)
	op := privop.EnsureBridge{Bridge: "br-fc", Gateway: "172.16.0.1/24", MTU: 1500}
	// Crashed before the create.
	if _, err := h.ledger.AddBridge("br-fc"); err != nil {
		t.Fatal(err)
	}
	if err := h.client.Do(ctx, op, nil); err != nil {
		t.Fatalf("ensure after intent only: %v", err)
	}
	// Crashed after the create, before the address.
	if _, err := h.ledger.AddBridge("br-fc-b"); err != nil {
		t.Fatal(err)
	}
	h.net.setBridge("br-fc-b", "gateway=none mtu=1500")
	op.Bridge = "br-fc-b"
	if err := h.client.Do(ctx, op, nil); err != nil {
		t.Fatalf("ensure after intent and create: %v", err)
	}
	render := h.net.Render()
	for _, want := range []string{"bridge br-fc gateway=172.16.0.1/24 mtu=1500", "bridge br-fc-b gateway=172.16.0.1/24 mtu=1500"} {
		if !strings.Contains(render, want) {
			t.Errorf("host lacks %q:\n%s", want, render)
		}
	}
}
