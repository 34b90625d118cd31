package privop

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// The helper's ops. Each is a plain struct whose JSON form is the "args" of
// a request; Name is the "op". None carries an owner, a uid or an argv: the
// helper takes identity from the kernel and owner from its install metadata.

// Ping asks the helper who it is. It changes nothing.
type Ping struct{}

// PingResult is Ping's answer.
type PingResult struct {
	Version  string   `json:"version"`
	OwnerUID int      `json:"owner_uid"`
	PeerUID  int      `json:"peer_uid"` // the caller, as the kernel reported it
	Ops      []string `json:"ops"`
	// Snapshots says whether the dm snapshot ops can work on this host;
	// when not, SnapshotsOff says why (no device-mapper in the kernel,
	// say).
	Snapshots    bool   `json:"snapshots"`
	SnapshotsOff string `json:"snapshots_off,omitempty"`
	// SnapshotsActive counts the journal's snapshots; SnapshotsStuck lists
	// those not active (faulty, or removing and still busy), each "vm id:
	// state: error", which block their VM's next start until removed.
	SnapshotsActive int      `json:"snapshots_active,omitempty"`
	SnapshotsStuck  []string `json:"snapshots_stuck,omitempty"`
	// Firecracker and Jailer are the binaries the install pinned (the
	// only ones the helper runs); FirecrackerOff says why they cannot
	// run (missing, setuid, not root's alone), empty when they can.
	Firecracker    string `json:"firecracker,omitempty"`
	Jailer         string `json:"jailer,omitempty"`
	FirecrackerOff string `json:"firecracker_off,omitempty"`
	// Subnet is the bridge subnet root pinned at install
	// ("172.16.0.0/24"): ensure_bridge and apply_firewall take no other,
	// so bangerd uses it whatever the owner's network.subnet says.
	Subnet string `json:"subnet,omitempty"`
	// Taps lists the taps in the helper's ledger, sorted, so a bangerd
	// that starts after a crash can delete those no VM of its holds.
	// Names only; the caller checks each with ValidTapName.
	Taps []string `json:"taps,omitempty"`
}

// Name implements Op.
func (Ping) Name() string { return "ping" }

// Validate implements Op.
func (Ping) Validate() error { return nil }

// EnsureBridge creates banger's bridge if missing, with gateway as its
// address (e.g. "172.16.0.1/24") and mtu, and records it in the ledger.
// The helper takes only the first host of the subnet root pinned, refuses
// a subnet the host already uses, and never adopts a bridge it did not
// create.
type EnsureBridge struct {
	Bridge  string `json:"bridge"`
	Gateway string `json:"gateway"`
	MTU     int    `json:"mtu"`
}

// Name implements Op.
func (EnsureBridge) Name() string { return "ensure_bridge" }

// Validate implements Op.
func (o EnsureBridge) Validate() error {
	if err := ValidBridgeName(o.Bridge); err != nil {
		return err
	}
	p, err := ParsePrivatePrefix(o.Gateway)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	if err := hostInPrefix(p.Addr(), p); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	return ValidMTU(o.MTU)
}

// GatewayPrefix returns the parsed gateway; call it after Validate.
func (o EnsureBridge) GatewayPrefix() netip.Prefix {
	p, _ := netip.ParsePrefix(o.Gateway)
	return p
}

// DeleteBridge removes a bridge the helper created.
type DeleteBridge struct {
	Bridge string `json:"bridge"`
}

// Name implements Op.
func (DeleteBridge) Name() string { return "delete_bridge" }

// Validate implements Op.
func (o DeleteBridge) Validate() error { return ValidBridgeName(o.Bridge) }

// CreateTap creates a tap enslaved to bridge, owned by the helper's
// registered owner. IP is the guest's IPv4 address behind the tap: the
// helper checks it against the bridge's subnet and the other taps, derives
// the guest's MAC from it itself, and lets the tap send frames with that
// MAC and address only.
type CreateTap struct {
	Tap    string `json:"tap"`
	Bridge string `json:"bridge"`
	MTU    int    `json:"mtu"`
	IP     string `json:"ip"`
}

// Name implements Op.
func (CreateTap) Name() string { return "create_tap" }

// Validate implements Op.
func (o CreateTap) Validate() error {
	if err := ValidTapName(o.Tap); err != nil {
		return err
	}
	if err := ValidBridgeName(o.Bridge); err != nil {
		return err
	}
	if _, err := parseAddr4(o.IP); err != nil {
		return fmt.Errorf("ip: %w", err)
	}
	return ValidMTU(o.MTU)
}

// Addr returns the parsed guest address; call it after Validate.
func (o CreateTap) Addr() netip.Addr {
	a, _ := netip.ParseAddr(o.IP)
	return a
}

// DeleteTap removes a tap the helper created.
type DeleteTap struct {
	Tap string `json:"tap"`
}

// Name implements Op.
func (DeleteTap) Name() string { return "delete_tap" }

// Validate implements Op.
func (o DeleteTap) Validate() error { return ValidTapName(o.Tap) }

// OpenTap opens a tap the helper created; the answer carries the queue's fd
// (SCM_RIGHTS), for an unprivileged VMM (QEMU's -netdev tap,fd=N).
type OpenTap struct {
	Tap string `json:"tap"`
}

// OpenTapResult is OpenTap's answer; the fd travels beside it.
type OpenTapResult struct {
	Tap string `json:"tap"`
}

// Name implements Op.
func (OpenTap) Name() string { return "open_tap" }

// Validate implements Op.
func (o OpenTap) Validate() error { return ValidTapName(o.Tap) }

// ApplyFirewall replaces banger's nftables table. It mirrors
// helper.Firewall with textual addresses.
type ApplyFirewall struct {
	Bridge    string   `json:"bridge"`
	Subnet    string   `json:"subnet"`     // e.g. "172.16.0.0/24"
	Gateway   string   `json:"gateway"`    // the bridge address, inside Subnet
	DNSPorts  []int    `json:"dns_ports"`  // ports on Gateway guests may reach
	AllowHost []string `json:"allow_host"` // "addr:port" host services guests may reach
	VMToVM    bool     `json:"vm_to_vm"`
	NAT       []string `json:"nat"` // guest addresses (inside Subnet) to masquerade
	// Allow lists IPv4 destinations ("10.1.2.0/24") NATed guests may reach
	// although they lie in a range egress closes by default (private,
	// CGNAT, link-local). Metadata addresses stay closed whatever it says.
	Allow []string `json:"allow,omitempty"`
}

// FirewallSpec is ApplyFirewall parsed; produced by Parse.
type FirewallSpec struct {
	Bridge    string
	Subnet    netip.Prefix
	Gateway   netip.Addr
	DNSPorts  []uint16
	AllowHost []netip.AddrPort
	VMToVM    bool
	NAT       []netip.Addr
	Allow     []netip.Prefix
}

// Name implements Op.
func (ApplyFirewall) Name() string { return "apply_firewall" }

// Validate implements Op.
func (o ApplyFirewall) Validate() error {
	_, err := o.Parse()
	return err
}

// Parse validates every field and returns the typed spec.
func (o ApplyFirewall) Parse() (FirewallSpec, error) {
	var s FirewallSpec
	if err := ValidBridgeName(o.Bridge); err != nil {
		return s, err
	}
	s.Bridge = o.Bridge
	subnet, err := ParsePrivatePrefix(o.Subnet)
	if err != nil {
		return s, fmt.Errorf("subnet: %w", err)
	}
	if subnet != subnet.Masked() {
		return s, fmt.Errorf("subnet %q: host bits set (want %s)", o.Subnet, subnet.Masked())
	}
	s.Subnet = subnet
	if s.Gateway, err = parseAddr4(o.Gateway); err != nil {
		return s, fmt.Errorf("gateway: %w", err)
	}
	if err := hostInPrefix(s.Gateway, subnet); err != nil {
		return s, fmt.Errorf("gateway: %w", err)
	}
	if len(o.DNSPorts) > 8 || len(o.AllowHost) > 64 || len(o.NAT) > maxListLen {
		return s, errors.New("too many entries (at most 8 dns_ports, 64 allow_host, 4096 nat)")
	}
	for _, p := range o.DNSPorts {
		if err := ValidPort(p); err != nil {
			return s, fmt.Errorf("dns_ports: %w", err)
		}
		s.DNSPorts = append(s.DNSPorts, uint16(p))
	}
	for _, h := range o.AllowHost {
		ap, err := netip.ParseAddrPort(h)
		if err != nil {
			return s, fmt.Errorf("allow_host %q: %w", h, err)
		}
		a := ap.Addr()
		if !a.Is4() || ap.String() != h {
			return s, fmt.Errorf("allow_host %q: want a canonical IPv4 addr:port", h)
		}
		if a.IsUnspecified() || a.IsMulticast() || a.IsLinkLocalUnicast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			return s, fmt.Errorf("allow_host %q: unspecified, multicast, broadcast and link-local (metadata) addresses are never allowed", h)
		}
		if ap.Port() == 0 {
			return s, fmt.Errorf("allow_host %q: port 0: want 1..65535", h)
		}
		s.AllowHost = append(s.AllowHost, ap)
	}
	s.VMToVM = o.VMToVM
	for _, n := range o.NAT {
		a, err := parseAddr4(n)
		if err != nil {
			return s, fmt.Errorf("nat: %w", err)
		}
		if err := hostInPrefix(a, subnet); err != nil {
			return s, fmt.Errorf("nat: %w", err)
		}
		if a == s.Gateway {
			return s, fmt.Errorf("nat: %s is the gateway", a)
		}
		s.NAT = append(s.NAT, a)
	}
	if s.Allow, err = ParseAllow(o.Allow); err != nil {
		return s, err
	}
	return s, nil
}

// ClearFirewall deletes banger's nftables table.
type ClearFirewall struct{}

// Name implements Op.
func (ClearFirewall) Name() string { return "clear_firewall" }

// Validate implements Op.
func (ClearFirewall) Validate() error { return nil }

// SyncResolverRouting routes the DNS zone "vm" of the host through
// systemd-resolved to Server, on bridge's link: bangerd asks for it right
// after ensure_bridge. Server is bangerd's DNS listener on the bridge,
// "IP:PORT" (e.g. "172.16.0.1:42069"); the helper refuses an IP other than
// the gateway it recorded for the bridge. On a host without
// systemd-resolved the op succeeds with Applied false and a reason.
type SyncResolverRouting struct {
	Bridge string `json:"bridge"`
	Server string `json:"server"`
}

// Name implements Op.
func (SyncResolverRouting) Name() string { return "sync_resolver_routing" }

// Validate implements Op.
func (o SyncResolverRouting) Validate() error {
	if err := ValidBridgeName(o.Bridge); err != nil {
		return err
	}
	_, err := ParsePrivateAddrPort(o.Server)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	return nil
}

// ServerAddrPort returns the parsed server; call it after Validate.
func (o SyncResolverRouting) ServerAddrPort() netip.AddrPort {
	ap, _ := netip.ParseAddrPort(o.Server)
	return ap
}

// ClearResolverRouting undoes SyncResolverRouting on bridge's link
// (resolvectl revert). Deleting the bridge also drops its routing, so
// bangerd needs this only to stop routing while keeping the bridge.
type ClearResolverRouting struct {
	Bridge string `json:"bridge"`
}

// Name implements Op.
func (ClearResolverRouting) Name() string { return "clear_resolver_routing" }

// Validate implements Op.
func (o ClearResolverRouting) Validate() error { return ValidBridgeName(o.Bridge) }

// ResolverRoutingResult is the answer of SyncResolverRouting and
// ClearResolverRouting. Applied says whether the host's resolver was
// changed; when it is false, Reason says why (no systemd-resolved, too old,
// the helper serves a separate network namespace). Failing to apply on a
// host that has systemd-resolved is an error answer, not Applied false.
type ResolverRoutingResult struct {
	Applied bool   `json:"applied"`
	Reason  string `json:"reason,omitempty"`
}

// BuildCallTimeout bounds a caller's wait for a DebootstrapImage answer: a
// little more than the helper's own bound on a build (a minute or more on
// a quiet host, several on a busy one), far past the 90 s other calls get.
const BuildCallTimeout = 35 * time.Minute

// DebootstrapImage builds a Debian root image (ext4) for Suite with
// debootstrap, from Mirror (empty: the image package's default). The
// request names no path and no keyring: the helper verifies every package
// against the archive keyring it chooses for Suite from its own allow-list,
// and refuses a suite it cannot verify. It builds in a fresh directory of
// its own state dir, removes it, and answers with the finished image as a
// read-only fd (SCM_RIGHTS) beside a DebootstrapImageResult. One build runs
// at a time; a second one is refused as busy.
type DebootstrapImage struct {
	Suite  string `json:"suite"`
	Mirror string `json:"mirror"`
}

// DebootstrapImageResult is DebootstrapImage's answer; the image's fd
// travels beside it.
type DebootstrapImageResult struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // lowercase hex
}

// Name implements Op.
func (DebootstrapImage) Name() string { return "debootstrap_image" }

// Validate implements Op.
func (o DebootstrapImage) Validate() error {
	if err := ValidSuite(o.Suite); err != nil {
		return err
	}
	if o.Mirror == "" {
		return nil
	}
	return ValidMirror(o.Mirror)
}

// opDecoder decodes one op's args strictly.
type opDecoder func(args []byte) (Op, error)

func decoderFor[T Op]() opDecoder {
	return func(args []byte) (Op, error) {
		var v T
		if err := decodeStrict(args, &v); err != nil {
			return nil, err
		}
		return v, nil
	}
}

// helperOps is the closed list of ops the helper serves, by wire name.
var helperOps = map[string]opDecoder{
	Ping{}.Name():          decoderFor[Ping](),
	EnsureBridge{}.Name():  decoderFor[EnsureBridge](),
	DeleteBridge{}.Name():  decoderFor[DeleteBridge](),
	CreateTap{}.Name():     decoderFor[CreateTap](),
	DeleteTap{}.Name():     decoderFor[DeleteTap](),
	OpenTap{}.Name():       decoderFor[OpenTap](),
	ApplyFirewall{}.Name(): decoderFor[ApplyFirewall](),
	ClearFirewall{}.Name(): decoderFor[ClearFirewall](),

	SyncResolverRouting{}.Name():  decoderFor[SyncResolverRouting](),
	ClearResolverRouting{}.Name(): decoderFor[ClearResolverRouting](),
	DebootstrapImage{}.Name():     decoderFor[DebootstrapImage](),

	LaunchFirecracker{}.Name(): decoderFor[LaunchFirecracker](),
	DialJail{}.Name():          decoderFor[DialJail](),
	SignalVMM{}.Name():         decoderFor[SignalVMM](),
	CleanupJail{}.Name():       decoderFor[CleanupJail](),

	CreateSnapshot{}.Name(): decoderFor[CreateSnapshot](),
	RemoveSnapshot{}.Name(): decoderFor[RemoveSnapshot](),
}

// HelperOps lists the wire names of the ops the helper serves, sorted.
func HelperOps() []string {
	out := make([]string, 0, len(helperOps))
	for n := range helperOps {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}
