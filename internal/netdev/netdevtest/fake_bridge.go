package netdevtest

import (
	"context"
	"fmt"
	"io/fs"

	"banger/internal/netdev"
)

// CreateBridge records a new bridge without an address; an existing link
// of the name is refused with fs.ErrExist, as the kernel's exclusive
// create is.
func (f *Fake) CreateBridge(ctx context.Context, name string, mtu int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter(ctx, "CreateBridge", name); err != nil {
		return fmt.Errorf("create bridge %s: %w", name, err)
	}
	_, isBridge := f.bridges[name]
	_, isTap := f.taps[name]
	if isBridge || isTap {
		return fmt.Errorf("create bridge %s: %w", name, fs.ErrExist)
	}
	f.bridges[name] = Bridge{MTU: mtu}
	return nil
}

// HostPrefixes lists the gateways of the fake's bridges: the fake host has
// no other addresses or routes.
func (f *Fake) HostPrefixes(ctx context.Context) ([]netdev.HostPrefix, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter(ctx, "HostPrefixes", ""); err != nil {
		return nil, fmt.Errorf("list host addresses: %w", err)
	}
	var out []netdev.HostPrefix
	for name, b := range f.bridges {
		if b.Gateway.IsValid() {
			out = append(out, netdev.HostPrefix{Prefix: b.Gateway, Dev: name})
		}
	}
	return out, nil
}
