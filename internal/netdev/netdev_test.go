package netdev

import (
	"context"
	"errors"
	"net/netip"
	"testing"
)

// A cancelled request must fail before anything touches the kernel, which
// is also why this test needs no root.
func TestCancelledContextDoesNothing(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	h := New()
	defer h.Close()
	fw := Firewall{Bridge: "br-fc", Subnet: netip.MustParsePrefix("172.30.0.0/24"), Gateway: netip.MustParseAddr("172.30.0.1")}
	for name, err := range map[string]error{
		"EnsureBridge":  h.EnsureBridge(ctx, "br-fc", netip.MustParsePrefix("172.30.0.1/24"), 1500),
		"DeleteBridge":  h.DeleteBridge(ctx, "br-fc"),
		"CreateTap":     h.CreateTap(ctx, "tap-fc-1", "br-fc", 1000, 1000, 1500),
		"DeleteTap":     h.DeleteTap(ctx, "tap-fc-1"),
		"ApplyFirewall": h.ApplyFirewall(ctx, fw),
		"ClearFirewall": h.ClearFirewall(ctx),
	} {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := h.OpenTap(ctx, "tap-fc-1"); !errors.Is(err, context.Canceled) {
		t.Errorf("OpenTap: %v", err)
	}
}

func TestArgumentChecks(t *testing.T) {
	ctx := context.Background()
	h := New()
	for name, err := range map[string]error{
		"v6 gateway":    h.EnsureBridge(ctx, "br-fc", netip.MustParsePrefix("fd00::1/64"), 1500),
		"/32 gateway":   h.EnsureBridge(ctx, "br-fc", netip.MustParsePrefix("172.30.0.1/32"), 1500),
		"tiny mtu":      h.EnsureBridge(ctx, "br-fc", netip.MustParsePrefix("172.30.0.1/24"), 10),
		"negative uid":  h.CreateTap(ctx, "tap-fc-1", "br-fc", -1, 0, 1500),
		"long tap name": h.CreateTap(ctx, "tap-fc-0123456789", "br-fc", 1000, 1000, 1500),
		"bad firewall":  h.ApplyFirewall(ctx, Firewall{}),
	} {
		if err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}
