package helper

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"banger/internal/privop"
)

// fakeResolver records every call as text and answers Available from its
// fields.
type fakeResolver struct {
	mu        sync.Mutex
	available bool
	reason    string
	syncErr   error
	calls     []string
}

func (f *fakeResolver) Available(context.Context) (bool, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "available")
	return f.available, f.reason
}

func (f *fakeResolver) Sync(_ context.Context, link string, server netip.AddrPort) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "sync "+link+" "+server.String())
	return f.syncErr
}

func (f *fakeResolver) Revert(_ context.Context, link string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "revert "+link)
	return nil
}

func (f *fakeResolver) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func startWithResolver(t *testing.T, r *fakeResolver) *harness {
	t.Helper()
	return startServer(t, func(c *Config) { c.Resolver = r })
}

func ensureBridge(t *testing.T, h *harness, gateway string) {
	t.Helper()
	if err := h.client.Do(ctxT(t), privop.EnsureBridge{Bridge: "br-fc", Gateway: gateway, MTU: 1500}, nil); err != nil {
		t.Fatal(err)
	}
}

func TestServerResolverSyncThenClear(t *testing.T) {
	fr := &fakeResolver{available: true}
	h := startWithResolver(t, fr)
	ctx := ctxT(t)
	ensureBridge(t, h, "172.16.0.1/24")

	got, err := h.client.SyncResolverRouting(ctx, "br-fc", "172.16.0.1:42069")
	if err != nil || got != (privop.ResolverRoutingResult{Applied: true}) {
		t.Fatalf("sync = %+v, %v; want applied", got, err)
	}
	got, err = h.client.ClearResolverRouting(ctx, "br-fc")
	if err != nil || got != (privop.ResolverRoutingResult{Applied: true}) {
		t.Fatalf("clear = %+v, %v; want applied", got, err)
	}
	want := []string{"available", "sync br-fc 172.16.0.1:42069", "available", "revert br-fc"}
	if calls := fr.Calls(); !slices.Equal(calls, want) {
		t.Errorf("resolver calls:\n%s\nwant:\n%s", strings.Join(calls, "\n"), strings.Join(want, "\n"))
	}

	// The wire answer has the documented shape.
	raw, _, err := h.client.Call(ctx, privop.SyncResolverRouting{Bridge: "br-fc", Server: "172.16.0.1:53"})
	if err != nil || string(raw) != `{"applied":true}` {
		t.Errorf("raw answer %s, %v", raw, err)
	}
}

func TestServerResolverUnavailable(t *testing.T) {
	const reason = "systemd-resolved not available on this host: resolvectl not found; see docs/dns.md"
	fr := &fakeResolver{reason: reason}
	h := startWithResolver(t, fr)
	ctx := ctxT(t)
	ensureBridge(t, h, "172.16.0.1/24")

	for _, op := range []privop.Op{
		privop.SyncResolverRouting{Bridge: "br-fc", Server: "172.16.0.1:42069"},
		privop.ClearResolverRouting{Bridge: "br-fc"},
	} {
		raw, _, err := h.client.Call(ctx, op)
		if err != nil {
			t.Fatalf("%s: %v, want a successful answer", op.Name(), err)
		}
		want := `{"applied":false,"reason":"` + reason + `"}`
		if string(raw) != want {
			t.Errorf("%s answer %s, want %s", op.Name(), raw, want)
		}
	}
	if calls := fr.Calls(); !slices.Equal(calls, []string{"available", "available"}) {
		t.Errorf("an unavailable resolver was used: %v", calls)
	}
}

func TestServerResolverSyncFailureIsAnError(t *testing.T) {
	fr := &fakeResolver{available: true, syncErr: errors.New("resolvectl: Link br-fc not known")}
	h := startWithResolver(t, fr)
	ensureBridge(t, h, "172.16.0.1/24")
	_, err := h.client.SyncResolverRouting(ctxT(t), "br-fc", "172.16.0.1:42069")
	wantCode(t, err, privop.CodeInternal, "sync resolver routing: resolvectl: Link br-fc not known")
}

func TestServerResolverRefuses(t *testing.T) {
	fr := &fakeResolver{available: true}
	h := startWithResolver(t, fr)
	ctx := ctxT(t)

	// A bridge the helper did not create, even with a banger name.
	_, err := h.client.SyncResolverRouting(ctx, "br-fc", "172.16.0.1:42069")
	wantCode(t, err, privop.CodeForbidden, "bridge br-fc was not created by banger")
	_, err = h.client.ClearResolverRouting(ctx, "br-fc-other")
	wantCode(t, err, privop.CodeForbidden, "bridge br-fc-other was not created by banger")

	// A server other than the recorded gateway.
	ensureBridge(t, h, "172.16.0.1/24")
	_, err = h.client.SyncResolverRouting(ctx, "br-fc", "172.16.0.2:42069")
	wantCode(t, err, privop.CodeForbidden, "not on bridge br-fc's gateway 172.16.0.1")
	_, err = h.client.SyncResolverRouting(ctx, "br-fc", "10.0.0.1:42069")
	wantCode(t, err, privop.CodeForbidden, "gateway 172.16.0.1")

	// Invalid requests never reach the server's logic (validated on the
	// wire): public address, no port, IPv6, foreign bridge names.
	tests := []struct{ body, msg string }{
		{`{"op":"sync_resolver_routing","args":{"bridge":"br-fc","server":"8.8.8.8:53"}}`, "private range"},
		{`{"op":"sync_resolver_routing","args":{"bridge":"br-fc","server":"172.16.0.1"}}`, "not an ip:port"},
		{`{"op":"sync_resolver_routing","args":{"bridge":"br-fc","server":"172.16.0.1:0"}}`, "port 0"},
		{`{"op":"sync_resolver_routing","args":{"bridge":"br-fc","server":"172.16.0.1:70000"}}`, "server"},
		{`{"op":"sync_resolver_routing","args":{"bridge":"br-fc","server":"[fd00::1]:53"}}`, "canonical IPv4"},
		{`{"op":"sync_resolver_routing","args":{"bridge":"eth0","server":"172.16.0.1:53"}}`, "not a banger bridge"},
		{`{"op":"sync_resolver_routing","args":{"bridge":"br-fc","server":"172.16.0.1:53","domain":"~."}}`, "unknown field"},
		{`{"op":"clear_resolver_routing","args":{"bridge":"docker0"}}`, "not a banger bridge"},
	}
	for _, tc := range tests {
		wantCode(t, rawCall(t, h.sock, privop.Frame([]byte(tc.body))), privop.CodeBadRequest, tc.msg)
	}
	if calls := fr.Calls(); len(calls) != 0 {
		t.Errorf("refused requests reached the resolver: %v", calls)
	}
}

// A ledger written before gateways were recorded still works: only the
// private-range check applies to the server.
func TestServerResolverLegacyLedger(t *testing.T) {
	base := shortDir(t)
	state := filepath.Join(base, "state")
	if err := PrepareStateDir(state); err != nil {
		t.Fatal(err)
	}
	legacy := `{"bridges":{"br-fc":{"created_at":"2025-01-01T00:00:00Z"}},"taps":{}}`
	if err := os.WriteFile(filepath.Join(state, LedgerFile), []byte(legacy), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := OpenLedger(state)
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := l.Bridge("br-fc"); !ok || e.Gateway != "" {
		t.Fatalf("legacy entry = %+v, %v", e, ok)
	}
	fr := &fakeResolver{available: true}
	h := startServer(t, func(c *Config) { c.Ledger = l; c.Resolver = fr })
	got, err := h.client.SyncResolverRouting(ctxT(t), "br-fc", "10.9.0.1:5353")
	if err != nil || !got.Applied {
		t.Fatalf("sync on legacy ledger = %+v, %v", got, err)
	}
	if calls := fr.Calls(); !slices.Contains(calls, "sync br-fc 10.9.0.1:5353") {
		t.Errorf("calls %v", calls)
	}
}

func TestLedgerRecordsGateway(t *testing.T) {
	// A subnet pinned apart from the default (a reinstall with --subnet).
	h := startServer(t, func(c *Config) { c.Resolver = &fakeResolver{}; c.Subnet = netip.MustParsePrefix("172.16.5.0/24") })
	ensureBridge(t, h, "172.16.5.1/24")
	l, err := OpenLedger(h.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := l.Bridge("br-fc"); !ok || e.Gateway != "172.16.5.1/24" {
		t.Errorf("reopened ledger entry = %+v, %v; want gateway 172.16.5.1/24", e, ok)
	}
	if err := l.SetBridgeGateway("br-fc-x", netip.MustParsePrefix("10.0.0.1/24")); err == nil {
		t.Error("SetBridgeGateway recorded a bridge missing from the ledger")
	}
}
