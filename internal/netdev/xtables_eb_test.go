package netdev

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
)

// fakeEb is a stateful stand-in for ebtables' filter table: -N (with -P),
// -P, -A, -I, -D, -F, -X and -L on in-memory chains, failing like the tool
// (exit 1 listing a missing chain).
type fakeEb struct {
	prog   string
	chains map[string][][]string
	policy map[string]string
	user   map[string]bool
}

func newFakeEb(prog string) *fakeEb {
	e := &fakeEb{prog: prog, chains: map[string][][]string{}, policy: map[string]string{}, user: map[string]bool{}}
	for _, b := range []string{"INPUT", "FORWARD", "OUTPUT"} {
		e.chains[b], e.policy[b] = nil, "ACCEPT"
	}
	return e
}

func (e *fakeEb) run(args []string) ([]byte, error) {
	if len(args) < 5 || args[0] != "--concurrent" || args[1] != "-t" || args[2] != "filter" {
		return nil, &fakeExit{2, "want --concurrent -t filter: " + strings.Join(args, " ")}
	}
	op, chain, spec := args[3], args[4], args[5:]
	rules, exists := e.chains[chain]
	if op != "-N" && !exists {
		return nil, &fakeExit{1, "Chain '" + chain + "' does not exist"}
	}
	switch op {
	case "-N":
		if exists {
			return nil, &fakeExit{255, "Chain already exists"}
		}
		e.chains[chain], e.user[chain], e.policy[chain] = nil, true, "ACCEPT"
		if len(spec) == 2 && spec[0] == "-P" {
			e.policy[chain] = spec[1]
		}
	case "-P":
		e.policy[chain] = spec[0]
	case "-A", "-I":
		if j := slices.Index(spec, "-j"); j >= 0 && strings.HasPrefix(spec[j+1], "BANGER-") {
			if _, ok := e.chains[spec[j+1]]; !ok {
				return nil, &fakeExit{2, "no chain " + spec[j+1]}
			}
		}
		if op == "-A" {
			e.chains[chain] = append(rules, slices.Clone(spec))
		} else {
			e.chains[chain] = slices.Insert(rules, 0, slices.Clone(spec[1:]))
		}
	case "-D":
		i := slices.IndexFunc(rules, func(r []string) bool { return slices.Equal(r, spec) })
		if i < 0 {
			return nil, &fakeExit{4, "no such rule"}
		}
		e.chains[chain] = slices.Delete(rules, i, i+1)
	case "-F":
		e.chains[chain] = nil
	case "-X":
		if !e.user[chain] || len(rules) > 0 {
			return nil, &fakeExit{4, "cannot delete " + chain}
		}
		for _, rs := range e.chains {
			for _, r := range rs {
				if slices.Contains(r, chain) {
					return nil, &fakeExit{4, "chain is referenced"}
				}
			}
		}
		delete(e.chains, chain)
		delete(e.user, chain)
		delete(e.policy, chain)
	case "-L":
		var b strings.Builder
		fmt.Fprintf(&b, "Bridge chain: %s, entries: %d, policy: %s\n", chain, len(rules), e.policy[chain])
		for _, r := range rules {
			b.WriteString(strings.Join(r, " ") + "\n")
		}
		return []byte(b.String()), nil
	default:
		return nil, &fakeExit{2, "unknown command " + op}
	}
	return nil, nil
}

// render shows the chains, built-in first, each with policy and rules.
func (e *fakeEb) render() string {
	names := []string{"INPUT", "FORWARD", "OUTPUT"}
	var user []string
	for c := range e.user {
		user = append(user, c)
	}
	sort.Strings(user)
	var b strings.Builder
	for _, c := range append(names, user...) {
		fmt.Fprintf(&b, "%s policy %s\n", c, e.policy[c])
		for _, r := range e.chains[c] {
			b.WriteString("  " + strings.Join(r, " ") + "\n")
		}
	}
	return b.String()
}

func TestEbtablesPlan(t *testing.T) {
	fw := baseFirewall()
	fw.Guests = []Guest{guest("tap-fc-a", "172.30.0.2"), {Tap: "tap-fc-old"}}
	got := []string{}
	for _, argv := range ebtablesPlan(fw) {
		got = append(got, strings.Join(argv, " "))
	}
	want := []string{
		"-t filter -N BANGER-GUESTS -P RETURN",
		"-t filter -A BANGER-GUESTS -i tap-fc-a -s 02:fc:ac:1e:00:02 -p IPv4 --ip-src 172.30.0.2 -j RETURN",
		"-t filter -A BANGER-GUESTS -i tap-fc-a -s 02:fc:ac:1e:00:02 -p ARP --arp-htype 1 --arp-ptype 0x0800 --arp-mac-src 02:fc:ac:1e:00:02 --arp-ip-src 172.30.0.2 -j RETURN",
		"-t filter -A BANGER-GUESTS -i tap-fc+ -j DROP",
		"-t filter -I INPUT 1 -j BANGER-GUESTS",
		"-t filter -I FORWARD 1 -j BANGER-GUESTS",
	}
	if !slices.Equal(got, want) {
		t.Errorf("plan:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	fw.VMToVM = false
	got = got[:0]
	for _, argv := range ebtablesPlan(fw) {
		got = append(got, strings.Join(argv, " "))
	}
	want = append(want,
		"-t filter -N BANGER-ISOLATE -P RETURN",
		"-t filter -A BANGER-ISOLATE -i tap-fc+ -o tap-fc+ -j DROP",
		"-t filter -I FORWARD 1 -j BANGER-ISOLATE",
	)
	if !slices.Equal(got, want) {
		t.Errorf("plan with vm-to-vm off:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// The ebtables chains are built, kept once across applies, follow VMToVM,
// and go with clear, leaving others' rules.
func TestXtablesEbtablesApplyClear(t *testing.T) {
	ctx := context.Background()
	f := newFakeXtables("iptables-nft", "ebtables-nft")
	x := newTestXtables(t, f, "iptables-nft", "ebtables-nft")
	if _, err := f.eb.run([]string{"--concurrent", "-t", "filter", "-A", "FORWARD", "-p", "IPv6", "-j", "ACCEPT"}); err != nil {
		t.Fatal(err)
	}
	pristine := f.eb.render()
	fw := baseFirewall()
	fw.VMToVM = false
	fw.Guests = []Guest{guest("tap-fc-a", "172.30.0.2")}
	for range 2 {
		if err := x.apply(ctx, fw); err != nil {
			t.Fatal(err)
		}
	}
	want := `INPUT policy ACCEPT
  -j BANGER-GUESTS
FORWARD policy ACCEPT
  -j BANGER-ISOLATE
  -j BANGER-GUESTS
  -p IPv6 -j ACCEPT
OUTPUT policy ACCEPT
BANGER-GUESTS policy RETURN
  -i tap-fc-a -s 02:fc:ac:1e:00:02 -p IPv4 --ip-src 172.30.0.2 -j RETURN
  -i tap-fc-a -s 02:fc:ac:1e:00:02 -p ARP --arp-htype 1 --arp-ptype 0x0800 --arp-mac-src 02:fc:ac:1e:00:02 --arp-ip-src 172.30.0.2 -j RETURN
  -i tap-fc+ -j DROP
BANGER-ISOLATE policy RETURN
  -i tap-fc+ -o tap-fc+ -j DROP
`
	if got := f.eb.render(); got != want {
		t.Fatalf("ebtables after two applies:\n%s\nwant:\n%s", got, want)
	}
	fw.VMToVM = true
	fw.Guests = nil
	if err := x.apply(ctx, fw); err != nil {
		t.Fatal(err)
	}
	if got := f.eb.render(); strings.Contains(got, "ISOLATE") || strings.Contains(got, "tap-fc-a") || !strings.Contains(got, "-i tap-fc+ -j DROP") {
		t.Fatalf("ebtables with vm-to-vm on and no guests:\n%s", got)
	}
	if err := x.clear(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.eb.render(); got != pristine {
		t.Fatalf("after clear:\n%s\nwant:\n%s", got, pristine)
	}
}

// Without a working ebtables the fallback refuses the whole firewall, and
// says why, before it touches anything.
func TestXtablesRefusesWithoutEbtables(t *testing.T) {
	f := newFakeXtables("iptables-legacy")
	x := newTestXtables(t, f, "iptables-legacy")
	before := len(f.calls)
	err := x.apply(context.Background(), baseFirewall())
	if err == nil || !strings.Contains(err.Error(), "without ebtables") || !strings.Contains(err.Error(), "ebtables-legacy") {
		t.Fatalf("apply without ebtables: %v", err)
	}
	if len(f.calls) != before {
		t.Errorf("ran %v before refusing", f.calls[before:])
	}
	// An ebtables that is installed but cannot list its table (the
	// kernel refused it too) counts as missing.
	f = newFakeXtables("iptables-nft", "ebtables-nft")
	f.eb.prog = "broken"
	x = newTestXtables(t, f, "iptables-nft", "ebtables-nft")
	if err := x.apply(context.Background(), baseFirewall()); err == nil || !strings.Contains(err.Error(), "list filter table with ebtables-nft") {
		t.Fatalf("apply with a broken ebtables: %v", err)
	}
}
