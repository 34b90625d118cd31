package helper

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/privop"
)

// fwGuests renders the guests of the firewall the fake last got.
func (f *fakeNet) fwGuests() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fw == nil {
		return "no firewall"
	}
	var out []string
	for _, g := range f.fw.Guests {
		ip := "-"
		if g.IP.IsValid() {
			ip = g.IP.String()
		}
		out = append(out, g.Tap+" "+g.MAC.String()+" "+ip)
	}
	return strings.Join(out, "; ")
}

var applyFW = privop.ApplyFirewall{Bridge: "br-fc", Subnet: "172.16.0.0/24", Gateway: "172.16.0.1", VMToVM: true,
	Allow: []string{"10.1.2.0/24"}}

func TestCreateTapGuestAddress(t *testing.T) {
	h := startServer(t, nil)
	ctx := ctxT(t)
	c := h.client
	if err := c.Do(ctx, privop.EnsureBridge{Bridge: "br-fc", Gateway: "172.16.0.1/24", MTU: 1500}, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Do(ctx, privop.CreateTap{Tap: "tap-fc-a", Bridge: "br-fc", MTU: 1500, IP: "172.16.0.2"}, nil); err != nil {
		t.Fatal(err)
	}
	before := h.net.Render()
	for _, tc := range []struct{ tap, ip, msg string }{
		{"tap-fc-b", "172.16.0.2", "already has address 172.16.0.2"},
		{"tap-fc-b", "172.16.0.1", "is the gateway"},
		{"tap-fc-b", "172.16.0.0", "network address"},
		{"tap-fc-b", "172.16.0.255", "broadcast address"},
		{"tap-fc-b", "172.16.1.2", "outside the bridge subnet"},
	} {
		err := c.Do(ctx, privop.CreateTap{Tap: tc.tap, Bridge: "br-fc", MTU: 1500, IP: tc.ip}, nil)
		wantCode(t, err, privop.CodeBadRequest, tc.msg)
	}
	if after := h.net.Render(); after != before {
		t.Errorf("a refused create_tap changed the host:\n%s\nwas:\n%s", after, before)
	}
	if _, ok := h.ledger.Tap("tap-fc-b"); ok {
		t.Error("a refused tap was recorded")
	}
	// The same tap may be created again (a VM restart), and the owner may
	// move it to a free address; the old one is then free for others.
	if err := c.Do(ctx, privop.CreateTap{Tap: "tap-fc-a", Bridge: "br-fc", MTU: 1500, IP: "172.16.0.7"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Do(ctx, privop.CreateTap{Tap: "tap-fc-b", Bridge: "br-fc", MTU: 1500, IP: "172.16.0.2"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Do(ctx, applyFW, nil); err != nil {
		t.Fatal(err)
	}
	if got, want := h.net.fwGuests(), "tap-fc-a 02:fc:ac:10:00:07 172.16.0.7; tap-fc-b 02:fc:ac:10:00:02 172.16.0.2"; got != want {
		t.Errorf("firewall guests = %s, want %s", got, want)
	}
	// A failed create leaves the previous address in place.
	if err := c.Do(ctx, privop.CreateTap{Tap: "tap-fc-a", Bridge: "br-fc", MTU: 1, IP: "172.16.0.9"}, nil); err == nil {
		t.Fatal("mtu 1 accepted")
	}
	if e, _ := h.ledger.Tap("tap-fc-a"); e.IP != "172.16.0.7" {
		t.Errorf("after a refused request tap-fc-a has %q", e.IP)
	}
}

// TestApplyFirewallGuestsFromLedger: the guests the firewall confines come
// from the helper's ledger, with the MAC the helper derives, whatever the
// request says; a tap recorded by an older helper, without an address, is
// listed without one (so it sends nothing).
func TestApplyFirewallGuestsFromLedger(t *testing.T) {
	base := shortDir(t)
	state := filepath.Join(base, "pre")
	if err := PrepareStateDir(state); err != nil {
		t.Fatal(err)
	}
	old := map[string]any{
		"bridges": map[string]any{"br-fc": map[string]any{"created_at": "2026-01-01T00:00:00Z", "gateway": "172.16.0.1/24"}},
		"taps": map[string]any{
			"tap-fc-old": map[string]any{"bridge": "br-fc", "uid": 1, "gid": 1, "created_at": "2026-01-01T00:00:00Z"},
			"tap-fc-bad": map[string]any{"bridge": "br-fc", "uid": 1, "gid": 1, "created_at": "2026-01-01T00:00:00Z", "ip": "172.16.0.5", "mac": "02:00:00:00:00:01"},
		},
	}
	data, _ := json.Marshal(old)
	if err := os.WriteFile(filepath.Join(state, LedgerFile), data, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := OpenLedger(state)
	if err != nil {
		t.Fatal(err)
	}
	h := startServer(t, func(c *Config) { c.Ledger = l })
	h.net.setBridge("br-fc", "gateway=172.16.0.1/24 mtu=1500")
	ctx := ctxT(t)
	if err := h.client.Do(ctx, privop.CreateTap{Tap: "tap-fc-new", Bridge: "br-fc", MTU: 1500, IP: "172.16.0.4"}, nil); err != nil {
		t.Fatal(err)
	}
	op := applyFW
	op.NAT = []string{"172.16.0.4"}
	if err := h.client.Do(ctx, op, nil); err != nil {
		t.Fatal(err)
	}
	want := "tap-fc-bad  -; tap-fc-new 02:fc:ac:10:00:04 172.16.0.4; tap-fc-old  -"
	if got := h.net.fwGuests(); got != want {
		t.Errorf("firewall guests = %q, want %q", got, want)
	}
	h.net.mu.Lock()
	allow := h.net.fw.Allow
	h.net.mu.Unlock()
	if len(allow) != 1 || allow[0].String() != "10.1.2.0/24" {
		t.Errorf("firewall allow = %v", allow)
	}
}
