package sysrun

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"banger/internal/errdefs"
	"banger/internal/installmeta"
	"banger/internal/trustpath"
)

// Pins are what root pins at install for the helper: the only firecracker
// and jailer binaries it runs, the uid range it runs them as, and the
// bridge subnet. They go into the install metadata; no request and no
// owner's configuration can change them.
type Pins struct {
	FirecrackerBin string // default installmeta.DefaultFirecrackerBin
	JailerBin      string // default installmeta.DefaultJailerBin
	VMMUIDBase     int    // default installmeta.DefaultVMMUIDBase
	// Subnet is the bridge subnet (default installmeta.DefaultSubnet):
	// the helper gives banger's bridge no other address.
	Subnet string
}

// Check refuses a pinned binary that root would not run (a symlink,
// setuid or setgid, not root's alone along its path), a uid range that
// an account, a group or a subordinate id range already uses, and a subnet
// root would not pin (installmeta.ValidSubnet; CheckSubnetFree checks it
// against the host). A binary
// that does not exist is accepted: Firecracker is then off, and doctor
// says so. Nothing is executed.
func (p Pins) Check(accounts Accounts) error {
	m := p.apply(installmeta.Meta{})
	fc, jailer := m.Firecracker()
	for _, b := range []struct{ flag, path string }{{"--firecracker-bin", fc}, {"--jailer-bin", jailer}} {
		err := trustpath.Binary(b.path, 0)
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			continue
		}
		return errdefs.Invalid("%s %s: %v", b.flag, b.path, err)
	}
	if p.Subnet != "" {
		if _, err := installmeta.ValidSubnet(p.Subnet); err != nil {
			return errdefs.Invalid("--%v", err)
		}
	}
	base := m.VMMUIDs()
	if err := installmeta.ValidVMMUIDBase(base); err != nil {
		return errdefs.Invalid("--vmm-uid-base %v", err)
	}
	return accounts.checkFree(base, installmeta.VMMUIDCount)
}

// apply writes the pins into m.
func (p Pins) apply(m installmeta.Meta) installmeta.Meta {
	m.FirecrackerBin, m.JailerBin, m.VMMUIDBase, m.Subnet = p.FirecrackerBin, p.JailerBin, p.VMMUIDBase, p.Subnet
	return m
}

// Accounts are the files that say which uids and gids are taken.
type Accounts struct {
	Passwd, Group, SubUID, SubGID string
}

// SystemAccounts are the host's.
var SystemAccounts = Accounts{Passwd: "/etc/passwd", Group: "/etc/group", SubUID: "/etc/subuid", SubGID: "/etc/subgid"}

// checkFree refuses when an id in [base, base+n) belongs to an account or
// group, or to a subordinate id range. A missing file takes no ids.
func (a Accounts) checkFree(base, n int) error {
	overlaps := func(lo, count int) bool { return lo < base+n && base < lo+count }
	for _, f := range []struct {
		path  string
		field int  // the id's field in a passwd or group line
		sub   bool // name:start:count
	}{{a.Passwd, 2, false}, {a.Group, 2, false}, {a.SubUID, 1, true}, {a.SubGID, 1, true}} {
		file, err := os.Open(f.path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("check the VMM uid range: %w", err)
		}
		sc := bufio.NewScanner(file)
		for sc.Scan() {
			parts := strings.Split(sc.Text(), ":")
			if len(parts) <= f.field || (f.sub && len(parts) < 3) {
				continue
			}
			id, err := strconv.Atoi(parts[f.field])
			if err != nil {
				continue
			}
			count := 1
			if f.sub {
				if count, err = strconv.Atoi(parts[2]); err != nil {
					continue
				}
			}
			if overlaps(id, count) {
				file.Close()
				return errdefs.Invalid("the VMM uid range %d-%d (--vmm-uid-base) overlaps %s of %s in %s: firecracker runs as those ids, which no one else may have", base, base+n-1, idDesc(id, count), parts[0], f.path)
			}
		}
		file.Close()
	}
	return nil
}

func idDesc(id, count int) string {
	if count == 1 {
		return "id " + strconv.Itoa(id)
	}
	return fmt.Sprintf("ids %d-%d", id, id+count-1)
}
