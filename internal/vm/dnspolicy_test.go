package vm

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"

	"banger/internal/api"
	"banger/internal/store"
	"banger/internal/vmdns"
)

// The DNS server bangerd runs is the one that gets the grants.
var _ dnsRecursion = (*vmdns.Server)(nil)

// recursionDNS records which guests may have names outside .vm resolved.
type recursionDNS struct {
	fakeDNS
	granted map[netip.Addr]bool
}

func (d *recursionDNS) SetRecursion(ip netip.Addr, on bool) {
	if on {
		d.granted[ip] = true
	} else {
		delete(d.granted, ip)
	}
}

// Only a running guest with NAT is granted recursion, and only until it
// stops.
func TestDNSRecursionFollowsNAT(t *testing.T) {
	svc, st, _ := newTestService(t)
	dns := &recursionDNS{granted: map[netip.Addr]bool{}}
	nw, err := newNetwork(NetworkOptions{Helper: &fakeHelper{}, DNS: dns, Bridge: "br-fc", Subnet: "172.16.0.0/24", MTU: 1500,
		DNSPort: 42069, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	svc.net = nw
	ctx := context.Background()
	withNAT := store.VM{ID: "nat1", Name: "out", GuestIP: "172.16.0.2", NAT: true, State: api.StateRunning}
	without := store.VM{ID: "iso1", Name: "iso", GuestIP: "172.16.0.3", State: api.StateRunning}
	for _, v := range []store.VM{withNAT, without} {
		if err := st.CreateVM(ctx, v); err != nil {
			t.Fatal(err)
		}
		if err := svc.netUp(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	if !dns.granted[netip.MustParseAddr("172.16.0.2")] || dns.granted[netip.MustParseAddr("172.16.0.3")] || len(dns.granted) != 1 {
		t.Fatalf("granted after start = %v, want only the NAT guest 172.16.0.2", dns.granted)
	}
	withNAT.State = api.StateStopped
	svc.releaseRuntime(withNAT)
	if len(dns.granted) != 0 {
		t.Fatalf("granted after the NAT guest stopped = %v", dns.granted)
	}
}
