package helper

import (
	"context"
	"fmt"
	"io/fs"
	"slices"

	"banger/internal/netdev"
)

// CreateBridge makes a bridge without an address; an existing link of the
// name (bridge or tap) is refused with fs.ErrExist, as the kernel's
// exclusive create is.
func (f *fakeNet) CreateBridge(_ context.Context, name string, mtu int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("CreateBridge %s %d", name, mtu)
	_, isBridge := f.bridges[name]
	_, isTap := f.taps[name]
	if isBridge || isTap {
		return fmt.Errorf("create bridge %s: %w", name, fs.ErrExist)
	}
	f.bridges[name] = fmt.Sprintf("gateway=none mtu=%d", mtu)
	return nil
}

// HostPrefixes returns the host prefixes the test set.
func (f *fakeNet) HostPrefixes(context.Context) ([]netdev.HostPrefix, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.host), nil
}
