// Package netdevtest holds test doubles and checks for banger's host
// networking: a stateful in-memory fake of netdev.Host for tests that must
// not touch the kernel, and a leak check that lists banger's links and
// nftables tables in a network namespace.
package netdevtest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sort"
	"sync"

	"banger/internal/netdev"
)

// Bridge is the fake's record of a bridge.
type Bridge struct {
	Gateway netip.Prefix
	MTU     int
}

// Tap is the fake's record of a tap.
type Tap struct {
	Bridge   string
	UID, GID int
	MTU      int
}

// Fake is an in-memory stand-in for netdev.Host with the same semantics for
// the cases callers depend on: idempotent create, tolerant delete, refusal of
// a tap on a missing bridge or with another owner, and one queue per tap.
// Its zero value is not usable; call NewFake.
type Fake struct {
	mu       sync.Mutex
	bridges  map[string]Bridge
	taps     map[string]Tap
	open     map[string]*os.File
	firewall *netdev.Firewall
	fail     map[string]error
	calls    []string
}

// NewFake returns an empty fake host.
func NewFake() *Fake {
	return &Fake{
		bridges: map[string]Bridge{},
		taps:    map[string]Tap{},
		open:    map[string]*os.File{},
		fail:    map[string]error{},
	}
}

// FailNext makes the next call of method (e.g. "CreateTap") return err
// without changing state.
func (f *Fake) FailNext(method string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[method] = err
}

// Calls returns the methods called so far, in order, as "Method name".
func (f *Fake) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *Fake) enter(ctx context.Context, method, arg string) error {
	f.calls = append(f.calls, method+" "+arg)
	if err := ctx.Err(); err != nil {
		return err
	}
	if err, ok := f.fail[method]; ok {
		delete(f.fail, method)
		return err
	}
	return nil
}

// EnsureBridge records the bridge.
func (f *Fake) EnsureBridge(ctx context.Context, name string, gateway netip.Prefix, mtu int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter(ctx, "EnsureBridge", name); err != nil {
		return fmt.Errorf("ensure bridge %s: %w", name, err)
	}
	if _, isTap := f.taps[name]; isTap {
		return fmt.Errorf("ensure bridge %s: link exists but is a tap", name)
	}
	f.bridges[name] = Bridge{Gateway: gateway, MTU: mtu}
	return nil
}

// DeleteBridge forgets the bridge; its taps stay, detached, as in the kernel.
func (f *Fake) DeleteBridge(ctx context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter(ctx, "DeleteBridge", name); err != nil {
		return fmt.Errorf("delete bridge %s: %w", name, err)
	}
	if _, isTap := f.taps[name]; isTap {
		return fmt.Errorf("delete bridge %s: link is a tap, not a bridge", name)
	}
	delete(f.bridges, name)
	for n, t := range f.taps {
		if t.Bridge == name {
			t.Bridge = ""
			f.taps[n] = t
		}
	}
	return nil
}

// CreateTap records the tap.
func (f *Fake) CreateTap(ctx context.Context, name, bridge string, uid, gid, mtu int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter(ctx, "CreateTap", name); err != nil {
		return fmt.Errorf("create tap %s: %w", name, err)
	}
	if _, ok := f.bridges[bridge]; !ok {
		return fmt.Errorf("create tap %s: bridge %s does not exist", name, bridge)
	}
	if _, isBridge := f.bridges[name]; isBridge {
		return fmt.Errorf("create tap %s: link exists but is a bridge, not a tap", name)
	}
	if t, ok := f.taps[name]; ok {
		if t.UID != uid || (gid >= 0 && t.GID != gid) {
			return fmt.Errorf("create tap %s: tap exists with owner %d:%d, want %d:%d", name, t.UID, t.GID, uid, gid)
		}
		if t.Bridge != "" && t.Bridge != bridge {
			return fmt.Errorf("create tap %s: tap exists on bridge %s", name, t.Bridge)
		}
	}
	f.taps[name] = Tap{Bridge: bridge, UID: uid, GID: gid, MTU: mtu}
	return nil
}

// DeleteTap forgets the tap.
func (f *Fake) DeleteTap(ctx context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter(ctx, "DeleteTap", name); err != nil {
		return fmt.Errorf("delete tap %s: %w", name, err)
	}
	if _, isBridge := f.bridges[name]; isBridge {
		return fmt.Errorf("delete tap %s: link is a bridge, not a tap", name)
	}
	delete(f.taps, name)
	delete(f.open, name)
	return nil
}

// OpenTap returns a stand-in queue (the read end of a pipe whose write end
// is already closed). Like a real single-queue tap, a second open while the
// first file is still open fails.
func (f *Fake) OpenTap(ctx context.Context, name string) (*os.File, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter(ctx, "OpenTap", name); err != nil {
		return nil, fmt.Errorf("open tap %s: %w", name, err)
	}
	if _, ok := f.taps[name]; !ok {
		return nil, fmt.Errorf("open tap %s: %w", name, os.ErrNotExist)
	}
	if prev, ok := f.open[name]; ok {
		// A closed file reports a negative descriptor: the queue is free.
		if prev.Fd() != ^uintptr(0) {
			return nil, fmt.Errorf("open tap %s: device or resource busy", name)
		}
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("open tap %s: %w", name, err)
	}
	w.Close()
	f.open[name] = r
	return r, nil
}

// SetTapOwner gives an existing tap to uid:gid; no queue may be open.
func (f *Fake) SetTapOwner(ctx context.Context, name string, uid, gid int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter(ctx, "SetTapOwner", name); err != nil {
		return fmt.Errorf("set owner of tap %s: %w", name, err)
	}
	t, ok := f.taps[name]
	if !ok {
		return fmt.Errorf("set owner of tap %s: %w", name, os.ErrNotExist)
	}
	if prev, ok := f.open[name]; ok && prev.Fd() != ^uintptr(0) {
		return fmt.Errorf("set owner of tap %s: device or resource busy", name)
	}
	t.UID, t.GID = uid, gid
	f.taps[name] = t
	return nil
}

// ApplyFirewall records fw after checking it builds.
func (f *Fake) ApplyFirewall(ctx context.Context, fw netdev.Firewall) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter(ctx, "ApplyFirewall", fw.Bridge); err != nil {
		return fmt.Errorf("apply firewall for bridge %s: %w", fw.Bridge, err)
	}
	if _, err := netdev.Rules(fw); err != nil {
		return fmt.Errorf("apply firewall for bridge %s: %w", fw.Bridge, err)
	}
	c := fw
	c.DNSPorts = slices.Clone(fw.DNSPorts)
	c.AllowHost = slices.Clone(fw.AllowHost)
	c.NAT = slices.Clone(fw.NAT)
	f.firewall = &c
	return nil
}

// ClearFirewall forgets the firewall.
func (f *Fake) ClearFirewall(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter(ctx, "ClearFirewall", ""); err != nil {
		return fmt.Errorf("clear firewall: %w", err)
	}
	f.firewall = nil
	return nil
}

// Bridges returns a copy of the bridges by name.
func (f *Fake) Bridges() map[string]Bridge {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]Bridge, len(f.bridges))
	for k, v := range f.bridges {
		out[k] = v
	}
	return out
}

// Taps returns a copy of the taps by name.
func (f *Fake) Taps() map[string]Tap {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]Tap, len(f.taps))
	for k, v := range f.taps {
		out[k] = v
	}
	return out
}

// Firewall returns the applied firewall, or false if none is.
func (f *Fake) Firewall() (netdev.Firewall, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.firewall == nil {
		return netdev.Firewall{}, false
	}
	return *f.firewall, true
}

// Leaks lists what the fake still holds, in the same form as LeaksIn, so a
// test can assert a teardown left nothing behind.
func (f *Fake) Leaks() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for n := range f.bridges {
		out = append(out, "link "+n)
	}
	for n := range f.taps {
		out = append(out, "link "+n)
	}
	if f.firewall != nil {
		out = append(out, "nftables inet "+netdev.TableName)
		if !f.firewall.VMToVM {
			out = append(out, "nftables bridge "+netdev.TableName)
		}
	}
	sort.Strings(out)
	return out
}

// ErrInjected is a convenient error for FailNext.
var ErrInjected = errors.New("injected failure")
