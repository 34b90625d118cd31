package vm

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"time"

	"banger/internal/api"
	"banger/internal/errdefs"
	"banger/internal/ipam"
	"banger/internal/privop"
	"banger/internal/store"
)

// HelperClient is what the service needs from the root helper: typed ops,
// and a tap handed over as a file.
type HelperClient interface {
	Call(ctx context.Context, op privop.Op) (json.RawMessage, *os.File, error)
	OpenTap(ctx context.Context, tap string) (*os.File, error)
}

// DNS is the .vm zone the service keeps in step with running VMs.
type DNS interface {
	Set(name string, ip netip.Addr) error
	Remove(name string) bool
	AddListener(addr string) (netip.AddrPort, error)
}

// NetworkOptions turn guest networking on.
type NetworkOptions struct {
	Helper  HelperClient
	DNS     DNS // may be nil
	Bridge  string
	Subnet  string
	MTU     int
	VMToVM  bool
	DNSPort uint16 // bangerd's DNS port, reachable by guests on the gateway
	// AllowHost lists extra host services guests may reach ("IP:PORT").
	AllowHost []string
	// Allow lists IPv4 prefixes NATed guests may reach although egress
	// closes them by default (private, CGNAT and link-local ranges).
	Allow []string
	Log   *slog.Logger
}

// network is the service's view of the bridge network.
type network struct {
	NetworkOptions
	plan ipam.Plan

	mu          sync.Mutex // allocation and bridge setup
	bridgeReady bool
}

func newNetwork(o NetworkOptions) (*network, error) {
	plan, err := ipam.New(o.Subnet)
	if err != nil {
		return nil, err
	}
	return &network{NetworkOptions: o, plan: plan}, nil
}

// tapName derives the VM's tap from its id: tap-fc- plus 8 hex digits fits
// IFNAMSIZ, and the prefix is what the helper and firewall recognise.
func tapName(id string) string {
	if len(id) > 8 {
		id = id[:8]
	}
	return "tap-fc-" + id
}

// allocate picks the VM's guest address. The caller holds n.mu.
func (n *network) allocate(vms []store.VM) (netip.Addr, error) {
	var used []netip.Addr
	for _, v := range vms {
		if a, err := netip.ParseAddr(v.GuestIP); err == nil {
			used = append(used, a)
		}
	}
	a, err := n.plan.Allocate(used)
	if err != nil {
		return a, errdefs.Unavailable("%v", err)
	}
	return a, nil
}

func (n *network) ensureBridge(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.bridgeReady {
		return nil
	}
	op := privop.EnsureBridge{Bridge: n.Bridge, Gateway: n.plan.GatewayPrefix().String(), MTU: n.MTU}
	if _, _, err := n.Helper.Call(ctx, op); err != nil {
		return fmt.Errorf("ensure bridge %s: %w", n.Bridge, err)
	}
	if n.DNS != nil && n.DNSPort != 0 {
		addr := netip.AddrPortFrom(n.plan.Gateway, n.DNSPort).String()
		// Without it guests cannot resolve .vm names, but they still boot
		// and reach everything else: a warning, not a failure. (It happens
		// when the helper's network lives in another namespace.)
		if _, err := n.DNS.AddListener(addr); err != nil {
			n.logf("guests cannot reach banger's DNS", "addr", addr, "err", err)
		} else {
			n.routeZone(ctx, addr)
		}
	}
	n.bridgeReady = true
	return nil
}

// routeZone asks the helper to send the host's .vm lookups to bangerd
// through systemd-resolved. Hosts without it keep working: docs/dns.md has
// recipes, and the helper's answer says why nothing was applied.
func (n *network) routeZone(ctx context.Context, server string) {
	raw, _, err := n.Helper.Call(ctx, privop.SyncResolverRouting{Bridge: n.Bridge, Server: server})
	if err != nil {
		n.logf("route .vm through systemd-resolved", "err", err)
		return
	}
	var res privop.ResolverRoutingResult
	if json.Unmarshal(raw, &res) == nil && !res.Applied {
		n.logf("host .vm routing not applied", "reason", res.Reason)
	}
}

func (n *network) logf(msg string, args ...any) {
	if n.Log != nil {
		n.Log.Info(msg, args...)
	}
}

// cmdline is the guest's static addressing for banger.net=; DNS goes to
// the agent's relay, which forwards to bangerd's DNS on the gateway.
func (n *network) cmdline(ip netip.Addr) string {
	s := "banger.net=" + netip.PrefixFrom(ip, n.plan.Subnet.Bits()).String() +
		",gw=" + n.plan.Gateway.String() + ",mtu=" + strconv.Itoa(n.MTU)
	if n.DNSPort != 0 {
		s += ",dns=" + n.plan.Gateway.String() + ",dnsport=" + strconv.Itoa(int(n.DNSPort))
	}
	return s
}

// setupTap creates the VM's tap for the guest at ip and, with open, opens
// it for a VMM that cannot (QEMU). A VMM that opens it by name itself
// (Firecracker) must get it unopened: a single-queue tap takes one
// attachment at a time. The helper lets the tap send only as ip and the MAC
// ipam.MAC derives from it, which is the MAC the VMM must give the guest.
func (n *network) setupTap(ctx context.Context, id string, ip netip.Addr, open bool) (string, *os.File, error) {
	if err := n.ensureBridge(ctx); err != nil {
		return "", nil, err
	}
	tap := tapName(id)
	if _, _, err := n.Helper.Call(ctx, privop.CreateTap{Tap: tap, Bridge: n.Bridge, MTU: n.MTU, IP: ip.String()}); err != nil {
		return "", nil, fmt.Errorf("create tap %s: %w", tap, err)
	}
	if !open {
		return tap, nil, nil
	}
	f, err := n.Helper.OpenTap(ctx, tap)
	if err != nil {
		_, _, _ = n.Helper.Call(context.WithoutCancel(ctx), privop.DeleteTap{Tap: tap})
		return "", nil, fmt.Errorf("open tap %s: %w", tap, err)
	}
	return tap, f, nil
}

func (n *network) deleteTap(ctx context.Context, tap string) error {
	if tap == "" {
		return nil
	}
	if _, _, err := n.Helper.Call(ctx, privop.DeleteTap{Tap: tap}); err != nil {
		return fmt.Errorf("delete tap %s: %w", tap, err)
	}
	return nil
}

// applyFirewall rebuilds banger's rules from the running VMs (and, in the
// helper, from its record of taps, whose guests it confines to their own
// addresses).
func (n *network) applyFirewall(ctx context.Context, vms []store.VM) error {
	if err := n.ensureBridge(ctx); err != nil {
		return err
	}
	op := privop.ApplyFirewall{
		Bridge: n.Bridge, Subnet: n.plan.Subnet.String(), Gateway: n.plan.Gateway.String(),
		VMToVM: n.VMToVM, AllowHost: append([]string{}, n.AllowHost...), Allow: append([]string{}, n.Allow...),
	}
	if n.DNSPort != 0 {
		op.DNSPorts = []int{int(n.DNSPort)}
	}
	for _, v := range vms {
		if v.NAT && v.GuestIP != "" && (v.State == api.StateRunning || v.State == api.StateStarting) {
			op.NAT = append(op.NAT, v.GuestIP)
		}
	}
	if _, _, err := n.Helper.Call(ctx, op); err != nil {
		return fmt.Errorf("apply firewall: %w", err)
	}
	return nil
}

// teardown removes banger's firewall table and the bridge (only when no VM
// runs). Both ops are idempotent in the helper.
func (n *network) teardown(log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if n.DNSPort != 0 {
		if _, _, err := n.Helper.Call(ctx, privop.ClearResolverRouting{Bridge: n.Bridge}); err != nil {
			log.Warn("clear resolver routing", "err", err)
		}
	}
	if _, _, err := n.Helper.Call(ctx, privop.ClearFirewall{}); err != nil {
		log.Warn("clear firewall", "err", err)
	}
	if _, _, err := n.Helper.Call(ctx, privop.DeleteBridge{Bridge: n.Bridge}); err != nil {
		log.Warn("delete bridge", "bridge", n.Bridge, "err", err)
	}
	n.mu.Lock()
	n.bridgeReady = false
	n.mu.Unlock()
}
