package netdev

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"banger/internal/execx"
)

// Firewall backends. A Host picks one at its first firewall operation and
// keeps it: nftables when the kernel takes nftables netlink batches, else
// the iptables tools (xtables.go).
const (
	BackendNftables = "nftables"
	BackendXtables  = "xtables"
)

// probeTable is the name of the table the probe creates and deletes in one
// batch, so the probe leaves nothing behind and never touches banger's own.
const probeTable = "banger-probe"

// Backend names the firewall backend the Host uses: "nftables", or
// "xtables (VARIANT)" with the iptables tool found, e.g.
// "xtables (iptables-legacy)". It chooses the backend first if no firewall
// operation has yet; when that fails it returns "unknown: " and the reason,
// and the next call tries again. It is meant for banger doctor and logs.
func (h *Host) Backend() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.chooseBackend(context.Background()); err != nil {
		return "unknown: " + err.Error()
	}
	if h.xt != nil {
		return BackendXtables + " (" + h.xt.variant + ")"
	}
	return BackendNftables
}

// chooseBackend probes nftables once per Host, with h.mu held. Only the
// errors nftUnsupported recognizes switch to xtables; any other probe error
// is returned and the choice is left for the next call.
func (h *Host) chooseBackend(ctx context.Context) error {
	if h.backend != "" {
		return nil
	}
	perr := h.probeNftables()
	if perr == nil {
		h.backend = BackendNftables
		return nil
	}
	if !nftUnsupported(perr) {
		return fmt.Errorf("probe nftables: %w", perr)
	}
	x, err := findXtables(ctx, hostRunner{h}, execx.LookPath)
	if err != nil {
		return fmt.Errorf("nftables refused (%w), and no iptables fallback: %w", perr, err)
	}
	h.xt = x
	h.backend = BackendXtables
	return nil
}

// probeNftables creates and deletes a scratch inet table in one batch: the
// same kind of batch ApplyFirewall sends, with no lasting effect.
func (h *Host) probeNftables() error {
	c, err := h.nft()
	if err != nil {
		return err
	}
	t := &nftables.Table{Name: probeTable, Family: nftables.TableFamilyINet}
	c.AddTable(t)
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("create table %s: %w", probeTable, err)
	}
	return nil
}

// nftUnsupported reports whether err says that nftables itself is missing
// or refused, rather than that one request was wrong: no netfilter netlink
// protocol (EPROTONOSUPPORT), no nf_tables subsystem behind it (the batch is
// answered EOPNOTSUPP), no inet family (EAFNOSUPPORT), or a sandbox that
// answers ENOENT for the whole subsystem. Permission errors and everything
// else are not in the class: falling back on them would hide a real fault.
func nftUnsupported(err error) bool {
	for _, e := range []error{unix.EPROTONOSUPPORT, unix.EOPNOTSUPP, unix.EAFNOSUPPORT, unix.ENOENT} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
