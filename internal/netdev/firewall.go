package netdev

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// Firewall is the desired state of banger's nftables tables. The helper's
// Firewall type is an alias of this one, so netdev does not import the helper.
type Firewall struct {
	Bridge    string       // the bridge guests sit on
	Subnet    netip.Prefix // the guest subnet
	Gateway   netip.Addr   // the bridge address
	DNSPorts  []uint16     // UDP/TCP ports on Gateway guests may reach (banger's DNS)
	AllowHost []netip.AddrPort
	// VMToVM allows guests to talk to each other across the bridge.
	VMToVM bool
	// NAT lists guest addresses whose egress is masqueraded out of the host.
	NAT []netip.Addr
	// Guests lists banger's taps with the MAC and address each guest may
	// send from (see guestPrerouting); a banger tap not listed sends nothing.
	Guests []Guest
	// Allow opens destinations in EgressDenied to NATed guests; metadata
	// addresses stay closed.
	Allow []netip.Prefix
}

// TableName names both of banger's nftables tables (families inet and
// bridge). The name is the tag: reconcile and leak checks find banger's rules
// by it, and every rule also carries a "banger: ..." comment saying why it
// exists.
const TableName = "banger"

// TapPrefix starts the name of every tap banger creates (tap-fc-<id>). The
// bridge-family rules recognize guests' bridge ports by it, because the
// match on a port's bridge (meta ibrname) needs nft_meta_bridge, which not
// every kernel has (these test machines do not).
const TapPrefix = "tap-fc"

// MetadataAddr is the cloud metadata address guests may never reach, even
// when AllowHost names it: on a cloud host it hands out the host's
// credentials.
var MetadataAddr = netip.MustParseAddr("169.254.169.254")

// ApplyFirewall replaces banger's tables with the rules built from fw in one
// nftables transaction: the old tables are deleted and the new ones built in
// a single batch, so the kernel switches from the old rules to the new ones
// atomically and never runs without them, and a failed batch leaves the old
// rules in force. With the xtables backend it rebuilds banger's iptables
// chains instead, chain by chain (see xtables.go).
//
// It also sets IPv4 forwarding, which only NAT needs (see setForwarding).
func (h *Host) ApplyFirewall(ctx context.Context, fw Firewall) error {
	rs, err := buildRuleset(fw)
	if err != nil {
		return fmt.Errorf("apply firewall for bridge %s: %w", fw.Bridge, err)
	}
	unlock, err := h.lock(ctx)
	if err != nil {
		return fmt.Errorf("apply firewall for bridge %s: %w", fw.Bridge, err)
	}
	defer unlock()
	if err := h.chooseBackend(ctx); err != nil {
		return fmt.Errorf("apply firewall for bridge %s: %w", fw.Bridge, err)
	}
	if h.xt != nil {
		err = h.xt.apply(ctx, fw)
	} else {
		err = h.applyNftables(rs)
	}
	if err != nil {
		return fmt.Errorf("apply firewall for bridge %s: %w", fw.Bridge, err)
	}
	if err := h.setForwarding(fw.Bridge, len(fw.NAT) > 0); err != nil {
		return fmt.Errorf("apply firewall for bridge %s: %w", fw.Bridge, err)
	}
	if err := h.guardBridge(fw.Bridge); err != nil {
		return fmt.Errorf("apply firewall for bridge %s: %w", fw.Bridge, err)
	}
	return nil
}

// ClearFirewall deletes banger's tables (or, with the xtables backend, its
// chains and the jumps to them); missing ones are not an error.
// IPv4 forwarding is left as it is: the bridge's own flag goes with the
// bridge, and the global one may be relied on by others.
func (h *Host) ClearFirewall(ctx context.Context) error {
	unlock, err := h.lock(ctx)
	if err != nil {
		return fmt.Errorf("clear firewall: %w", err)
	}
	defer unlock()
	if err := h.chooseBackend(ctx); err != nil {
		return fmt.Errorf("clear firewall: %w", err)
	}
	if h.xt != nil {
		err = h.xt.clear(ctx)
	} else {
		err = h.clearNftables()
	}
	if err != nil {
		return fmt.Errorf("clear firewall: %w", err)
	}
	return nil
}

// applyNftables replaces banger's tables with rs in one batch.
func (h *Host) applyNftables(rs *ruleset) error {
	c, err := h.nft()
	if err != nil {
		return err
	}
	if err := queueDeleteTables(c); err != nil {
		return err
	}
	for _, t := range rs.tables {
		rs.queue(c, t)
	}
	return c.Flush()
}

// clearNftables deletes banger's tables in one batch.
func (h *Host) clearNftables() error {
	c, err := h.nft()
	if err != nil {
		return err
	}
	if err := queueDeleteTables(c); err != nil {
		return err
	}
	return c.Flush()
}

// queueDeleteTables adds the deletion of banger's tables to c's batch. The
// inet table is added first and then deleted, which works whether or not it
// exists (adding an existing table is a no-op) without a separate lookup.
// The bridge table is deleted only if a listing shows it, so a kernel
// without nftables' bridge family can still run banger with VMToVM on.
func queueDeleteTables(c *nftables.Conn) error {
	inet := &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	c.AddTable(inet)
	c.DelTable(inet)
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyBridge)
	if err != nil {
		return fmt.Errorf("list bridge tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == TableName {
			c.DelTable(t)
		}
	}
	return nil
}

func (h *Host) nft() (*nftables.Conn, error) {
	if h.ns.IsOpen() {
		c, err := nftables.New(nftables.WithNetNSFd(int(h.ns)))
		if err != nil {
			return nil, fmt.Errorf("open nftables in netns: %w", err)
		}
		return c, nil
	}
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("open nftables: %w", err)
	}
	return c, nil
}

// setForwarding turns IPv4 forwarding on for guests only when some guest has
// NAT. Guests reach the host by local delivery and each other by bridging, so
// without NAT nothing of theirs needs routing, and the bridge's own
// forwarding flag stays 0: even if another table accepted it, a guest packet
// for elsewhere is not routed.
//
// With NAT, the bridge flag alone is not enough: Linux checks the flag of the
// interface a packet arrives on, so the replies coming back on the uplink
// need the uplink's flag too. Which interface that is changes with routes
// (Wi-Fi, VPNs), so NAT turns on the global net.ipv4.ip_forward, as Docker
// and libvirt do; banger's forward chain still drops every guest packet it
// does not mean to pass. The global flag is never turned back off, because
// banger cannot know who else relies on it. Writing the global flag resets
// every interface's flag, so the bridge's is written after it. All of these
// are per network namespace.
func (h *Host) setForwarding(bridge string, nat bool) error {
	return h.inNetns(func() error {
		if nat {
			cur, err := os.ReadFile(sysctlPath(globalForwardingKey))
			if err != nil {
				return fmt.Errorf("read %s: %w", globalForwardingKey, err)
			}
			if strings.TrimSpace(string(cur)) != "1" {
				if err := writeSysctlHere(globalForwardingKey, "1"); err != nil {
					return fmt.Errorf("enable forwarding: %w", err)
				}
			}
		}
		v := "0"
		if nat {
			v = "1"
		}
		err := writeSysctlHere(forwardingKey(bridge), v)
		if errors.Is(err, os.ErrNotExist) {
			// No bridge yet: it starts with forwarding off and the next
			// ApplyFirewall after EnsureBridge sets it.
			return nil
		}
		if err != nil {
			return fmt.Errorf("set forwarding on bridge %s: %w", bridge, err)
		}
		return nil
	})
}

const globalForwardingKey = "net/ipv4/ip_forward"

func forwardingKey(dev string) string { return "net/ipv4/conf/" + dev + "/forwarding" }

func sysctlPath(key string) string { return path.Join("/proc/sys", key) }

// writeSysctl writes a sysctl inside the Host's namespace.
func (h *Host) writeSysctl(key, value string) error {
	return h.inNetns(func() error { return writeSysctlHere(key, value) })
}

func writeSysctlHere(key, value string) error {
	f, err := os.OpenFile(sysctlPath(key), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// ruleset is the built form of a Firewall: the tables to create, each chain
// with its rules, every rule both as nftables expressions and as nft(8)-like
// text. The text is for tests, logs and `banger doctor`; the expressions are
// what the kernel gets.
type ruleset struct {
	tables []table
}

type table struct {
	family nftables.TableFamily
	chains []chain
}

type chain struct {
	name  string
	typ   nftables.ChainType
	hook  *nftables.ChainHook
	prio  nftables.ChainPriority
	rules []rule
}

type rule struct {
	matches []match
	action  match
	comment string
}

// match is one condition (or the final action) of a rule.
type match struct {
	text  string
	exprs []expr.Any
}

// Rules returns the rules ApplyFirewall would install for fw, one line per
// rule, as "FAMILY TABLE CHAIN: RULE". It needs no privilege.
func Rules(fw Firewall) ([]string, error) {
	rs, err := buildRuleset(fw)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, t := range rs.tables {
		for _, c := range t.chains {
			for _, r := range c.rules {
				out = append(out, fmt.Sprintf("%s %s %s: %s", familyName(t.family), TableName, c.name, r.text()))
			}
		}
	}
	return out, nil
}

func (r rule) text() string {
	parts := make([]string, 0, len(r.matches)+3)
	for _, m := range r.matches {
		parts = append(parts, m.text)
	}
	parts = append(parts, "counter", r.action.text)
	parts = append(parts, "comment "+strconv.Quote(r.comment))
	return strings.Join(parts, " ")
}

func (r rule) exprs() []expr.Any {
	var out []expr.Any
	for _, m := range r.matches {
		out = append(out, m.exprs...)
	}
	out = append(out, &expr.Counter{})
	return append(out, r.action.exprs...)
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyBridge:
		return "bridge"
	}
	return strconv.Itoa(int(f))
}

// queue adds one table with its chains and rules to c's pending batch.
// Every chain is added before any rule, so a jump finds its target. A chain
// without a hook is a regular chain, entered only by jumps.
func (rs *ruleset) queue(c *nftables.Conn, t table) {
	nt := c.AddTable(&nftables.Table{Name: TableName, Family: t.family})
	ncs := make([]*nftables.Chain, len(t.chains))
	for i, ch := range t.chains {
		if ch.hook == nil {
			ncs[i] = c.AddChain(&nftables.Chain{Name: ch.name, Table: nt})
			continue
		}
		accept := nftables.ChainPolicyAccept
		prio := ch.prio
		ncs[i] = c.AddChain(&nftables.Chain{
			Name: ch.name, Table: nt, Type: ch.typ,
			Hooknum: ch.hook, Priority: &prio, Policy: &accept,
		})
	}
	for i, ch := range t.chains {
		nc := ncs[i]
		for _, r := range ch.rules {
			c.AddRule(&nftables.Rule{
				Table: nt, Chain: nc, Exprs: r.exprs(),
				UserData: userdata.AppendString(nil, userdata.TypeComment, r.comment),
			})
		}
	}
}

// buildRuleset turns fw into banger's tables. All base chains have policy
// accept: banger's tables only ever restrict traffic that involves the
// bridge, and leave everything else on the host to whatever else filters it.
// (An accept here does not override a drop in another table; a host whose
// own forward policy is drop has to allow banger's bridge itself.)
//
// The inet table:
//   - prerouting (priority raw, before conntrack and any DNAT): guest packets
//     to the metadata addresses are dropped, whether they would be delivered
//     locally or routed.
//   - input: guest packets to the host are accepted only for established
//     flows (replies to the host's own connections into guests), Gateway on
//     the DNS ports from the subnet and the AllowHost entries; the rest is
//     dropped. Packets for Gateway's DNS ports that arrive on any interface
//     but the bridge (or loopback) are dropped too.
//   - forward: guest-to-guest packets that reach IP forwarding (routed via
//     the gateway, or bridged when br_netfilter passes bridged traffic to
//     the IP hooks) follow VMToVM; replies to NATed flows come back; guest
//     packets to be routed elsewhere pass the egress chain (metadata,
//     then Allow, then EgressDenied); each NAT address may leave through any
//     interface but the bridge; all other guest traffic, and new
//     connections from elsewhere into guests, drop.
//   - postrouting (only with NAT): each NAT address is masqueraded when it
//     leaves through an interface other than the bridge. Without NAT entries
//     the chain does not exist at all.
//
// The bridge table always exists: its prerouting chain confines each guest
// to its own MAC and IPv4 address (guestPrerouting), so a kernel without
// nftables' bridge family cannot run banger's network. When VMToVM is off
// it also has a forward chain: bridged frames between two ports of the
// bridge never reach the IP hooks unless br_netfilter is loaded and
// bridge-nf-call-iptables is on (per namespace), so the bridge family's
// forward hook is the one place that reliably sees guest-to-guest traffic.
// It sees only port-to-port frames (traffic to and from the host goes
// through the bridge's input and output hooks and is left to the inet
// table); it drops every frame from one banger tap to another, ARP included.
func buildRuleset(fw Firewall) (*ruleset, error) {
	if err := checkFirewall(fw); err != nil {
		return nil, err
	}
	br := fw.Bridge
	fromGuests := iifname(br)
	established := ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED, "established,related")

	pre := chain{name: "prerouting", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookPrerouting, prio: *nftables.ChainPriorityRaw}
	for _, a := range MetadataAddrs {
		pre.rules = append(pre.rules, rule{
			matches: []match{fromGuests, ipDaddr(a)},
			action:  drop(), comment: "banger: guests never reach metadata address " + a.String(),
		})
	}

	in := chain{name: "input", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookInput, prio: *nftables.ChainPriorityFilter}
	in.rules = append(in.rules, rule{
		matches: []match{fromGuests, established},
		action:  accept(), comment: "banger: replies to host connections into guests",
	})
	for _, p := range dedupPorts(fw.DNSPorts) {
		for _, proto := range []uint8{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
			in.rules = append(in.rules, rule{
				matches: []match{fromGuests, ipSaddrPrefix(fw.Subnet), ipDaddr(fw.Gateway), dport(proto, p)},
				action:  accept(), comment: "banger: guest dns",
			}, dnsFromBridgeOnly(fw, p, proto))
		}
	}
	for _, ap := range dedupAddrPorts(fw.AllowHost) {
		for _, proto := range []uint8{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
			in.rules = append(in.rules, rule{
				matches: []match{fromGuests, ipDaddr(ap.Addr()), dport(proto, ap.Port())},
				action:  accept(), comment: "banger: allow-host " + ap.String(),
			})
		}
	}
	in.rules = append(in.rules, rule{
		matches: []match{fromGuests},
		action:  drop(), comment: "banger: guests reach nothing else on the host",
	})

	vmToVM, vmToVMWhy := drop(), "banger: vm-to-vm denied"
	if fw.VMToVM {
		vmToVM, vmToVMWhy = accept(), "banger: vm-to-vm allowed"
	}
	nat := dedupAddrs(fw.NAT)
	fwd := chain{name: "forward", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookForward, prio: *nftables.ChainPriorityFilter}
	fwd.rules = append(fwd.rules,
		rule{matches: []match{fromGuests, oifname(br, true)}, action: vmToVM, comment: vmToVMWhy},
		rule{matches: []match{oifname(br, true), established}, action: accept(), comment: "banger: replies to guest egress"},
		rule{matches: []match{fromGuests, oifname(br, false)}, action: jump(egressChain), comment: "banger: guest egress passes the denylist"},
	)
	for _, a := range nat {
		fwd.rules = append(fwd.rules, rule{
			matches: []match{fromGuests, ipSaddr(a), oifname(br, false)},
			action:  accept(), comment: "banger: nat egress " + a.String(),
		})
	}
	fwd.rules = append(fwd.rules,
		rule{matches: []match{fromGuests}, action: drop(), comment: "banger: no other guest egress"},
		rule{matches: []match{oifname(br, true)}, action: drop(), comment: "banger: no new connections into guests from elsewhere"},
	)

	inet := table{family: nftables.TableFamilyINet, chains: []chain{pre, in, fwd, guestEgress(fw)}}
	if len(nat) > 0 {
		post := chain{name: "postrouting", typ: nftables.ChainTypeNAT, hook: nftables.ChainHookPostrouting, prio: *nftables.ChainPriorityNATSource}
		for _, a := range nat {
			post.rules = append(post.rules, rule{
				matches: []match{ipSaddr(a), oifname(br, false)},
				action:  masquerade(), comment: "banger: nat " + a.String(),
			})
		}
		inet.chains = append(inet.chains, post)
	}
	brt := table{family: nftables.TableFamilyBridge, chains: []chain{guestPrerouting(fw)}}
	if !fw.VMToVM {
		bfwd := chain{name: "forward", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookForward, prio: *nftables.ChainPriorityFilter}
		bfwd.rules = append(bfwd.rules, rule{
			matches: []match{ifnamePrefix(expr.MetaKeyIIFNAME, "iifname", TapPrefix), ifnamePrefix(expr.MetaKeyOIFNAME, "oifname", TapPrefix)},
			action:  drop(), comment: "banger: vm-to-vm denied",
		})
		brt.chains = append(brt.chains, bfwd)
	}
	return &ruleset{tables: []table{inet, brt}}, nil
}

// checkFirewall refuses a Firewall whose rules would not mean what the
// caller intends; the helper validates too, but a wrong table here is a
// hole, so it is checked again where it is built.
func checkFirewall(fw Firewall) error {
	if fw.Bridge == "" || len(fw.Bridge) >= unix.IFNAMSIZ || strings.ContainsAny(fw.Bridge, "/ \x00") {
		return fmt.Errorf("bad bridge name %q", fw.Bridge)
	}
	if !fw.Subnet.IsValid() || !fw.Subnet.Addr().Is4() {
		return fmt.Errorf("subnet %s is not an IPv4 prefix", fw.Subnet)
	}
	if !fw.Gateway.Is4() || !fw.Subnet.Contains(fw.Gateway) {
		return fmt.Errorf("gateway %s is not in subnet %s", fw.Gateway, fw.Subnet)
	}
	for _, p := range fw.DNSPorts {
		if p == 0 {
			return errors.New("dns port 0")
		}
	}
	for _, ap := range fw.AllowHost {
		if !ap.IsValid() || ap.Port() == 0 || ap.Addr().Zone() != "" || ap.Addr().Is4In6() {
			return fmt.Errorf("bad allow-host entry %s", ap)
		}
	}
	for _, a := range fw.NAT {
		if !a.Is4() || !fw.Subnet.Contains(a) || a == fw.Gateway {
			return fmt.Errorf("nat address %s is not a guest address in %s", a, fw.Subnet)
		}
	}
	return checkGuests(fw)
}

func dedupPorts(ps []uint16) []uint16 {
	out := slices.Clone(ps)
	slices.Sort(out)
	return slices.Compact(out)
}

func dedupAddrs(as []netip.Addr) []netip.Addr {
	out := slices.Clone(as)
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return slices.Compact(out)
}

func dedupAddrPorts(as []netip.AddrPort) []netip.AddrPort {
	out := slices.Clone(as)
	slices.SortFunc(out, func(a, b netip.AddrPort) int { return a.Compare(b) })
	return slices.Compact(out)
}
