package helper

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"banger/internal/netdev"
)

// fakeNet is a stateful Net: it keeps bridges, taps and the firewall in
// memory, records every call, and renders its state as text for golden
// comparisons.
type fakeNet struct {
	mu      sync.Mutex
	dir     string // where OpenTap's stand-in files live
	calls   []string
	bridges map[string]string // name -> gateway/mtu
	taps    map[string]string // name -> bridge/owner/mtu
	fw      *Firewall
	host    []netdev.HostPrefix // the host's other addresses and routes
}

func newFakeNet(dir string) *fakeNet {
	return &fakeNet{dir: dir, bridges: map[string]string{}, taps: map[string]string{}}
}

// setBridge puts a bridge on the fake host, as someone else (or a helper
// that died before recording it) would have; the server may be serving.
func (f *fakeNet) setBridge(name, desc string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bridges[name] = desc
}

func (f *fakeNet) record(format string, args ...any) {
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

func (f *fakeNet) EnsureBridge(_ context.Context, name string, gw netip.Prefix, mtu int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("EnsureBridge %s %s %d", name, gw, mtu)
	f.bridges[name] = fmt.Sprintf("gateway=%s mtu=%d", gw, mtu)
	return nil
}

func (f *fakeNet) DeleteBridge(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("DeleteBridge %s", name)
	delete(f.bridges, name)
	return nil
}

func (f *fakeNet) CreateTap(_ context.Context, name, bridge string, uid, gid, mtu int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("CreateTap %s %s %d:%d %d", name, bridge, uid, gid, mtu)
	if _, ok := f.bridges[bridge]; !ok {
		return fmt.Errorf("bridge %s does not exist", bridge)
	}
	f.taps[name] = fmt.Sprintf("bridge=%s owner=%d:%d mtu=%d", bridge, uid, gid, mtu)
	return nil
}

func (f *fakeNet) DeleteTap(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("DeleteTap %s", name)
	delete(f.taps, name)
	return nil
}

func (f *fakeNet) OpenTap(_ context.Context, name string) (*os.File, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("OpenTap %s", name)
	if _, ok := f.taps[name]; !ok {
		return nil, fmt.Errorf("tap %s: %w", name, os.ErrNotExist)
	}
	p := filepath.Join(f.dir, name)
	if err := os.WriteFile(p, []byte("queue of "+name), 0o600); err != nil {
		return nil, err
	}
	return os.Open(p)
}

func (f *fakeNet) SetTapOwner(_ context.Context, name string, uid, gid int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("SetTapOwner %s %d:%d", name, uid, gid)
	t, ok := f.taps[name]
	if !ok {
		return fmt.Errorf("tap %s: %w", name, os.ErrNotExist)
	}
	before, after, _ := strings.Cut(t, " owner=")
	_, mtu, _ := strings.Cut(after, " ")
	f.taps[name] = fmt.Sprintf("%s owner=%d:%d %s", before, uid, gid, mtu)
	return nil
}

func (f *fakeNet) ApplyFirewall(_ context.Context, fw Firewall) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("ApplyFirewall %s %s", fw.Bridge, fw.Subnet)
	f.fw = &fw
	return nil
}

func (f *fakeNet) ClearFirewall(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("ClearFirewall")
	f.fw = nil
	return nil
}

// addForeignTap plants a tap the helper did not create.
func (f *fakeNet) addForeignTap(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.taps[name] = "bridge=br-fc owner=0:0 mtu=1500 (foreign)"
}

func (f *fakeNet) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// Render is the fake's state as sorted text.
func (f *fakeNet) Render() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var lines []string
	for n, v := range f.bridges {
		lines = append(lines, "bridge "+n+" "+v)
	}
	for n, v := range f.taps {
		lines = append(lines, "tap "+n+" "+v)
	}
	slices.Sort(lines)
	if f.fw != nil {
		lines = append(lines, fmt.Sprintf("firewall bridge=%s subnet=%s gateway=%s dns=%v allow=%v vm2vm=%v nat=%v",
			f.fw.Bridge, f.fw.Subnet, f.fw.Gateway, f.fw.DNSPorts, f.fw.AllowHost, f.fw.VMToVM, f.fw.NAT))
	}
	return strings.Join(lines, "\n") + "\n"
}
