package sysrun

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/errdefs"
	"banger/internal/helper"
	"banger/internal/installmeta"
	"banger/internal/netdev"
)

// TestCheckSubnetFree: the subnet root pins is refused when the host
// already has an address or route in it, naming it; the helper's own
// bridges (its ledger) do not count, a bridge of banger's name that the
// ledger does not record does.
func TestCheckSubnetFree(t *testing.T) {
	state := t.TempDir()
	l, err := helper.OpenLedger(state)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.AddBridge("br-fc"); err != nil {
		t.Fatal(err)
	}
	pfx := netip.MustParsePrefix
	host := []netdev.HostPrefix{
		{Prefix: pfx("192.168.1.23/24"), Dev: "eth0"},
		{Prefix: pfx("192.168.1.0/24"), Route: true, Dev: "eth0", Table: 254},
		{Prefix: pfx("10.8.0.0/16"), Route: true, Dev: "wg0", Table: 254},
		{Prefix: pfx("172.16.0.1/24"), Dev: "br-fc"},       // banger's own, from the last install
		{Prefix: pfx("172.20.0.1/24"), Dev: "br-fc-other"}, // banger's pattern, not in the ledger
	}
	list := func(context.Context) ([]netdev.HostPrefix, error) { return host, nil }
	for _, tc := range []struct{ subnet, want string }{
		{"192.168.1.0/29", "address 192.168.1.23/24 on eth0"},
		{"10.8.4.0/24", "route 10.8.0.0/16 dev wg0"},
		{"172.20.0.0/16", "address 172.20.0.1/24 on br-fc-other"},
		{"", ""},               // the default, 172.16.0.0/24: only br-fc has it
		{"172.16.0.0/16", ""},  // a reinstall moving banger's own bridge
		{"192.168.2.0/24", ""}, // free
	} {
		err := Pins{Subnet: tc.subnet}.CheckSubnetFree(context.Background(), list, state)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v, want it accepted", tc.subnet, err)
		case tc.want != "" && (!errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: %v, want invalid naming %q", tc.subnet, err, tc.want)
		}
	}
	// Without a ledger, the old bridge is someone else's.
	err = Pins{}.CheckSubnetFree(context.Background(), list, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "address 172.16.0.1/24 on br-fc") {
		t.Errorf("no ledger: %v", err)
	}
	if helperLedgerFile != helper.LedgerFile {
		t.Errorf("ledger file %q, the helper's is %q", helperLedgerFile, helper.LedgerFile)
	}
	// A ledger that does not parse is an error, not "no bridges".
	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, helper.LedgerFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := (Pins{}).CheckSubnetFree(context.Background(), list, bad); err == nil {
		t.Error("an unreadable ledger was taken as empty")
	}
	// The pinned subnet is what the metadata records.
	if m := (Pins{Subnet: "10.9.0.0/24"}).apply(installmeta.Meta{}); m.Subnet != "10.9.0.0/24" {
		t.Errorf("metadata subnet %q", m.Subnet)
	}
}
