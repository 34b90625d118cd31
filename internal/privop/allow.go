package privop

import (
	"fmt"
	"net/netip"
)

// MaxAllow bounds apply_firewall's allow list (and the config's
// network.allow, which feeds it): each entry is one firewall rule.
const MaxAllow = 64

// ParseAllow validates an egress allow list: at most MaxAllow canonical,
// masked IPv4 prefixes ("10.1.2.0/24", "192.168.1.10/32"). A /0 is refused:
// it would open everything, and the host's own ranges with it.
func ParseAllow(list []string) ([]netip.Prefix, error) {
	if len(list) > MaxAllow {
		return nil, fmt.Errorf("allow: %d entries, at most %d", len(list), MaxAllow)
	}
	var out []netip.Prefix
	for _, s := range list {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("allow %q: %w", s, err)
		}
		if !p.Addr().Is4() || p.String() != s || p.Masked() != p {
			return nil, fmt.Errorf("allow %q: want a canonical IPv4 prefix with no host bits, such as 10.1.2.0/24", s)
		}
		if p.Bits() == 0 {
			return nil, fmt.Errorf("allow %q: a /0 would open every destination", s)
		}
		out = append(out, p)
	}
	return out, nil
}
