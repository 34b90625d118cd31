// Package ipam allocates guest IPv4 addresses on banger's bridge subnet. It
// is pure: the caller passes the addresses in use (from the state store), so
// allocation is deterministic and survives restarts without a separate
// lease file.
package ipam

import (
	"errors"
	"fmt"
	"net/netip"
)

// Plan is a subnet split into the gateway (the bridge address) and the
// range handed to guests.
type Plan struct {
	Subnet  netip.Prefix
	Gateway netip.Addr
}

// ErrExhausted means every guest address is in use.
var ErrExhausted = errors.New("no free guest address")

// New validates cidr: IPv4, a prefix length from 8 to 29 (room for a
// gateway and at least a few guests), normalised to its network address.
// The gateway is the first host address.
func New(cidr string) (Plan, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return Plan{}, fmt.Errorf("parse subnet %q: %w", cidr, err)
	}
	if !p.Addr().Is4() {
		return Plan{}, fmt.Errorf("subnet %q: only IPv4 is supported", cidr)
	}
	if p.Bits() < 8 || p.Bits() > 29 {
		return Plan{}, fmt.Errorf("subnet %q: prefix length must be between 8 and 29", cidr)
	}
	p = p.Masked()
	return Plan{Subnet: p, Gateway: p.Addr().Next()}, nil
}

// GatewayPrefix is the gateway with the subnet's prefix length, as the
// bridge address.
func (p Plan) GatewayPrefix() netip.Prefix {
	return netip.PrefixFrom(p.Gateway, p.Subnet.Bits())
}

// broadcast is the last address of the subnet.
func (p Plan) broadcast() netip.Addr {
	a := p.Subnet.Addr().As4()
	host := uint32(1)<<(32-p.Subnet.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Allocate returns the lowest guest address not in used. Lowest-free keeps
// addresses small and stable: a VM re-created after a delete usually gets
// the address it had.
func (p Plan) Allocate(used []netip.Addr) (netip.Addr, error) {
	taken := make(map[netip.Addr]bool, len(used))
	for _, u := range used {
		taken[u] = true
	}
	bcast := p.broadcast()
	for a := p.Gateway.Next(); a.IsValid() && a.Less(bcast); a = a.Next() {
		if !taken[a] {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("allocate in %s: %w", p.Subnet, ErrExhausted)
}

// Contains reports whether a is a guest address of the plan.
func (p Plan) Contains(a netip.Addr) bool {
	return p.Subnet.Contains(a) && a != p.Subnet.Addr() && a != p.Gateway && a != p.broadcast()
}

// MAC derives a stable, locally administered unicast MAC from a guest
// address, so a VM keeps its MAC as long as it keeps its address.
func MAC(a netip.Addr) string {
	b := a.As4()
	return fmt.Sprintf("02:fc:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3])
}
