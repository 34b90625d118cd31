package netdev

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// With the xtables backend, what the nftables bridge table does is done
// with ebtables: iptables sees bridged frames only through br_netfilter,
// and never sees ARP or the source MAC of a frame delivered to the host.
// There is no fallback for the fallback: without a working ebtables the
// firewall is refused (ApplyFirewall fails and says why), so banger does
// not run guests that could forge each other's addresses.
//
//   - BANGER-GUESTS (filter), entered from INPUT and FORWARD, so it sees every
//     frame a port sends to the host or to another port: per guest, IPv4
//     from its MAC and address and ARP naming them as sender return; then
//     every other frame from a banger tap is dropped.
//   - BANGER-ISOLATE (filter, only with VMToVM off), entered from FORWARD:
//     frames from one banger tap to another are dropped. This is what keeps
//     guests apart without br_netfilter.
//
// User chains get policy RETURN: ebtables' default for them is ACCEPT,
// which would end the built-in chain.

// Chain names of the ebtables part.
const (
	ebGuests  = "BANGER-GUESTS"
	ebIsolate = "BANGER-ISOLATE"
)

// ebChain is one of banger's ebtables chains and the built-in chains that
// jump to it.
type ebChain struct {
	name     string
	builtins []string
}

var ebChains = []ebChain{
	{ebGuests, []string{"INPUT", "FORWARD"}},
	{ebIsolate, []string{"FORWARD"}},
}

// ebVariants are the ebtables programs to try for an iptables variant, in
// order: the same flavour first, since a kernel that refused nftables
// refuses ebtables-nft too.
func ebVariants(iptables string) []string {
	if strings.HasSuffix(iptables, "-legacy") {
		return []string{"ebtables-legacy", "ebtables"}
	}
	return []string{"ebtables-nft", "ebtables", "ebtables-legacy"}
}

// findEbtables picks the first installed ebtables that can list its filter
// table; the error says what was tried.
func findEbtables(ctx context.Context, run runner, lookPath func(string) (string, error), iptables string) (string, error) {
	var errs []error
	for _, name := range ebVariants(iptables) {
		p, err := lookPath(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if _, err := run.Run(ctx, p, "--concurrent", "-t", "filter", "-L", "INPUT"); err != nil {
			errs = append(errs, fmt.Errorf("list filter table with %s: %w", name, err))
			continue
		}
		return p, nil
	}
	return "", errors.Join(errs...)
}

// ebtablesRules returns the rules of chain for fw (argv after "-A CHAIN"),
// and false when fw needs no such chain.
func ebtablesRules(fw Firewall, chain string) ([][]string, bool) {
	switch chain {
	case ebGuests:
		var rules [][]string
		for _, g := range fw.Guests {
			if !g.IP.IsValid() {
				continue
			}
			mac, ip := g.MAC.String(), g.IP.String()
			rules = append(rules,
				[]string{"-i", g.Tap, "-s", mac, "-p", "IPv4", "--ip-src", ip, "-j", "RETURN"},
				[]string{"-i", g.Tap, "-s", mac, "-p", "ARP", "--arp-htype", "1", "--arp-ptype", "0x0800",
					"--arp-mac-src", mac, "--arp-ip-src", ip, "-j", "RETURN"},
			)
		}
		return append(rules, []string{"-i", TapPrefix + "+", "-j", "DROP"}), true
	case ebIsolate:
		if fw.VMToVM {
			return nil, false
		}
		return [][]string{{"-i", TapPrefix + "+", "-o", TapPrefix + "+", "-j", "DROP"}}, true
	}
	return nil, false
}

// ebtablesPlan lists the commands that build fw's chains from nothing, as
// argv without the program: -N with policy RETURN, the rules, the jumps.
func ebtablesPlan(fw Firewall) [][]string {
	var plan [][]string
	for _, c := range ebChains {
		rules, ok := ebtablesRules(fw, c.name)
		if !ok {
			continue
		}
		plan = append(plan, []string{"-t", "filter", "-N", c.name, "-P", "RETURN"})
		for _, r := range rules {
			plan = append(plan, append([]string{"-t", "filter", "-A", c.name}, r...))
		}
		for _, b := range c.builtins {
			plan = append(plan, []string{"-t", "filter", "-I", b, "1", "-j", c.name})
		}
	}
	return plan
}

// ebExec runs one ebtables command, waiting for its lock.
func (x *xtables) ebExec(ctx context.Context, args ...string) ([]byte, error) {
	return x.run.Run(ctx, x.eb, append([]string{"--concurrent", "-t", "filter"}, args...)...)
}

// ebApply rebuilds banger's ebtables chains for fw; see the top of this file.
func (x *xtables) ebApply(ctx context.Context, fw Firewall) error {
	for _, c := range ebChains {
		rules, ok := ebtablesRules(fw, c.name)
		if !ok {
			if err := x.ebRemove(ctx, c); err != nil {
				return err
			}
			continue
		}
		exists, err := x.ebExists(ctx, c.name)
		if err != nil {
			return err
		}
		if exists {
			if _, err := x.ebExec(ctx, "-F", c.name); err != nil {
				return fmt.Errorf("flush ebtables chain %s: %w", c.name, err)
			}
		}
		setup := []string{"-N", c.name, "-P", "RETURN"}
		if exists {
			setup = []string{"-P", c.name, "RETURN"}
		}
		if _, err := x.ebExec(ctx, setup...); err != nil {
			return fmt.Errorf("set up ebtables chain %s: %w", c.name, err)
		}
		for _, r := range rules {
			if _, err := x.ebExec(ctx, append([]string{"-A", c.name}, r...)...); err != nil {
				return fmt.Errorf("add rule to ebtables chain %s: %w", c.name, err)
			}
		}
		for _, b := range c.builtins {
			n, err := x.ebJumps(ctx, b, c.name)
			if err != nil {
				return err
			}
			if n == 0 {
				if _, err := x.ebExec(ctx, "-I", b, "1", "-j", c.name); err != nil {
					return fmt.Errorf("insert ebtables jump %s -> %s: %w", b, c.name, err)
				}
			}
		}
	}
	return nil
}

// ebClear removes banger's ebtables chains and jumps; missing ones are
// skipped.
func (x *xtables) ebClear(ctx context.Context) error {
	for _, c := range ebChains {
		if err := x.ebRemove(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

func (x *xtables) ebRemove(ctx context.Context, c ebChain) error {
	exists, err := x.ebExists(ctx, c.name)
	if err != nil || !exists {
		return err
	}
	for _, b := range c.builtins {
		n, err := x.ebJumps(ctx, b, c.name)
		if err != nil {
			return err
		}
		for range min(n, maxJumps) {
			if _, err := x.ebExec(ctx, "-D", b, "-j", c.name); err != nil {
				return fmt.Errorf("delete ebtables jump %s -> %s: %w", b, c.name, err)
			}
		}
	}
	if _, err := x.ebExec(ctx, "-F", c.name); err != nil {
		return fmt.Errorf("flush ebtables chain %s: %w", c.name, err)
	}
	if _, err := x.ebExec(ctx, "-X", c.name); err != nil {
		return fmt.Errorf("delete ebtables chain %s: %w", c.name, err)
	}
	return nil
}

// ebExists lists chain: ebtables exits 1 for one that is not there.
func (x *xtables) ebExists(ctx context.Context, chain string) (bool, error) {
	_, err := x.ebExec(ctx, "-L", chain)
	if err == nil {
		return true, nil
	}
	if exitStatus(err) == 1 {
		return false, nil
	}
	return false, fmt.Errorf("list ebtables chain %s: %w", chain, err)
}

// ebJumps counts the rules of builtin that are exactly a jump to chain.
func (x *xtables) ebJumps(ctx context.Context, builtin, chain string) (int, error) {
	out, err := x.ebExec(ctx, "-L", builtin)
	if err != nil {
		return 0, fmt.Errorf("list ebtables chain %s: %w", builtin, err)
	}
	n := 0
	for _, l := range strings.Split(string(out), "\n") {
		if strings.TrimSpace(l) == "-j "+chain {
			n++
		}
	}
	return n, nil
}
