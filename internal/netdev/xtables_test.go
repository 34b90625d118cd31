package netdev

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// argvText renders an argv the way a shell user would type it, quoting
// words with spaces, for golden comparisons.
func argvText(argv []string) string {
	out := make([]string, len(argv))
	for i, a := range argv {
		out[i] = a
		if a == "" || strings.ContainsAny(a, " \"") {
			out[i] = strconv.Quote(a)
		}
	}
	return strings.Join(out, " ")
}

func planText(fw Firewall) []string {
	var out []string
	for _, argv := range xtablesPlan(fw) {
		out = append(out, argvText(argv))
	}
	return out
}

func TestXtablesPlan(t *testing.T) {
	input4 := []string{
		`-4 -t filter -N BANGER-INPUT`,
		`-4 -t filter -A BANGER-INPUT -i br-fc -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment "banger: replies to host connections into guests" -j RETURN`,
		`-4 -t filter -A BANGER-INPUT -i br-fc -s 172.30.0.0/24 -d 172.30.0.1/32 -p udp -m udp --dport 53 -m comment --comment "banger: guest dns" -j RETURN`,
		`-4 -t filter -A BANGER-INPUT -i lo -d 172.30.0.1/32 -p udp -m udp --dport 53 -m comment --comment "banger: gateway dns answers the bridge only" -j RETURN`,
		`-4 -t filter -A BANGER-INPUT ! -i br-fc -d 172.30.0.1/32 -p udp -m udp --dport 53 -m comment --comment "banger: gateway dns answers the bridge only" -j DROP`,
		`-4 -t filter -A BANGER-INPUT -i br-fc -s 172.30.0.0/24 -d 172.30.0.1/32 -p tcp -m tcp --dport 53 -m comment --comment "banger: guest dns" -j RETURN`,
		`-4 -t filter -A BANGER-INPUT -i lo -d 172.30.0.1/32 -p tcp -m tcp --dport 53 -m comment --comment "banger: gateway dns answers the bridge only" -j RETURN`,
		`-4 -t filter -A BANGER-INPUT ! -i br-fc -d 172.30.0.1/32 -p tcp -m tcp --dport 53 -m comment --comment "banger: gateway dns answers the bridge only" -j DROP`,
		`-4 -t filter -A BANGER-INPUT -i br-fc -m comment --comment "banger: guests reach nothing else on the host" -j DROP`,
		`-4 -t filter -I INPUT 1 -m comment --comment banger -j BANGER-INPUT`,
	}
	pre := []string{
		`-4 -t raw -N BANGER-PREROUTING`,
		`-4 -t raw -A BANGER-PREROUTING -i br-fc -d 169.254.169.254/32 -m comment --comment "banger: guests never reach metadata address 169.254.169.254" -j DROP`,
		`-4 -t raw -A BANGER-PREROUTING -i br-fc -d 169.254.170.2/32 -m comment --comment "banger: guests never reach metadata address 169.254.170.2" -j DROP`,
		`-4 -t raw -A BANGER-PREROUTING -i br-fc -d 168.63.129.16/32 -m comment --comment "banger: guests never reach metadata address 168.63.129.16" -j DROP`,
		`-4 -t raw -A BANGER-PREROUTING -i br-fc -d 100.100.100.200/32 -m comment --comment "banger: guests never reach metadata address 100.100.100.200" -j DROP`,
		`-4 -t raw -I PREROUTING 1 -m comment --comment banger -j BANGER-PREROUTING`,
	}
	fwdTail := func(fam string) []string {
		return []string{
			fam + ` -t filter -A BANGER-FORWARD -i br-fc -m comment --comment "banger: no other guest egress" -j DROP`,
			fam + ` -t filter -A BANGER-FORWARD -o br-fc -m comment --comment "banger: no new connections into guests from elsewhere" -j DROP`,
			fam + ` -t filter -I FORWARD 1 -m comment --comment banger -j BANGER-FORWARD`,
		}
	}
	egress := func(allow ...string) []string {
		out := []string{`-4 -t filter -N BANGER-EGRESS`}
		for _, a := range []string{"169.254.169.254", "169.254.170.2", "168.63.129.16", "100.100.100.200"} {
			out = append(out, `-4 -t filter -A BANGER-EGRESS -d `+a+`/32 -m comment --comment "banger: guests never reach metadata address `+a+`" -j DROP`)
		}
		for _, a := range allow {
			out = append(out, `-4 -t filter -A BANGER-EGRESS -d `+a+` -m comment --comment "banger: egress allowed to `+a+`" -j RETURN`)
		}
		for _, d := range []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16"} {
			out = append(out, `-4 -t filter -A BANGER-EGRESS -d `+d+` -m comment --comment "banger: no egress to `+d+`" -j DROP`)
		}
		return out
	}
	fwdHead := func(fam string, vmToVM bool) []string {
		var out []string
		if fam == "-4" {
			out = egress()
		}
		out = append(out, fam+` -t filter -N BANGER-FORWARD`)
		if vmToVM {
			out = append(out, fam+` -t filter -A BANGER-FORWARD -i br-fc -o br-fc -m comment --comment "banger: vm-to-vm allowed" -j RETURN`)
		} else {
			out = append(out,
				fam+` -t filter -A BANGER-FORWARD -i br-fc -o br-fc -m comment --comment "banger: vm-to-vm denied" -j DROP`,
				fam+` -t filter -A BANGER-FORWARD -m physdev --physdev-in tap-fc+ --physdev-out tap-fc+ -m comment --comment "banger: vm-to-vm denied" -j DROP`)
		}
		out = append(out, fam+` -t filter -A BANGER-FORWARD -o br-fc -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment "banger: replies to guest egress" -j RETURN`)
		if fam == "-4" {
			out = append(out, `-4 -t filter -A BANGER-FORWARD -i br-fc ! -o br-fc -m comment --comment "banger: guest egress passes the denylist" -j BANGER-EGRESS`)
		}
		return out
	}
	input6 := func(extra ...string) []string {
		out := []string{
			`-6 -t filter -N BANGER-INPUT`,
			`-6 -t filter -A BANGER-INPUT -i br-fc -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment "banger: replies to host connections into guests" -j RETURN`,
		}
		out = append(out, extra...)
		return append(out,
			`-6 -t filter -A BANGER-INPUT -i br-fc -m comment --comment "banger: guests reach nothing else on the host" -j DROP`,
			`-6 -t filter -I INPUT 1 -m comment --comment banger -j BANGER-INPUT`)
	}
	v6 := func(vmToVM bool, extra ...string) []string {
		return slices.Concat(input6(extra...), fwdHead("-6", vmToVM), fwdTail("-6"))
	}

	tests := []struct {
		name string
		mod  func(*Firewall)
		want []string
	}{
		{
			name: "minimal, vm-to-vm allowed, no nat",
			mod:  func(*Firewall) {},
			want: slices.Concat(pre, input4, fwdHead("-4", true), fwdTail("-4"), v6(true)),
		},
		{
			name: "vm-to-vm denied adds the physdev rule",
			mod:  func(fw *Firewall) { fw.VMToVM = false },
			want: slices.Concat(pre, input4, fwdHead("-4", false), fwdTail("-4"), v6(false)),
		},
		{
			name: "nat entries, deduplicated and sorted",
			mod: func(fw *Firewall) {
				fw.NAT = []netip.Addr{netip.MustParseAddr("172.30.0.9"), netip.MustParseAddr("172.30.0.2"), netip.MustParseAddr("172.30.0.9")}
			},
			want: slices.Concat(pre, input4, fwdHead("-4", true), []string{
				`-4 -t filter -A BANGER-FORWARD -i br-fc -s 172.30.0.2/32 ! -o br-fc -m comment --comment "banger: nat egress 172.30.0.2" -j RETURN`,
				`-4 -t filter -A BANGER-FORWARD -i br-fc -s 172.30.0.9/32 ! -o br-fc -m comment --comment "banger: nat egress 172.30.0.9" -j RETURN`,
			}, fwdTail("-4"), []string{
				`-4 -t nat -N BANGER-POSTROUTING`,
				`-4 -t nat -A BANGER-POSTROUTING -s 172.30.0.2/32 ! -o br-fc -m comment --comment "banger: nat 172.30.0.2" -j MASQUERADE`,
				`-4 -t nat -A BANGER-POSTROUTING -s 172.30.0.9/32 ! -o br-fc -m comment --comment "banger: nat 172.30.0.9" -j MASQUERADE`,
				`-4 -t nat -I POSTROUTING 1 -m comment --comment banger -j BANGER-POSTROUTING`,
			}, v6(true)),
		},
		{
			name: "allow list returns before the denied ranges, metadata first",
			mod: func(fw *Firewall) {
				fw.Allow = []netip.Prefix{netip.MustParsePrefix("10.1.2.0/24"), netip.MustParsePrefix("169.254.0.0/16")}
			},
			want: slices.Concat(pre, input4, egress("10.1.2.0/24", "169.254.0.0/16"), fwdHead("-4", true)[10:], fwdTail("-4"), v6(true)),
		},
		{
			name: "allow-host v4 and v6, metadata stays dropped",
			mod: func(fw *Firewall) {
				fw.DNSPorts = nil
				fw.AllowHost = []netip.AddrPort{netip.MustParseAddrPort("[fd00::1]:22"), netip.MustParseAddrPort("169.254.169.254:80")}
			},
			want: slices.Concat(pre, []string{
				`-4 -t filter -N BANGER-INPUT`,
				`-4 -t filter -A BANGER-INPUT -i br-fc -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment "banger: replies to host connections into guests" -j RETURN`,
				`-4 -t filter -A BANGER-INPUT -i br-fc -d 169.254.169.254/32 -p udp -m udp --dport 80 -m comment --comment "banger: allow-host 169.254.169.254:80" -j RETURN`,
				`-4 -t filter -A BANGER-INPUT -i br-fc -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -m comment --comment "banger: allow-host 169.254.169.254:80" -j RETURN`,
				`-4 -t filter -A BANGER-INPUT -i br-fc -m comment --comment "banger: guests reach nothing else on the host" -j DROP`,
				`-4 -t filter -I INPUT 1 -m comment --comment banger -j BANGER-INPUT`,
			}, fwdHead("-4", true), fwdTail("-4"), v6(true,
				`-6 -t filter -A BANGER-INPUT -i br-fc -d fd00::1/128 -p udp -m udp --dport 22 -m comment --comment "banger: allow-host [fd00::1]:22" -j RETURN`,
				`-6 -t filter -A BANGER-INPUT -i br-fc -d fd00::1/128 -p tcp -m tcp --dport 22 -m comment --comment "banger: allow-host [fd00::1]:22" -j RETURN`,
			)),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fw := baseFirewall()
			tc.mod(&fw)
			if err := checkFirewall(fw); err != nil {
				t.Fatal(err)
			}
			got := planText(fw)
			if !slices.Equal(got, tc.want) {
				t.Errorf("plan differs\ngot:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}

// Every banger rule carries a comment, and nothing is masqueraded without
// NAT entries.
func TestXtablesPlanTagsEveryRule(t *testing.T) {
	for _, argv := range xtablesPlan(baseFirewall()) {
		line := argvText(argv)
		if argv[3] != "-N" && !strings.Contains(line, "-m comment --comment") {
			t.Errorf("untagged: %s", line)
		}
		if strings.Contains(line, "MASQUERADE") || strings.Contains(line, "POSTROUTING") {
			t.Errorf("nat without NAT entries: %s", line)
		}
	}
}

// fakeXtables is a stateful stand-in for the iptables tools: it applies
// -N/-A/-I/-D/-F/-X/-C/-S to in-memory chains, one set per program, and
// fails the way the tools do (exit 1 for a missing rule or chain).
type fakeXtables struct {
	progs map[string]map[string]*fakeTable // program -> table -> chains
	calls []string
	eb    *fakeEb // the ebtables program, when one is installed
}

type fakeTable struct {
	chains map[string][][]string
	user   map[string]bool
}

var fakeBuiltins = map[string][]string{
	"filter": {"INPUT", "FORWARD", "OUTPUT"},
	"nat":    {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
	"raw":    {"PREROUTING", "OUTPUT"},
}

func newFakeXtables(progs ...string) *fakeXtables {
	f := &fakeXtables{progs: map[string]map[string]*fakeTable{}}
	for _, p := range progs {
		if strings.HasPrefix(p, "ebtables") {
			f.eb = newFakeEb(p)
			continue
		}
		tables := map[string]*fakeTable{}
		for name, builtins := range fakeBuiltins {
			tb := &fakeTable{chains: map[string][][]string{}, user: map[string]bool{}}
			for _, b := range builtins {
				tb.chains[b] = nil
			}
			tables[name] = tb
		}
		f.progs[p] = tables
	}
	return f
}

type fakeExit struct {
	code int
	msg  string
}

func (e *fakeExit) Error() string { return fmt.Sprintf("exit status %d: %s", e.code, e.msg) }
func (e *fakeExit) ExitCode() int { return e.code }

func (f *fakeXtables) Run(_ context.Context, bin string, args ...string) ([]byte, error) {
	f.calls = append(f.calls, bin+" "+argvText(args))
	if f.eb != nil && bin == f.eb.prog {
		return f.eb.run(args)
	}
	tables, ok := f.progs[bin]
	if !ok {
		return nil, &fakeExit{127, bin + ": not installed"}
	}
	if len(args) == 0 || args[0] != "-w" {
		return nil, &fakeExit{2, "called without -w"}
	}
	args = args[1:]
	if len(args) > 0 && (args[0] == "-4" || args[0] == "-6") {
		if (args[0] == "-6") != strings.HasPrefix(bin, "ip6") {
			return nil, &fakeExit{2, "wrong family " + args[0]}
		}
		args = args[1:]
	}
	table := "filter"
	if len(args) >= 2 && args[0] == "-t" {
		table, args = args[1], args[2:]
	}
	tb, ok := tables[table]
	if !ok || len(args) < 2 {
		return nil, &fakeExit{2, "bad command"}
	}
	op, chain, spec := args[0], args[1], args[2:]
	rules, exists := tb.chains[chain]
	if op != "-N" && !exists {
		return nil, &fakeExit{1, "No chain/target/match by that name."}
	}
	idx := slices.IndexFunc(rules, func(r []string) bool { return slices.Equal(r, spec) })
	switch op {
	case "-N":
		if exists {
			return nil, &fakeExit{1, "Chain already exists."}
		}
		tb.chains[chain] = nil
		tb.user[chain] = true
	case "-A", "-I":
		pos := len(rules)
		if op == "-I" {
			pos = 0
			if len(spec) > 0 {
				if n, err := strconv.Atoi(spec[0]); err == nil {
					pos, spec = n-1, spec[1:]
				}
			}
		}
		if j := slices.Index(spec, "-j"); j >= 0 && j+1 < len(spec) && strings.HasPrefix(spec[j+1], "BANGER-") {
			if _, ok := tb.chains[spec[j+1]]; !ok {
				return nil, &fakeExit{2, "Couldn't load target " + spec[j+1]}
			}
		}
		tb.chains[chain] = slices.Insert(rules, pos, slices.Clone(spec))
	case "-C":
		if idx < 0 {
			return nil, &fakeExit{1, "Bad rule (does a matching rule exist in that chain?)."}
		}
	case "-D":
		if idx < 0 {
			return nil, &fakeExit{1, "Bad rule (does a matching rule exist in that chain?)."}
		}
		tb.chains[chain] = slices.Delete(rules, idx, idx+1)
	case "-F":
		tb.chains[chain] = nil
	case "-X":
		if !tb.user[chain] {
			return nil, &fakeExit{2, "cannot delete built-in chain"}
		}
		if len(rules) > 0 {
			return nil, &fakeExit{4, "Directory not empty"}
		}
		for _, rs := range tb.chains {
			for _, r := range rs {
				if j := slices.Index(r, "-j"); j >= 0 && r[j+1] == chain {
					return nil, &fakeExit{4, "Too many links"}
				}
			}
		}
		delete(tb.chains, chain)
		delete(tb.user, chain)
	case "-S":
		var b strings.Builder
		for _, r := range rules {
			fmt.Fprintf(&b, "-A %s %s\n", chain, argvText(r))
		}
		return []byte(b.String()), nil
	default:
		return nil, &fakeExit{2, "unknown command " + op}
	}
	return nil, nil
}

// render shows every program's tables like iptables -S, tables and user
// chains sorted, built-in chains first.
func (f *fakeXtables) render() string {
	var b strings.Builder
	progs := make([]string, 0, len(f.progs))
	for p := range f.progs {
		progs = append(progs, p)
	}
	sort.Strings(progs)
	for _, p := range progs {
		names := make([]string, 0, len(f.progs[p]))
		for n := range f.progs[p] {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			tb := f.progs[p][n]
			order := slices.Clone(fakeBuiltins[n])
			var user []string
			for c := range tb.user {
				user = append(user, c)
			}
			sort.Strings(user)
			order = append(order, user...)
			fmt.Fprintf(&b, "%s *%s\n", p, n)
			for _, c := range user {
				fmt.Fprintf(&b, "-N %s\n", c)
			}
			for _, c := range order {
				for _, r := range tb.chains[c] {
					fmt.Fprintf(&b, "-A %s %s\n", c, argvText(r))
				}
			}
		}
	}
	return b.String()
}

func (f *fakeXtables) add(t *testing.T, bin string, args ...string) {
	t.Helper()
	if _, err := f.Run(context.Background(), bin, append([]string{"-w"}, args...)...); err != nil {
		t.Fatal(err)
	}
}

func fakeLookPath(installed ...string) func(string) (string, error) {
	return func(name string) (string, error) {
		if slices.Contains(installed, name) {
			return name, nil
		}
		return "", fmt.Errorf("find %s: not installed", name)
	}
}

func newTestXtables(t *testing.T, f *fakeXtables, installed ...string) *xtables {
	t.Helper()
	x, err := findXtables(context.Background(), f, fakeLookPath(installed...))
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// foreign is a rule of someone else's in the filter INPUT chain.
var foreign = []string{"-t", "filter", "-A", "INPUT", "-p", "tcp", "-m", "tcp", "--dport", "22", "-j", "ACCEPT"}

func TestXtablesApplyClear(t *testing.T) {
	ctx := context.Background()
	f := newFakeXtables("iptables-nft", "ip6tables-nft", "ebtables-nft")
	f.add(t, "iptables-nft", foreign...)
	f.add(t, "iptables-nft", "-t", "filter", "-N", "OTHER")
	f.add(t, "iptables-nft", "-t", "filter", "-A", "OTHER", "-j", "RETURN")
	pristine := f.render()
	x := newTestXtables(t, f, "iptables-nft", "ip6tables-nft", "ebtables-nft")
	if x.variant != "iptables-nft" {
		t.Errorf("variant %s", x.variant)
	}

	fw := baseFirewall()
	fw.VMToVM = false
	fw.NAT = []netip.Addr{netip.MustParseAddr("172.30.0.2")}
	fw.AllowHost = []netip.AddrPort{netip.MustParseAddrPort("[fd00::1]:22")}
	if err := x.apply(ctx, fw); err != nil {
		t.Fatal(err)
	}
	once := f.render()
	want := expectedState(fw)
	if once != want {
		t.Fatalf("after apply:\n%s\nwant:\n%s", once, want)
	}
	if err := x.apply(ctx, fw); err != nil {
		t.Fatal(err)
	}
	if twice := f.render(); twice != once {
		t.Fatalf("second apply changed state:\n%s\nfirst:\n%s", twice, once)
	}

	// Dropping NAT removes the nat chain and its jump.
	fw.NAT = nil
	if err := x.apply(ctx, fw); err != nil {
		t.Fatal(err)
	}
	if got := f.render(); got != expectedState(fw) || strings.Contains(got, "POSTROUTING -m comment") {
		t.Fatalf("after apply without NAT:\n%s", got)
	}

	for range 2 {
		if err := x.clear(ctx); err != nil {
			t.Fatal(err)
		}
		if got := f.render(); got != pristine {
			t.Fatalf("after clear:\n%s\nwant:\n%s", got, pristine)
		}
	}
}

// expectedState is what the fake should hold after applying fw to the
// pristine state of TestXtablesApplyClear: banger's jumps on top, the
// foreign rules and chain untouched.
func expectedState(fw Firewall) string {
	var b strings.Builder
	for _, prog := range []string{"ip6tables-nft", "iptables-nft"} {
		fam := "-4"
		if strings.HasPrefix(prog, "ip6") {
			fam = "-6"
		}
		for _, table := range []string{"filter", "nat", "raw"} {
			fmt.Fprintf(&b, "%s *%s\n", prog, table)
			var chains []string
			rules := map[string][]string{}
			var jumps []string
			for _, argv := range xtablesPlan(fw) {
				if argv[0] != fam || argv[2] != table {
					continue
				}
				switch argv[3] {
				case "-N":
					chains = append(chains, argv[4])
				case "-A":
					rules[argv[4]] = append(rules[argv[4]], "-A "+argv[4]+" "+argvText(argv[5:]))
				case "-I":
					jumps = append(jumps, "-A "+argv[4]+" "+argvText(argv[6:]))
				}
			}
			if prog == "iptables-nft" && table == "filter" {
				chains = append(chains, "OTHER")
			}
			sort.Strings(chains)
			for _, c := range chains {
				fmt.Fprintf(&b, "-N %s\n", c)
			}
			for _, c := range fakeBuiltins[table] {
				for _, j := range jumps {
					if strings.HasPrefix(j, "-A "+c+" ") {
						b.WriteString(j + "\n")
					}
				}
				if prog == "iptables-nft" && table == "filter" && c == "INPUT" {
					b.WriteString("-A INPUT " + argvText(foreign[4:]) + "\n")
				}
			}
			for _, c := range chains {
				if c == "OTHER" {
					b.WriteString("-A OTHER -j RETURN\n")
				}
				for _, r := range rules[c] {
					b.WriteString(r + "\n")
				}
			}
		}
	}
	return b.String()
}

func TestXtablesClearWhenNothingExists(t *testing.T) {
	f := newFakeXtables("iptables", "ip6tables", "ebtables")
	f.add(t, "iptables", foreign...)
	pristine := f.render()
	x := newTestXtables(t, f, "iptables", "ip6tables", "ebtables")
	f.calls = nil
	if err := x.clear(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := f.render(); got != pristine {
		t.Errorf("clear changed state:\n%s", got)
	}
	for _, c := range f.calls {
		for _, op := range []string{" -D ", " -F ", " -X ", " -N ", " -A ", " -I "} {
			if strings.Contains(c, op) {
				t.Errorf("clear of nothing ran %s", c)
			}
		}
	}
}

// Jumps another run (or tool) duplicated are all removed.
func TestXtablesClearRemovesDuplicateJumps(t *testing.T) {
	f := newFakeXtables("iptables-legacy", "ebtables-legacy")
	x := newTestXtables(t, f, "iptables-legacy", "ebtables-legacy")
	if err := x.apply(context.Background(), baseFirewall()); err != nil {
		t.Fatal(err)
	}
	f.add(t, "iptables-legacy", "-t", "filter", "-A", "INPUT", "-m", "comment", "--comment", "banger", "-j", "BANGER-INPUT")
	f.add(t, "iptables-legacy", foreign...)
	if err := x.clear(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := f.render()
	if strings.Contains(strings.ToLower(got), "banger") {
		t.Errorf("banger left after clear:\n%s", got)
	}
	if !strings.Contains(got, "-A INPUT "+argvText(foreign[4:])) {
		t.Errorf("foreign rule gone:\n%s", got)
	}
}

func TestXtablesIPv6(t *testing.T) {
	ctx := context.Background()
	fw := baseFirewall()
	f := newFakeXtables("iptables", "ebtables")
	x := newTestXtables(t, f, "iptables", "ebtables")
	if x.v6 != "" {
		t.Fatalf("v6 tool %q", x.v6)
	}
	// Without ip6tables, IPv4 is filtered and nothing runs for IPv6...
	if err := x.apply(ctx, fw); err != nil {
		t.Fatal(err)
	}
	for _, c := range f.calls {
		if strings.Contains(c, "ip6tables") || strings.Contains(c, " -6 ") {
			t.Errorf("ran %s", c)
		}
	}
	// ...unless an allow-host entry needs it.
	fw.AllowHost = []netip.AddrPort{netip.MustParseAddrPort("[fd00::1]:22")}
	if err := x.apply(ctx, fw); err == nil || !strings.Contains(err.Error(), "ip6tables") {
		t.Errorf("v6 allow-host without ip6tables: %v", err)
	}
}

func TestFindXtablesPreference(t *testing.T) {
	tests := []struct {
		name      string
		installed []string
		broken    string // a tool whose listing fails
		want      string
		wantV6    string
	}{
		{"nft first", []string{"iptables-nft", "iptables", "iptables-legacy", "ip6tables-nft"}, "", "iptables-nft", "ip6tables-nft"},
		{"plain next", []string{"iptables", "iptables-legacy", "ip6tables-legacy"}, "", "iptables", ""},
		{"legacy last", []string{"iptables-legacy", "ip6tables-legacy"}, "", "iptables-legacy", "ip6tables-legacy"},
		{"skip a tool that cannot list", []string{"iptables-nft", "iptables-legacy"}, "iptables-nft", "iptables-legacy", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeXtables(slices.DeleteFunc(slices.Clone(tc.installed), func(s string) bool { return s == tc.broken })...)
			x := newTestXtables(t, f, tc.installed...)
			if x.variant != tc.want || x.v4 != tc.want || x.v6 != tc.wantV6 {
				t.Errorf("got %s (%s, %q)", x.variant, x.v4, x.v6)
			}
		})
	}
	_, err := findXtables(context.Background(), newFakeXtables(), fakeLookPath())
	if err == nil || !strings.Contains(err.Error(), "iptables-legacy") {
		t.Errorf("nothing installed: %v", err)
	}
}

// Errors of the tools name the tool and the chain.
func TestXtablesErrorsNameTheTool(t *testing.T) {
	f := newFakeXtables("iptables-nft", "ebtables-nft")
	x := newTestXtables(t, f, "iptables-nft", "ebtables-nft")
	delete(f.progs["iptables-nft"], "raw") // a kernel without the raw table
	err := x.apply(context.Background(), baseFirewall())
	if err == nil || !strings.Contains(err.Error(), "iptables-nft") || !strings.Contains(err.Error(), "raw/BANGER-PREROUTING") {
		t.Errorf("error %v", err)
	}
}

func TestNftUnsupported(t *testing.T) {
	// The shapes google/nftables returns: netlink errors joined and
	// wrapped by Flush, or the dial error itself.
	wrap := func(errno unix.Errno) error {
		return fmt.Errorf("create table banger-probe: %w",
			fmt.Errorf("conn.Receive: %w", errors.Join(&netlink.OpError{Op: "receive", Err: errno})))
	}
	for _, errno := range []unix.Errno{unix.EPROTONOSUPPORT, unix.EOPNOTSUPP, unix.EAFNOSUPPORT, unix.ENOENT} {
		if !nftUnsupported(wrap(errno)) {
			t.Errorf("%v not recognized", errno)
		}
	}
	dial := &netlink.OpError{Op: "socket", Err: os.NewSyscallError("socket", unix.EPROTONOSUPPORT)}
	if !nftUnsupported(dial) {
		t.Error("socket EPROTONOSUPPORT not recognized")
	}
	for _, err := range []error{wrap(unix.EPERM), wrap(unix.EINVAL), wrap(unix.ENOBUFS), errors.New("boom"), context.Canceled} {
		if nftUnsupported(err) {
			t.Errorf("%v taken for missing nftables", err)
		}
	}
}
