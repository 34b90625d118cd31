package helper

import (
	"context"
	"fmt"
	"net/netip"

	"banger/internal/privop"
)

// Resolver routes the host's lookups of banger's DNS zone to bangerd on one
// link. internal/resolved implements it with systemd-resolved's
// resolvectl; tests use a fake. Link names passed here have been validated
// and checked against the ledger.
type Resolver interface {
	// Available reports whether routing can be applied on this host and,
	// if not, a reason meant for the owner.
	Available(ctx context.Context) (bool, string)
	// Sync routes the zone on link to server. Idempotent.
	Sync(ctx context.Context, link string, server netip.AddrPort) error
	// Revert drops the link's resolver settings.
	Revert(ctx context.Context, link string) error
}

// syncResolverRouting checks that o names a ledger bridge and its recorded
// gateway, then routes the zone if the host's resolver allows it.
func (s *Server) syncResolverRouting(ctx context.Context, o privop.SyncResolverRouting) (privop.ResolverRoutingResult, error) {
	e, ok := s.cfg.Ledger.Bridge(o.Bridge)
	if !ok {
		return privop.ResolverRoutingResult{}, errNotOurs("bridge", o.Bridge)
	}
	server := o.ServerAddrPort()
	if e.Gateway != "" {
		gw, err := netip.ParsePrefix(e.Gateway)
		if err != nil {
			return privop.ResolverRoutingResult{}, fmt.Errorf("read ledger gateway of %s: %w", o.Bridge, err)
		}
		if gw.Addr() != server.Addr() {
			return privop.ResolverRoutingResult{}, privop.Errorf(privop.CodeForbidden,
				"server %s is not on bridge %s's gateway %s", server, o.Bridge, gw.Addr())
		}
	}
	if ok, reason := s.cfg.Resolver.Available(ctx); !ok {
		return privop.ResolverRoutingResult{Reason: reason}, nil
	}
	if err := s.cfg.Resolver.Sync(ctx, o.Bridge, server); err != nil {
		return privop.ResolverRoutingResult{}, fmt.Errorf("sync resolver routing: %w", err)
	}
	return privop.ResolverRoutingResult{Applied: true}, nil
}

// clearResolverRouting reverts the resolver settings of a ledger bridge.
func (s *Server) clearResolverRouting(ctx context.Context, o privop.ClearResolverRouting) (privop.ResolverRoutingResult, error) {
	if !s.cfg.Ledger.HasBridge(o.Bridge) {
		return privop.ResolverRoutingResult{}, errNotOurs("bridge", o.Bridge)
	}
	if ok, reason := s.cfg.Resolver.Available(ctx); !ok {
		return privop.ResolverRoutingResult{Reason: reason}, nil
	}
	if err := s.cfg.Resolver.Revert(ctx, o.Bridge); err != nil {
		return privop.ResolverRoutingResult{}, fmt.Errorf("clear resolver routing: %w", err)
	}
	return privop.ResolverRoutingResult{Applied: true}, nil
}
