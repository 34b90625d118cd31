package helper

import (
	"slices"
	"testing"

	"banger/internal/privop"
)

// A bangerd starting after a crash learns from ping which taps the helper
// still holds, so it can delete those whose VM is gone. Deleted taps must
// drop out of the list, or bangerd would try them forever.
func TestPingListsLedgerTaps(t *testing.T) {
	h := startServer(t, nil)
	ctx := ctxT(t)
	for _, op := range []privop.Op{
		privop.EnsureBridge{Bridge: "br-fc", Gateway: "172.16.0.1/24", MTU: 1500},
		privop.CreateTap{Tap: "tap-fc-b2", Bridge: "br-fc", MTU: 1500, IP: "172.16.0.3"},
		privop.CreateTap{Tap: "tap-fc-a1", Bridge: "br-fc", MTU: 1500, IP: "172.16.0.2"},
		privop.CreateTap{Tap: "tap-fc-c3", Bridge: "br-fc", MTU: 1500, IP: "172.16.0.4"},
		privop.DeleteTap{Tap: "tap-fc-c3"},
	} {
		if err := h.client.Do(ctx, op, nil); err != nil {
			t.Fatalf("%s: %v", op.Name(), err)
		}
	}
	ping, err := h.client.Ping(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"tap-fc-a1", "tap-fc-b2"}; !slices.Equal(ping.Taps, want) {
		t.Fatalf("ping taps = %v, want %v", ping.Taps, want)
	}
}
