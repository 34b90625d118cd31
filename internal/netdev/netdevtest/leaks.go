package netdevtest

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"banger/internal/netdev"
)

// LinkPrefixes are the name prefixes of links banger creates: the bridge
// (br-fc, or br-fc<suffix> when configured) and the per-VM taps.
var LinkPrefixes = []string{"br-fc", "tap-fc"}

// XtablesChainPrefix starts the names of the xtables backend's chains.
const XtablesChainPrefix = "BANGER-"

// LeaksIn lists banger's links (LinkPrefixes), nftables tables (any
// family named netdev.TableName) and chains named XtablesChainPrefix* in
// the network namespace at nsPath, or in the caller's namespace when nsPath
// is "". Entries read "link NAME",
// "nftables FAMILY NAME" and "nftables chain FAMILY TABLE NAME", sorted.
func LeaksIn(nsPath string) ([]string, error) {
	h := &netlink.Handle{}
	var nft *nftables.Conn
	var err error
	if nsPath != "" {
		ns, err := netns.GetFromPath(nsPath)
		if err != nil {
			return nil, fmt.Errorf("open netns %s: %w", nsPath, err)
		}
		defer ns.Close()
		if h, err = netlink.NewHandleAt(ns); err != nil {
			return nil, fmt.Errorf("open netlink in %s: %w", nsPath, err)
		}
		defer h.Close()
		nft, err = nftables.New(nftables.WithNetNSFd(int(ns)))
		if err != nil {
			return nil, fmt.Errorf("open nftables in %s: %w", nsPath, err)
		}
	} else if nft, err = nftables.New(); err != nil {
		return nil, fmt.Errorf("open nftables: %w", err)
	}

	var out []string
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		for _, p := range LinkPrefixes {
			if strings.HasPrefix(l.Attrs().Name, p) {
				out = append(out, "link "+l.Attrs().Name)
				break
			}
		}
	}
	tables, err := nft.ListTables()
	if err != nil {
		return nil, fmt.Errorf("list nftables tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == netdev.TableName {
			out = append(out, fmt.Sprintf("nftables %s %s", familyName(t.Family), t.Name))
		}
	}
	// The xtables backend's chains, when made by iptables-nft, are nftables
	// chains in the tools' own tables (iptables-legacy ones are not visible
	// here).
	chains, err := nft.ListChains()
	if err != nil {
		return nil, fmt.Errorf("list nftables chains: %w", err)
	}
	for _, c := range chains {
		if strings.HasPrefix(c.Name, XtablesChainPrefix) {
			out = append(out, fmt.Sprintf("nftables chain %s %s %s", familyName(c.Table.Family), c.Table.Name, c.Name))
		}
	}
	sort.Strings(out)
	return out, nil
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyBridge:
		return "bridge"
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	}
	return fmt.Sprintf("family%d", f)
}

// AssertNoLeaks fails t if LeaksIn(nsPath) finds anything.
func AssertNoLeaks(t testing.TB, nsPath string) {
	t.Helper()
	leaks, err := LeaksIn(nsPath)
	if err != nil {
		t.Fatalf("leak check: %v", err)
	}
	if len(leaks) > 0 {
		t.Errorf("leaked banger network state in %q: %v", nsPath, leaks)
	}
}

// GuardHostNamespace records banger's links and tables in the caller's own
// namespace now and, when t ends, fails t if any were added: network tests
// must keep everything inside the namespaces they create.
func GuardHostNamespace(t testing.TB) {
	t.Helper()
	before, err := LeaksIn("")
	if err != nil {
		t.Fatalf("host namespace leak baseline: %v", err)
	}
	t.Cleanup(func() {
		after, err := LeaksIn("")
		if err != nil {
			t.Errorf("host namespace leak check: %v", err)
			return
		}
		for _, a := range after {
			if !containsStr(before, a) {
				t.Errorf("test leaked %q into the host namespace", a)
			}
		}
	})
}

func containsStr(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}
