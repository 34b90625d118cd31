package netdevtest

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"banger/internal/netdev"
)

func TestFake(t *testing.T) {
	ctx := context.Background()
	f := NewFake()
	gw := netip.MustParsePrefix("172.30.0.1/24")
	if err := f.CreateTap(ctx, "tap-fc-1", "br-fc", 1000, 1000, 1500); err == nil {
		t.Error("tap on a missing bridge")
	}
	if err := f.EnsureBridge(ctx, "br-fc", gw, 1500); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := f.CreateTap(ctx, "tap-fc-1", "br-fc", 1000, 1000, 1500); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.CreateTap(ctx, "tap-fc-1", "br-fc", 1001, 1000, 1500); err == nil {
		t.Error("tap with another owner accepted")
	}
	q, err := f.OpenTap(ctx, "tap-fc-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.OpenTap(ctx, "tap-fc-1"); err == nil {
		t.Error("second queue while the first is open")
	}
	q.Close()
	q, err = f.OpenTap(ctx, "tap-fc-1")
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	q.Close()
	fw := netdev.Firewall{Bridge: "br-fc", Subnet: netip.MustParsePrefix("172.30.0.0/24"), Gateway: netip.MustParseAddr("172.30.0.1")}
	if err := f.ApplyFirewall(ctx, fw); err != nil {
		t.Fatal(err)
	}
	bad := fw
	bad.Gateway = netip.MustParseAddr("10.0.0.1")
	if err := f.ApplyFirewall(ctx, bad); err == nil {
		t.Error("bad firewall accepted")
	}
	if got := strings.Join(f.Leaks(), ","); got != "link br-fc,link tap-fc-1,nftables bridge banger,nftables inet banger" {
		t.Errorf("leaks = %s", got)
	}
	f.FailNext("DeleteTap", ErrInjected)
	if err := f.DeleteTap(ctx, "tap-fc-1"); !errors.Is(err, ErrInjected) {
		t.Errorf("injected failure: %v", err)
	}
	for _, step := range []func() error{
		func() error { return f.DeleteTap(ctx, "tap-fc-1") },
		func() error { return f.DeleteTap(ctx, "tap-fc-1") },
		func() error { return f.ClearFirewall(ctx) },
		func() error { return f.DeleteBridge(ctx, "br-fc") },
		func() error { return f.DeleteBridge(ctx, "br-fc") },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	if l := f.Leaks(); len(l) != 0 {
		t.Errorf("leaks after teardown: %v", l)
	}
}
