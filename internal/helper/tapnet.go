package helper

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"

	"banger/internal/ipam"
	"banger/internal/privop"
)

// Taps and the firewall meet here. A tap is recorded with the guest address
// bangerd asked for and the MAC the helper derived from it (ipam.MAC, the
// same function bangerd gives the VMM); every apply_firewall confines each
// recorded tap to those two, from the ledger and from nothing the request
// says, so no guest can send as another or as the host.

// createTap records the tap with its guest address, then makes it. The
// address must be a host address of the bridge's recorded subnet other
// than the gateway, and no other tap may have it (or its MAC).
func (s *Server) createTap(ctx context.Context, o privop.CreateTap) error {
	br, ok := s.cfg.Ledger.Bridge(o.Bridge)
	if !ok {
		return errNotOurs("bridge", o.Bridge)
	}
	if e, ok := s.cfg.Ledger.Tap(o.Tap); ok && e.Bridge != o.Bridge {
		return privop.Errorf(privop.CodeBadRequest, "tap %s already exists on bridge %s", o.Tap, e.Bridge)
	}
	ip := o.Addr()
	gw, err := netip.ParsePrefix(br.Gateway)
	if err != nil {
		return privop.Errorf(privop.CodeBadRequest, "bridge %s has no recorded subnet: ensure_bridge it first", o.Bridge)
	}
	if err := guestAddrIn(ip, gw); err != nil {
		return privop.Errorf(privop.CodeBadRequest, "ip: %v", err)
	}
	e := TapEntry{Bridge: o.Bridge, UID: s.cfg.OwnerUID, GID: s.cfg.OwnerGID, IP: ip.String(), MAC: ipam.MAC(ip)}
	prev, existed, err := s.cfg.Ledger.ClaimTap(o.Tap, e)
	if errors.Is(err, errAddrTaken) {
		return privop.Errorf(privop.CodeBadRequest, "%v", err)
	}
	if err != nil {
		return err
	}
	if err := s.cfg.Net.CreateTap(ctx, o.Tap, o.Bridge, s.cfg.OwnerUID, s.cfg.OwnerGID, o.MTU); err != nil {
		if existed {
			_ = s.cfg.Ledger.PutTap(o.Tap, prev)
		} else {
			_ = s.cfg.Ledger.RemoveTap(o.Tap)
		}
		return netErr("create tap", err)
	}
	return nil
}

// guestAddrIn checks that ip is a guest address of the bridge whose
// address is gw: inside its subnet, not the gateway, network or broadcast.
func guestAddrIn(ip netip.Addr, gw netip.Prefix) error {
	subnet := gw.Masked()
	if !ip.Is4() || !subnet.Contains(ip) {
		return errors.New(ip.String() + " is outside the bridge subnet " + subnet.String())
	}
	last := subnet.Addr().As4()
	for i := subnet.Bits(); i < 32; i++ {
		last[i/8] |= 1 << (7 - i%8)
	}
	switch ip {
	case gw.Addr():
		return errors.New(ip.String() + " is the gateway")
	case subnet.Addr():
		return errors.New(ip.String() + " is the network address of " + subnet.String())
	case netip.AddrFrom4(last):
		return errors.New(ip.String() + " is the broadcast address of " + subnet.String())
	}
	return nil
}

// firewallFor builds the firewall for an apply_firewall request: the
// request's policy, and the guests of the bridge's recorded taps.
func (s *Server) firewallFor(spec privop.FirewallSpec) Firewall {
	return Firewall{
		Bridge: spec.Bridge, Subnet: spec.Subnet, Gateway: spec.Gateway, DNSPorts: spec.DNSPorts,
		AllowHost: spec.AllowHost, VMToVM: spec.VMToVM, NAT: spec.NAT, Allow: spec.Allow,
		Guests: s.guestsOn(spec.Bridge, spec.Subnet, spec.Gateway),
	}
}

// guestsOn lists the recorded taps on bridge with their guest addresses. A
// tap recorded without one (by an older helper), or with one that is not a
// guest address of subnet (the subnet changed), is listed without: the
// firewall then drops everything it sends, and the log says why.
func (s *Server) guestsOn(bridge string, subnet netip.Prefix, gateway netip.Addr) []Guest {
	entries := s.cfg.Ledger.TapEntries(bridge)
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	slices.Sort(names)
	out := make([]Guest, 0, len(names))
	for _, n := range names {
		e := entries[n]
		g := Guest{Tap: n}
		ip, ierr := netip.ParseAddr(e.IP)
		mac, merr := net.ParseMAC(e.MAC)
		switch {
		case ierr != nil || merr != nil:
			s.log.Warn("tap has no recorded guest address (ledger from an older helper): the firewall drops all its traffic; restart its VM", "tap", n)
		case guestAddrIn(ip, netip.PrefixFrom(gateway, subnet.Bits())) != nil || mac.String() != ipam.MAC(ip):
			s.log.Warn("tap's recorded guest address does not fit the bridge: the firewall drops all its traffic; restart its VM", "tap", n, "ip", e.IP, "mac", e.MAC)
		default:
			g.IP, g.MAC = ip, mac
		}
		out = append(out, g)
	}
	return out
}
