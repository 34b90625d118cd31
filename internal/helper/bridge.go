package helper

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"

	"banger/internal/installmeta"
	"banger/internal/netdev"
	"banger/internal/privop"
)

// The bridge is the one place where a request chooses an address the whole
// host then uses: the bridge's local address wins for every user's
// connections to that network. So root pins the subnet at install, the
// helper gives a bridge nothing else, and a subnet that takes an address or
// network the host already has is refused each time, since the host's
// networks change (a VPN comes up, a cable is plugged in).

// configureSubnet fills in and checks the pinned subnet.
func configureSubnet(cfg *Config) error {
	if !cfg.Subnet.IsValid() {
		cfg.Subnet = netip.MustParsePrefix(installmeta.DefaultSubnet)
	}
	if _, err := installmeta.ValidSubnet(cfg.Subnet.String()); err != nil {
		return fmt.Errorf("pinned %w", err)
	}
	return nil
}

// pinnedGateway is the bridge address the pinned subnet allows: its first
// host, with its prefix length (as internal/ipam plans it).
func (s *Server) pinnedGateway() netip.Prefix {
	return netip.PrefixFrom(s.cfg.Subnet.Addr().Next(), s.cfg.Subnet.Bits())
}

// checkPinnedSubnet refuses a subnet or gateway other than the pinned ones.
func (s *Server) checkPinnedSubnet(subnet netip.Prefix, gateway netip.Addr) error {
	if subnet != s.cfg.Subnet || gateway != s.pinnedGateway().Addr() {
		return privop.Errorf(privop.CodeForbidden, "subnet %s with gateway %s: root pinned the bridge subnet %s (gateway %s) at install; set network.subnet = %q or reinstall with --subnet",
			subnet, gateway, s.cfg.Subnet, s.pinnedGateway().Addr(), s.cfg.Subnet.String())
	}
	return nil
}

// errForeignBridge is the refusal of a bridge banger did not create.
func errForeignBridge(name string) error {
	return privop.Errorf(privop.CodeForbidden, "bridge %s exists and was not created by banger; remove it or choose another bridge_name", name)
}

// ensureBridge gives a bridge the pinned gateway. A bridge the ledger
// does not know is created, never adopted: the ledger entry is written
// first (intent), then the kernel creates the link exclusively, so a
// crash in between leaves an entry whose bridge the next call makes or
// adopts, and an existing link of the name is refused and its entry
// dropped.
func (s *Server) ensureBridge(ctx context.Context, o privop.EnsureBridge) error {
	gw := o.GatewayPrefix()
	if gw != s.pinnedGateway() {
		return privop.Errorf(privop.CodeForbidden, "gateway %s: root pinned the bridge subnet %s at install, whose gateway is %s; set network.subnet = %q or reinstall with --subnet",
			gw, s.cfg.Subnet, s.pinnedGateway(), s.cfg.Subnet.String())
	}
	host, err := s.cfg.Net.HostPrefixes(ctx)
	if err != nil {
		return netErr("check the bridge subnet", err)
	}
	// The bridge's own address and routes do not count: an unknown
	// bridge of the name is refused below before anything is changed.
	if err := netdev.SubnetConflict(s.cfg.Subnet, o.Bridge, host); err != nil {
		return privop.Errorf(privop.CodeForbidden, "%v: the bridge would take that network from the host; reinstall with another --subnet", err)
	}
	if !s.cfg.Ledger.HasBridge(o.Bridge) {
		if _, err := s.cfg.Ledger.AddBridge(o.Bridge); err != nil {
			return err
		}
		if err := s.cfg.Net.CreateBridge(ctx, o.Bridge, o.MTU); err != nil {
			if rerr := s.cfg.Ledger.RemoveBridge(o.Bridge); rerr != nil {
				err = errors.Join(err, rerr)
			}
			if errors.Is(err, fs.ErrExist) {
				return errForeignBridge(o.Bridge)
			}
			return netErr("create bridge", err)
		}
	}
	if err := s.cfg.Net.EnsureBridge(ctx, o.Bridge, gw, o.MTU); err != nil {
		return netErr("ensure bridge", err)
	}
	return s.cfg.Ledger.SetBridgeGateway(o.Bridge, gw)
}

// deleteBridge removes a bridge the ledger records, once it has no taps;
// any other bridge is left alone.
func (s *Server) deleteBridge(ctx context.Context, o privop.DeleteBridge) error {
	if !s.cfg.Ledger.HasBridge(o.Bridge) {
		return errNotOurs("bridge", o.Bridge)
	}
	if taps := s.cfg.Ledger.TapsOn(o.Bridge); len(taps) > 0 {
		return privop.Errorf(privop.CodeBadRequest, "bridge %s still has taps %v: delete them first", o.Bridge, taps)
	}
	if err := s.cfg.Net.DeleteBridge(ctx, o.Bridge); err != nil {
		return netErr("delete bridge", err)
	}
	return s.cfg.Ledger.RemoveBridge(o.Bridge)
}
