package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"banger/internal/installmeta"
	"banger/internal/netdev"
)

// A banger may already run on the host (the quick start leaves one: its
// helper on the default socket, its bangerd's DNS on the default
// 127.0.0.1:42069, its bridge on the default subnet in the host
// namespace). Every daemon a test starts gets its own values, chosen at run
// time, so the two never meet.

// freeDNSAddr returns 127.0.0.1:PORT with PORT free for both UDP and TCP
// in the caller's namespace (bangerd's DNS listens on both).
func freeDNSAddr(t *testing.T) string {
	t.Helper()
	for i := 0; i < 50; i++ {
		tl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("pick a DNS port: %v", err)
		}
		addr := tl.Addr().String()
		ul, err := net.ListenPacket("udp", addr)
		tl.Close()
		if err == nil {
			ul.Close()
			return addr
		}
	}
	t.Fatal("pick a DNS port: no port free for both UDP and TCP after 50 tries")
	return ""
}

// freeSubnet returns a private /24 that no address or route of the caller's
// namespace overlaps, so that a bridge address the test's daemon listens
// on can never be another banger's (whose default subnet is
// 172.16.0.0/24).
func freeSubnet(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	host := netdev.New()
	defer host.Close()
	prefixes, err := host.HostPrefixes(ctx)
	if err != nil {
		t.Fatalf("list host prefixes: %v", err)
	}
	for third := 200; third < 250; third++ {
		p := netip.MustParsePrefix("172.31." + strconv.Itoa(third) + ".0/24")
		if netdev.SubnetConflict(p, "", prefixes) == nil {
			return p.String()
		}
	}
	t.Fatal("no free subnet in 172.31.200.0/24..172.31.249.0/24")
	return ""
}

// appendOwnerConfig adds body to the owner's config.toml (creating it),
// and removes the file when t ends.
func appendOwnerConfig(t *testing.T, body string) {
	t.Helper()
	dir := filepath.Join(h.root, "owner", ".config", "banger")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "config.toml")
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Fprint(f, body); err != nil {
		f.Close()
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(p) })
}

// testVMMUIDBase is the first uid of this run's VMM range: past the
// default range (a running install's), different per test process.
func testVMMUIDBase() int {
	return installmeta.DefaultVMMUIDBase + installmeta.VMMUIDCount*(1+os.Getpid()%1000)
}
