// Package resolved routes a DNS zone to one server on one network link
// through systemd-resolved, by running resolvectl as an argv through
// internal/execx (never a shell). The root helper uses it to send the
// host's ".vm" lookups to bangerd's DNS server on banger's bridge.
//
// systemd-resolved is used only when all of these hold (see Available):
//   - resolvectl is installed (on PATH or in an sbin directory);
//   - `resolvectl --version` reports systemd 246 or newer, the first that
//     accepts "IP:PORT" as a link's DNS server;
//   - RuntimeDir exists: systemd-resolved creates it when it starts, and it
//     is absent on hosts (and containers) that never ran it. The directory
//     is checked instead of `resolvectl status` because that talks D-Bus
//     and may bus-activate a resolver the host does not use. A resolved
//     that ran earlier in this boot and was stopped passes the check; Sync
//     then fails with resolvectl's own error.
//
// Otherwise Available answers false with a reason, and the helper reports
// routing as not applied instead of failing.
package resolved

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"time"

	"banger/internal/execx"
)

// Defaults.
const (
	// Zone is the zone routed to bangerd, as a routing-only domain ("~vm").
	Zone = "vm"
	// MinSystemd is the oldest systemd whose resolvectl takes "IP:PORT".
	MinSystemd = 246
	// RuntimeDir is systemd-resolved's runtime directory.
	RuntimeDir = "/run/systemd/resolve"
	// CommandTimeout bounds each resolvectl run.
	CommandTimeout = 10 * time.Second
)

// seeDocs ends every reason and error meant for the owner.
const seeDocs = "; see docs/dns.md"

// Runner runs a program; *execx.Runner implements it.
type Runner interface {
	Run(ctx context.Context, bin string, args ...string) ([]byte, error)
}

// Resolved routes a zone through systemd-resolved. The zero value is
// ready to use: every empty field takes its default.
type Resolved struct {
	// Runner runs resolvectl. Default execx.Default.
	Runner Runner
	// LookPath finds resolvectl. Default execx.LookPath.
	LookPath func(bin string) (string, error)
	// RuntimeDir is checked to tell that systemd-resolved runs. Default RuntimeDir.
	RuntimeDir string
	// Zone is the zone routed. Default Zone.
	Zone string
}

// New returns a Resolved with the defaults.
func New() *Resolved { return &Resolved{} }

func (r *Resolved) runner() Runner {
	if r.Runner != nil {
		return r.Runner
	}
	return execx.Default
}

func (r *Resolved) bin() (string, error) {
	look := r.LookPath
	if look == nil {
		look = execx.LookPath
	}
	return look("resolvectl")
}

func (r *Resolved) zone() string {
	if r.Zone != "" {
		return r.Zone
	}
	return Zone
}

// Available reports whether systemd-resolved can route the zone on this
// host and, when it cannot, why (a sentence that points at docs/dns.md).
func (r *Resolved) Available(ctx context.Context) (bool, string) {
	const na = "systemd-resolved not available on this host: "
	bin, err := r.bin()
	if err != nil {
		return false, na + "resolvectl not found" + seeDocs
	}
	dir := r.RuntimeDir
	if dir == "" {
		dir = RuntimeDir
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return false, na + "it is not running (no " + dir + ")" + seeDocs
	}
	ctx, cancel := context.WithTimeout(ctx, CommandTimeout)
	defer cancel()
	out, err := r.runner().Run(ctx, bin, "--version")
	if err != nil {
		return false, na + err.Error() + seeDocs
	}
	v, err := parseSystemdVersion(out)
	if err != nil {
		return false, na + err.Error() + seeDocs
	}
	if v < MinSystemd {
		return false, fmt.Sprintf("systemd-resolved on this host is systemd %d; routing .%s to an IP:PORT server needs %d or newer%s",
			v, r.zone(), MinSystemd, seeDocs)
	}
	return true, ""
}

// Sync routes the zone on link to server: the link stops being a default
// route, gets the routing-only domain "~ZONE", then server as its only DNS
// server (in that order, so no other name is ever sent to server). If a
// step fails, the link is reverted.
func (r *Resolved) Sync(ctx context.Context, link string, server netip.AddrPort) error {
	argvs, err := resolvectlArgs(actionSync, link, r.zone(), server)
	if err != nil {
		return fmt.Errorf("route .%s on %s: %w", r.zone(), link, err)
	}
	if err := r.run(ctx, argvs); err != nil {
		if rerr := r.Revert(ctx, link); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return fmt.Errorf("route .%s on %s: %w", r.zone(), link, err)
	}
	return nil
}

// Revert drops every setting banger (or anyone) made on link in
// systemd-resolved.
func (r *Resolved) Revert(ctx context.Context, link string) error {
	argvs, err := resolvectlArgs(actionRevert, link, r.zone(), netip.AddrPort{})
	if err != nil {
		return fmt.Errorf("revert %s: %w", link, err)
	}
	if err := r.run(ctx, argvs); err != nil {
		return fmt.Errorf("revert %s: %w", link, err)
	}
	return nil
}

func (r *Resolved) run(ctx context.Context, argvs [][]string) error {
	bin, err := r.bin()
	if err != nil {
		return err
	}
	for _, argv := range argvs {
		cctx, cancel := context.WithTimeout(ctx, CommandTimeout)
		_, err := r.runner().Run(cctx, bin, argv...)
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}

// action is what resolvectlArgs builds argv for.
type action int

const (
	actionSync action = iota + 1
	actionRevert
)

var (
	linkRe = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$`)
	zoneRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

// resolvectlArgs returns the resolvectl arguments (without the program)
// for a on link: sync routes "~zone" to server, revert drops the link's
// settings. It checks its inputs again, so no argument can start with "-"
// and be taken for an option.
func resolvectlArgs(a action, link, zone string, server netip.AddrPort) ([][]string, error) {
	if !linkRe.MatchString(link) {
		return nil, fmt.Errorf("link %q: not an interface name", link)
	}
	switch a {
	case actionSync:
		if !zoneRe.MatchString(zone) {
			return nil, fmt.Errorf("zone %q: want one DNS label", zone)
		}
		if !server.IsValid() || server.Port() == 0 || !server.Addr().Is4() {
			return nil, fmt.Errorf("server %s: want an IPv4 addr:port with a port", server)
		}
		return [][]string{
			{"default-route", link, "false"},
			{"domain", link, "~" + zone},
			{"dns", link, server.String()},
		}, nil
	case actionRevert:
		return [][]string{{"revert", link}}, nil
	default:
		return nil, fmt.Errorf("unknown action %d", a)
	}
}

var versionRe = regexp.MustCompile(`^systemd ([0-9]{1,5})\b`)

// parseSystemdVersion reads the major version from `resolvectl --version`,
// whose first line is like "systemd 252 (252.22-1~deb12u1)".
func parseSystemdVersion(out []byte) (int, error) {
	first, _, _ := bytes.Cut(bytes.TrimSpace(out), []byte("\n"))
	m := versionRe.FindSubmatch(bytes.TrimSpace(first))
	if m == nil {
		return 0, fmt.Errorf("read systemd version from %q: unrecognized", truncate(first, 80))
	}
	v, err := strconv.Atoi(string(m[1]))
	if err != nil {
		return 0, fmt.Errorf("read systemd version: %w", err)
	}
	return v, nil
}

func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "..."
}

// Disabled is a resolver that is never available, with Reason as the
// answer: for a helper whose bridge lives in another network namespace
// than the one systemd-resolved serves.
type Disabled struct {
	Reason string
}

// errDisabled is returned by Disabled's Sync and Revert.
var errDisabled = errors.New("resolver routing is disabled")

// Available implements the helper's Resolver.
func (d Disabled) Available(context.Context) (bool, string) { return false, d.Reason }

// Sync implements the helper's Resolver; it always fails.
func (d Disabled) Sync(context.Context, string, netip.AddrPort) error {
	return fmt.Errorf("%w: %s", errDisabled, d.Reason)
}

// Revert implements the helper's Resolver; it always fails.
func (d Disabled) Revert(context.Context, string) error {
	return fmt.Errorf("%w: %s", errDisabled, d.Reason)
}
