package helper

import (
	"context"
	"net/netip"
	"os"

	"banger/internal/netdev"
)

// Net is what the helper needs from the host network stack. internal/netdev
// implements it against the kernel (netlink, nftables); tests use a stateful
// fake. Every name passed here has already been validated by the op's
// Validate and checked against the helper's ledger.
type Net interface {
	// EnsureBridge creates the bridge if missing, gives it gateway (the
	// bridge address with the subnet's prefix length) and mtu, and sets it up.
	// Idempotent.
	EnsureBridge(ctx context.Context, name string, gateway netip.Prefix, mtu int) error
	// DeleteBridge removes the bridge; a missing bridge is not an error.
	DeleteBridge(ctx context.Context, name string) error
	// CreateBridge creates a new bridge; an existing link of the name is
	// never adopted: the error wraps fs.ErrExist.
	CreateBridge(ctx context.Context, name string, mtu int) error
	// HostPrefixes lists the IPv4 addresses and routes of the host (the
	// helper's namespace), for the bridge subnet's overlap check.
	HostPrefixes(ctx context.Context) ([]netdev.HostPrefix, error)
	// CreateTap creates a persistent tap owned by uid:gid, enslaved to
	// bridge, with mtu, and sets it up. A tap that already exists with the
	// same owner and bridge is not an error.
	CreateTap(ctx context.Context, name, bridge string, uid, gid, mtu int) error
	// DeleteTap removes a tap; a missing tap is not an error.
	DeleteTap(ctx context.Context, name string) error
	// OpenTap opens the tap's queue (TUNSETIFF with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR)
	// and returns the file, to be passed to an unprivileged VMM.
	OpenTap(ctx context.Context, name string) (*os.File, error)
	// SetTapOwner gives an existing tap to uid:gid, for a VMM that opens
	// it by name as them (firecracker, as its VM's uid).
	SetTapOwner(ctx context.Context, name string, uid, gid int) error
	// ApplyFirewall replaces banger's whole nftables table with rules built
	// from fw (guest egress filter and per-VM NAT). Idempotent.
	ApplyFirewall(ctx context.Context, fw Firewall) error
	// ClearFirewall deletes banger's table; a missing table is not an error.
	ClearFirewall(ctx context.Context) error
}

// Firewall is the desired state of banger's nftables tables. It is defined
// in netdev and aliased here: Go matches interface methods by identical
// parameter types, so netdev.Host can satisfy Net only if both packages
// name the same type, and netdev must not import the helper (the helper
// imports netdev).
type Firewall = netdev.Firewall

// Guest is one tap of Firewall.Guests, aliased like Firewall.
type Guest = netdev.Guest
