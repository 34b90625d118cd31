package sysrun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"banger/internal/errdefs"
	"banger/internal/installmeta"
	"banger/internal/netdev"
)

// HostPrefixes lists the addresses and routes of the namespace banger's
// bridge lives in (netdev.Host.HostPrefixes); tests pass their own.
type HostPrefixes func(ctx context.Context) ([]netdev.HostPrefix, error)

// hostPrefixesIn lists those of the network namespace at nsPath, or of
// the caller's own namespace when nsPath is empty.
func hostPrefixesIn(nsPath string) HostPrefixes {
	return func(ctx context.Context) ([]netdev.HostPrefix, error) {
		h := netdev.New()
		if nsPath != "" {
			var err error
			if h, err = netdev.NewInNetns(nsPath); err != nil {
				return nil, err
			}
		}
		defer h.Close()
		return h.HostPrefixes(ctx)
	}
}

// CheckSubnetFree refuses to pin a subnet that overlaps an address or a
// route the host has, naming it: the bridge's address would win for every
// user of the host. The bridges the helper's ledger (in helperStateDir)
// records are banger's own, and a reinstall may move them; they do not
// count. The helper checks again at each ensure_bridge.
func (p Pins) CheckSubnetFree(ctx context.Context, list HostPrefixes, helperStateDir string) error {
	subnet := p.apply(installmeta.Meta{}).BridgeSubnet()
	own, err := ledgerBridges(helperStateDir)
	if err != nil {
		return err
	}
	host, err := list(ctx)
	if err != nil {
		return fmt.Errorf("check the bridge subnet: %w", err)
	}
	others := host[:0:0]
	for _, h := range host {
		if !own[h.Dev] {
			others = append(others, h)
		}
	}
	if err := netdev.SubnetConflict(subnet, "", others); err != nil {
		return errdefs.Invalid("--subnet: %v: choose a subnet the host does not use", err)
	}
	return nil
}

// helperLedgerFile is helper.LedgerFile (a test checks they agree; the
// CLI does not link the helper).
const helperLedgerFile = "ledger.json"

// ledgerBridges reads the names of the bridges the helper's ledger
// records; a missing ledger records none. Only the names are read: the
// helper owns the rest of the file.
func ledgerBridges(helperStateDir string) (map[string]bool, error) {
	data, err := os.ReadFile(filepath.Join(helperStateDir, helperLedgerFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the helper's ledger: %w", err)
	}
	var l struct {
		Bridges map[string]json.RawMessage `json:"bridges"`
	}
	if err := json.Unmarshal(data, &l); err != nil {
		return nil, fmt.Errorf("read the helper's ledger: %w", err)
	}
	own := make(map[string]bool, len(l.Bridges))
	for name := range l.Bridges {
		own[name] = true
	}
	return own, nil
}
