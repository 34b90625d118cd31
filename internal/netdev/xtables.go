package netdev

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"banger/internal/execx"
)

// The xtables backend builds the same firewall as buildRuleset with the
// iptables tools, for hosts where nftables netlink batches are refused (see
// nftUnsupported). It runs the tools as argv through execx, always with -w
// so it waits for the xtables lock instead of racing other users of it.
//
// Translation choices, where iptables cannot say what nftables says:
//
//   - banger's rules live in its own chains, BANGER-PREROUTING (table raw,
//     before conntrack and DNAT like the nftables prerouting chain at
//     priority raw), BANGER-INPUT and BANGER-FORWARD (filter) and
//     BANGER-POSTROUTING (nat, only when some guest has NAT). Each is reached
//     from its built-in chain by one jump rule inserted at the top and tagged
//     with the comment "banger", which is how Clear finds it again; every rule
//     inside carries the same "banger: ..." comment as its nftables twin.
//   - What the nftables rules accept, these RETURN. An nftables accept only
//     ends banger's own table and leaves other tables to decide, while an
//     iptables ACCEPT would end the built-in chain and skip the host's own
//     rules after banger's jump; RETURN keeps banger to restricting traffic.
//   - There is no bridge family: ebtables does its part (xtables_eb.go),
//     confining each guest to its own MAC and address, dropping every
//     other ethertype (IPv6 included) from banger's taps and, with VMToVM
//     off, every frame from one tap to another. Without a working ebtables
//     the firewall is refused. VM-to-VM denial also adds a physdev rule
//     (both bridge ports banger taps) to BANGER-FORWARD, next to the
//     -i BRIDGE -o BRIDGE rule, for hosts where br_netfilter hands bridged
//     traffic to iptables.
//   - Guest packets routed off the bridge pass BANGER-EGRESS, as they pass
//     the nftables egress chain: metadata addresses, then the allowed
//     prefixes (RETURN), then the denied ranges.
//   - IPv4 is filtered with iptables. Guests send no IPv6 (ebtables drops
//     it at the tap), so ip6tables is a second layer: the input and forward
//     chains are built with the matching ip6tables when it is installed,
//     and it is required only when AllowHost names an IPv6 address.
//   - Apply is not one transaction: it flushes and refills each chain, so
//     for the few milliseconds that takes a chain is shorter than intended.
//     The jump rules stay in place throughout.

// Chain names of the xtables backend.
const (
	xtPrerouting  = "BANGER-PREROUTING"
	xtInput       = "BANGER-INPUT"
	xtForward     = "BANGER-FORWARD"
	xtPostrouting = "BANGER-POSTROUTING"
	xtEgress      = "BANGER-EGRESS"
	// xtJumpComment tags the jump rules from the built-in chains.
	xtJumpComment = "banger"
)

// xtChain is one banger chain: where it lives and the built-in chain that
// jumps to it.
type xtChain struct {
	family  string // "-4" or "-6": which tool (iptables or ip6tables) owns it
	table   string
	name    string
	builtin string
}

// xtChains are every chain the backend may own, in the order Apply builds
// them (a chain before the chains that jump to it). Clear removes all of
// them, in reverse, whatever the Firewall was.
var xtChains = []xtChain{
	{"-4", "raw", xtPrerouting, "PREROUTING"},
	{"-4", "filter", xtInput, "INPUT"},
	{"-4", "filter", xtEgress, ""}, // entered from BANGER-FORWARD only
	{"-4", "filter", xtForward, "FORWARD"},
	{"-4", "nat", xtPostrouting, "POSTROUTING"},
	{"-6", "filter", xtInput, "INPUT"},
	{"-6", "filter", xtForward, "FORWARD"},
}

// jumpSpec is the rule in c.builtin that enters c, without table or command.
func (c xtChain) jumpSpec() []string {
	return []string{"-m", "comment", "--comment", xtJumpComment, "-j", c.name}
}

func (c xtChain) String() string { return c.table + "/" + c.name }

// runner runs a program as argv; *execx.Runner satisfies it.
type runner interface {
	Run(ctx context.Context, bin string, args ...string) ([]byte, error)
}

// xtablesPlan returns the commands that build fw's chains from nothing, as
// argv lists without the program: each starts with -4 (run with iptables)
// or -6 (ip6tables), flags the tools accept and ignore in their own family.
// Per chain it lists -N, then one -A per rule, then the -I of the jump from
// the built-in chain. fw must have passed checkFirewall. The -6 commands
// are run only where ip6tables is installed.
func xtablesPlan(fw Firewall) [][]string {
	var plan [][]string
	for _, c := range xtChains {
		rules, ok := xtRules(fw, c)
		if !ok {
			continue
		}
		plan = append(plan, xtCmd(c, "-N", c.name))
		for _, r := range rules {
			plan = append(plan, xtCmd(c, "-A", c.name, r...))
		}
		if c.builtin != "" {
			plan = append(plan, xtCmd(c, "-I", c.builtin, append([]string{"1"}, c.jumpSpec()...)...))
		}
	}
	return plan
}

func xtCmd(c xtChain, op, chain string, rest ...string) []string {
	return append([]string{c.family, "-t", c.table, op, chain}, rest...)
}

// xtRules returns the rule specs of chain c for fw, and false when fw needs
// no such chain. They follow buildRuleset rule for rule.
func xtRules(fw Firewall, c xtChain) ([][]string, bool) {
	br := fw.Bridge
	v6 := c.family == "-6"
	in := []string{"-i", br}
	established := []string{"-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"}
	rule := func(comment, target string, matches ...[]string) []string {
		var r []string
		for _, m := range matches {
			r = append(r, m...)
		}
		return append(r, "-m", "comment", "--comment", comment, "-j", target)
	}
	host := func(a netip.Addr) []string { return []string{"-d", netip.PrefixFrom(a, a.BitLen()).String()} }
	src := func(a netip.Addr) []string { return []string{"-s", netip.PrefixFrom(a, a.BitLen()).String()} }
	dport := func(proto string, p uint16) []string {
		return []string{"-p", proto, "-m", proto, "--dport", strconv.Itoa(int(p))}
	}
	nat := dedupAddrs(fw.NAT)

	var rules [][]string
	switch c.name {
	case xtPrerouting:
		for _, a := range MetadataAddrs {
			rules = append(rules, rule("banger: guests never reach metadata address "+a.String(), "DROP", in, host(a)))
		}
	case xtEgress:
		if v6 {
			return nil, false
		}
		for _, a := range MetadataAddrs {
			rules = append(rules, rule("banger: guests never reach metadata address "+a.String(), "DROP", host(a)))
		}
		for _, p := range dedupPrefixes(fw.Allow) {
			rules = append(rules, rule("banger: egress allowed to "+p.String(), "RETURN", []string{"-d", p.String()}))
		}
		for _, p := range EgressDenied {
			rules = append(rules, rule("banger: no egress to "+p.String(), "DROP", []string{"-d", p.String()}))
		}
	case xtInput:
		rules = append(rules, rule("banger: replies to host connections into guests", "RETURN", in, established))
		if !v6 {
			for _, p := range dedupPorts(fw.DNSPorts) {
				for _, proto := range []string{"udp", "tcp"} {
					rules = append(rules,
						rule("banger: guest dns", "RETURN", in, []string{"-s", fw.Subnet.String()}, host(fw.Gateway), dport(proto, p)),
						rule("banger: gateway dns answers the bridge only", "RETURN", []string{"-i", "lo"}, host(fw.Gateway), dport(proto, p)),
						rule("banger: gateway dns answers the bridge only", "DROP", []string{"!", "-i", br}, host(fw.Gateway), dport(proto, p)),
					)
				}
			}
		}
		for _, ap := range dedupAddrPorts(fw.AllowHost) {
			if ap.Addr().Is6() != v6 {
				continue
			}
			for _, proto := range []string{"udp", "tcp"} {
				rules = append(rules, rule("banger: allow-host "+ap.String(), "RETURN", in, host(ap.Addr()), dport(proto, ap.Port())))
			}
		}
		rules = append(rules, rule("banger: guests reach nothing else on the host", "DROP", in))
	case xtForward:
		if fw.VMToVM {
			rules = append(rules, rule("banger: vm-to-vm allowed", "RETURN", in, []string{"-o", br}))
		} else {
			rules = append(rules,
				rule("banger: vm-to-vm denied", "DROP", in, []string{"-o", br}),
				rule("banger: vm-to-vm denied", "DROP", []string{"-m", "physdev", "--physdev-in", TapPrefix + "+", "--physdev-out", TapPrefix + "+"}),
			)
		}
		rules = append(rules, rule("banger: replies to guest egress", "RETURN", []string{"-o", br}, established))
		if !v6 {
			rules = append(rules, rule("banger: guest egress passes the denylist", xtEgress, in, []string{"!", "-o", br}))
		}
		if !v6 {
			for _, a := range nat {
				rules = append(rules, rule("banger: nat egress "+a.String(), "RETURN", in, src(a), []string{"!", "-o", br}))
			}
		}
		rules = append(rules,
			rule("banger: no other guest egress", "DROP", in),
			rule("banger: no new connections into guests from elsewhere", "DROP", []string{"-o", br}),
		)
	case xtPostrouting:
		if v6 || len(nat) == 0 {
			return nil, false
		}
		for _, a := range nat {
			rules = append(rules, rule("banger: nat "+a.String(), "MASQUERADE", src(a), []string{"!", "-o", br}))
		}
	}
	return rules, true
}

// needsV6 reports whether fw has IPv6 AllowHost entries, which only
// ip6tables can express.
func needsV6(fw Firewall) bool {
	for _, ap := range fw.AllowHost {
		if ap.Addr().Is6() {
			return true
		}
	}
	return false
}

// xtVariants are the iptables tools in order of preference, each with its
// IPv6 twin: the nf_tables flavour first (it is what current distributions
// ship as iptables), then whatever iptables is, then the legacy one.
var xtVariants = [][2]string{
	{"iptables-nft", "ip6tables-nft"},
	{"iptables", "ip6tables"},
	{"iptables-legacy", "ip6tables-legacy"},
}

// xtables runs banger's firewall through one flavour of the iptables tools.
type xtables struct {
	run     runner
	variant string // the iptables name it was found as, for logs and errors
	v4, v6  string // resolved programs; v6 is "" when not installed
	// eb is the ebtables program, "" when none works (ebErr says why).
	eb    string
	ebErr error
}

// findXtables picks the first variant that is installed and can list the
// filter table (iptables-nft fails there for the same reason nftables
// did, on some hosts). lookPath is execx.LookPath outside tests.
func findXtables(ctx context.Context, run runner, lookPath func(string) (string, error)) (*xtables, error) {
	var errs []error
	for _, v := range xtVariants {
		p4, err := lookPath(v[0])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if _, err := run.Run(ctx, p4, "-w", "-t", "filter", "-S", "INPUT"); err != nil {
			errs = append(errs, fmt.Errorf("list filter table with %s: %w", v[0], err))
			continue
		}
		x := &xtables{run: run, variant: v[0], v4: p4}
		if p6, err := lookPath(v[1]); err == nil {
			x.v6 = p6
		}
		x.eb, x.ebErr = findEbtables(ctx, run, lookPath, v[0])
		return x, nil
	}
	return nil, fmt.Errorf("find iptables: %w", errors.Join(errs...))
}

// exec runs one planned command (starting with -4 or -6) with -w.
func (x *xtables) exec(ctx context.Context, argv []string) ([]byte, error) {
	bin := x.v4
	if argv[0] == "-6" {
		bin = x.v6
	}
	return x.run.Run(ctx, bin, append([]string{"-w"}, argv...)...)
}

// families returns the families x can act on.
func (x *xtables) families() map[string]bool {
	return map[string]bool{"-4": true, "-6": x.v6 != ""}
}

// apply rebuilds banger's chains for fw: chains fw does not need are
// removed, the others are created if missing and flushed, their rules
// appended, and each jump inserted unless it is already there.
func (x *xtables) apply(ctx context.Context, fw Firewall) error {
	if needsV6(fw) && x.v6 == "" {
		return fmt.Errorf("find ip6tables for the IPv6 allow-host entries: %s has no IPv6 twin installed", x.variant)
	}
	if x.eb == "" {
		return fmt.Errorf("refuse to run guest networking on the iptables fallback without ebtables, which alone keeps guests from forging each other's MAC and IP addresses and apart at layer 2: install ebtables (%w)", x.ebErr)
	}
	// The frame rules go first: they are what must never be missing.
	if err := x.ebApply(ctx, fw); err != nil {
		return err
	}
	fams := x.families()
	var plan [][]string
	for _, argv := range xtablesPlan(fw) {
		if fams[argv[0]] {
			plan = append(plan, argv)
		}
	}
	wanted := map[xtChain]bool{}
	for _, argv := range plan {
		if argv[3] == "-N" {
			wanted[xtChain{family: argv[0], table: argv[2], name: argv[4]}] = true
		}
	}
	for _, c := range xtChains {
		if fams[c.family] && !wanted[xtChain{family: c.family, table: c.table, name: c.name}] {
			if err := x.removeChain(ctx, c); err != nil {
				return err
			}
		}
	}
	for _, argv := range plan {
		c := xtChain{family: argv[0], table: argv[2], name: argv[4]}
		switch argv[3] {
		case "-N":
			exists, err := x.chainExists(ctx, c)
			if err != nil {
				return err
			}
			op, verb := "-N", "create"
			if exists {
				op, verb = "-F", "flush"
			}
			if _, err := x.exec(ctx, xtCmd(c, op, c.name)); err != nil {
				return fmt.Errorf("%s chain %s %s: %w", verb, x.family(c.family), c, err)
			}
		case "-A":
			if _, err := x.exec(ctx, argv); err != nil {
				return fmt.Errorf("add rule to %s %s: %w", x.family(c.family), c, err)
			}
		case "-I":
			// argv is -4 -t TABLE -I BUILTIN 1 SPEC...; -C takes no position.
			check := append(xtCmd(c, "-C", argv[4]), argv[6:]...)
			found, err := x.found(ctx, check)
			if err != nil {
				return fmt.Errorf("check jump %s/%s in %s: %w", argv[2], argv[4], x.family(c.family), err)
			}
			if !found {
				if _, err := x.exec(ctx, argv); err != nil {
					return fmt.Errorf("insert jump %s/%s in %s: %w", argv[2], argv[4], x.family(c.family), err)
				}
			}
		}
	}
	return nil
}

// clear removes every banger chain and jump; missing ones are skipped.
func (x *xtables) clear(ctx context.Context) error {
	fams := x.families()
	for _, c := range slices.Backward(xtChains) {
		if fams[c.family] {
			if err := x.removeChain(ctx, c); err != nil {
				return err
			}
		}
	}
	if x.eb != "" {
		return x.ebClear(ctx)
	}
	return nil
}

// maxJumps bounds the deletion of duplicate jump rules, which only another
// tool or a crash between check and insert could have added.
const maxJumps = 64

// removeChain deletes c's jump rules (however many there are), then flushes
// and deletes c. A missing chain is not an error: no jump can name it.
func (x *xtables) removeChain(ctx context.Context, c xtChain) error {
	exists, err := x.chainExists(ctx, c)
	if err != nil || !exists {
		return err
	}
	del := append(xtCmd(c, "-D", c.builtin), c.jumpSpec()...)
	for i := 0; c.builtin != ""; i++ {
		if i == maxJumps {
			return fmt.Errorf("delete jump %s/%s in %s: still there after %d deletions", c.table, c.builtin, x.family(c.family), maxJumps)
		}
		found, err := x.found(ctx, del)
		if err != nil {
			return fmt.Errorf("delete jump %s/%s in %s: %w", c.table, c.builtin, x.family(c.family), err)
		}
		if !found {
			break
		}
	}
	if _, err := x.exec(ctx, xtCmd(c, "-F", c.name)); err != nil {
		return fmt.Errorf("flush chain %s %s: %w", x.family(c.family), c, err)
	}
	if _, err := x.exec(ctx, xtCmd(c, "-X", c.name)); err != nil {
		return fmt.Errorf("delete chain %s %s: %w", x.family(c.family), c, err)
	}
	return nil
}

// chainExists lists c: the tools exit 1 for a chain (or table) that is not
// there.
func (x *xtables) chainExists(ctx context.Context, c xtChain) (bool, error) {
	ok, err := x.found(ctx, xtCmd(c, "-S", c.name))
	if err != nil {
		return false, fmt.Errorf("list chain %s %s: %w", x.family(c.family), c, err)
	}
	return ok, nil
}

// found runs a command whose exit status 1 means "no such rule or chain"
// (-C, -D, -S CHAIN), and reports whether it found its target.
func (x *xtables) found(ctx context.Context, argv []string) (bool, error) {
	_, err := x.exec(ctx, argv)
	if err == nil {
		return true, nil
	}
	if exitStatus(err) == 1 {
		return false, nil
	}
	return false, err
}

// family names the tool of a family in errors: the variant found, or its
// IPv6 twin.
func (x *xtables) family(fam string) string {
	if fam == "-6" {
		return strings.Replace(x.variant, "iptables", "ip6tables", 1)
	}
	return x.variant
}

// exitStatus returns the exit status carried by err (from *exec.ExitError,
// or a test runner's error with the same method), or -1.
func exitStatus(err error) int {
	var ec interface{ ExitCode() int }
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	return -1
}

// hostRunner runs programs inside the Host's network namespace: the child
// is forked from a thread that has entered it, and inherits it.
type hostRunner struct{ h *Host }

func (r hostRunner) Run(ctx context.Context, bin string, args ...string) ([]byte, error) {
	var out []byte
	err := r.h.inNetns(func() error {
		var err error
		out, err = execx.Default.Run(ctx, bin, args...)
		return err
	})
	return out, err
}
