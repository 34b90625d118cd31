// Package installmeta reads and writes banger's install metadata
// (/etc/banger/install.toml): who the owner is, which build installed
// banger, and what root pinned for the helper (Firecracker binaries, VMM
// uids, the bridge subnet). The root helper serves only root and the owner
// named here.
package installmeta

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// DefaultPath is where `banger system install` and `system run` write the
// metadata.
const DefaultPath = "/etc/banger/install.toml"

// Meta is the content of install.toml.
type Meta struct {
	OwnerUser   string    `toml:"owner_user"`
	OwnerUID    int       `toml:"owner_uid"`
	OwnerGID    int       `toml:"owner_gid"`
	OwnerHome   string    `toml:"owner_home"`
	Version     string    `toml:"version"`
	Commit      string    `toml:"commit"`
	InstalledAt time.Time `toml:"installed_at"`
	// Mode is how the services run: ModeSystemd after `banger system
	// install`, empty for `banger system run`.
	Mode string `toml:"mode,omitempty"`
	// FirecrackerBin and JailerBin are the only binaries the helper runs
	// for Firecracker VMs: root pins them here, at install, and never
	// takes them from a request. Empty means the defaults.
	FirecrackerBin string `toml:"firecracker_bin,omitempty"`
	JailerBin      string `toml:"jailer_bin,omitempty"`
	// VMMUIDBase is the first of VMMUIDCount uids (and gids) the helper
	// gives Firecracker processes, one per running VM; 0 means
	// DefaultVMMUIDBase. No account may use them.
	VMMUIDBase int `toml:"vmm_uid_base,omitempty"`
	// Subnet is the bridge subnet root pinned ("172.16.0.0/24"): the
	// helper gives banger's bridge no other address, since an address the
	// owner chose would win for every user of the host. Empty means
	// DefaultSubnet.
	Subnet string `toml:"subnet,omitempty"`
}

// Defaults of the pinned Firecracker binaries and of the VMM uid range.
// The range sits in 1879048192-2147352575, which systemd's uid allocation
// leaves unused (below it: container ranges; above it: its foreign range).
const (
	DefaultFirecrackerBin = "/usr/local/bin/firecracker"
	DefaultJailerBin      = "/usr/local/bin/jailer"
	DefaultVMMUIDBase     = 1879113728
	VMMUIDCount           = 4096
	// DefaultSubnet is the bridge subnet when none was pinned; it is
	// also the owner configuration's default network.subnet.
	DefaultSubnet = "172.16.0.0/24"
	// MinSubnetBits and MaxSubnetBits bound a pinned subnet's prefix
	// length: no wider than a /16 of private space, and at least a few
	// guest addresses besides the gateway (internal/ipam).
	MinSubnetBits = 16
	MaxSubnetBits = 29
)

// Firecracker returns the pinned firecracker and jailer paths, defaults
// filled in.
func (m Meta) Firecracker() (firecracker, jailer string) {
	firecracker, jailer = m.FirecrackerBin, m.JailerBin
	if firecracker == "" {
		firecracker = DefaultFirecrackerBin
	}
	if jailer == "" {
		jailer = DefaultJailerBin
	}
	return firecracker, jailer
}

// ValidVMMUIDBase checks a VMM uid range's first uid: above the ranges
// of system and regular accounts, and the whole range below 2^31-1 (tools
// that take uids as signed 32-bit numbers misread the ones above).
func ValidVMMUIDBase(base int) error {
	if base < 65536 || base+VMMUIDCount > 1<<31-1 {
		return fmt.Errorf("%d: want 65536 or more, with %d uids below 2^31-1", base, VMMUIDCount)
	}
	return nil
}

// VMMUIDs returns the first uid of the VMM range, the default filled in.
func (m Meta) VMMUIDs() int {
	if m.VMMUIDBase == 0 {
		return DefaultVMMUIDBase
	}
	return m.VMMUIDBase
}

// ValidSubnet parses a bridge subnet root may pin: a masked IPv4 prefix
// ("172.16.0.0/24") of length MinSubnetBits..MaxSubnetBits inside a
// private range (RFC 1918 or 100.64.0.0/10).
func ValidSubnet(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("subnet %q: want an IPv4 CIDR such as %s", s, DefaultSubnet)
	}
	switch {
	case !p.Addr().Is4():
		return netip.Prefix{}, fmt.Errorf("subnet %q: only IPv4 is supported", s)
	case p != p.Masked():
		return netip.Prefix{}, fmt.Errorf("subnet %q: host bits set (want %s)", s, p.Masked())
	case p.Bits() < MinSubnetBits || p.Bits() > MaxSubnetBits:
		return netip.Prefix{}, fmt.Errorf("subnet %q: want a prefix length from %d to %d", s, MinSubnetBits, MaxSubnetBits)
	}
	for _, r := range privateRanges {
		if r.Contains(p.Addr()) && p.Bits() >= r.Bits() {
			return p, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("subnet %q: not inside a private range (10/8, 172.16/12, 192.168/16, 100.64/10)", s)
}

// privateRanges are the ranges a guest subnet may come from: RFC 1918 and
// RFC 6598's shared space. The helper checks the same list on every bridge
// op; it is repeated here because the CLI, which writes the metadata, must
// not import the helper's wire package.
var privateRanges = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"),
}

// BridgeSubnet returns the pinned bridge subnet, the default filled in.
// Call it on validated metadata.
func (m Meta) BridgeSubnet() netip.Prefix {
	s := m.Subnet
	if s == "" {
		s = DefaultSubnet
	}
	p, _ := netip.ParsePrefix(s)
	return p
}

// ModeSystemd marks an install whose services systemd runs; the CLI then
// finds bangerd in the system directories.
const ModeSystemd = "systemd"

// Validate checks the owner fields: a named, non-root owner with an
// absolute home.
func (m Meta) Validate() error {
	switch {
	case m.OwnerUser == "" || strings.ContainsAny(m.OwnerUser, "/\x00\n:"):
		return fmt.Errorf("owner_user %q: want a user name", m.OwnerUser)
	case m.OwnerUID <= 0 || m.OwnerUID >= 1<<31:
		return fmt.Errorf("owner_uid %d: want a non-root uid", m.OwnerUID)
	case m.OwnerGID < 0 || m.OwnerGID >= 1<<31:
		return fmt.Errorf("owner_gid %d: out of range", m.OwnerGID)
	case !filepath.IsAbs(m.OwnerHome) || filepath.Clean(m.OwnerHome) != m.OwnerHome:
		return fmt.Errorf("owner_home %q: want a clean absolute path", m.OwnerHome)
	case m.Mode != "" && m.Mode != ModeSystemd:
		return fmt.Errorf("mode %q: want %q or nothing", m.Mode, ModeSystemd)
	case m.VMMUIDBase != 0 && ValidVMMUIDBase(m.VMMUIDBase) != nil:
		return fmt.Errorf("vmm_uid_base: %w", ValidVMMUIDBase(m.VMMUIDBase))
	case m.OwnerUID >= m.VMMUIDs() && m.OwnerUID < m.VMMUIDs()+VMMUIDCount:
		return fmt.Errorf("owner_uid %d lies in the VMM uid range %d-%d", m.OwnerUID, m.VMMUIDs(), m.VMMUIDs()+VMMUIDCount-1)
	}
	if m.Subnet != "" {
		if _, err := ValidSubnet(m.Subnet); err != nil {
			return err
		}
	}
	for _, b := range []struct{ key, val string }{{"firecracker_bin", m.FirecrackerBin}, {"jailer_bin", m.JailerBin}} {
		if b.val != "" && (!filepath.IsAbs(b.val) || filepath.Clean(b.val) != b.val || len(b.val) > 512) {
			return fmt.Errorf("%s %q: want a clean absolute path", b.key, b.val)
		}
	}
	return nil
}

// Parse decodes and validates install metadata; unknown keys are refused.
func Parse(data []byte) (Meta, error) {
	var m Meta
	md, err := toml.Decode(string(data), &m)
	if err != nil {
		return Meta{}, fmt.Errorf("parse install metadata: %w", err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		slices.Sort(keys)
		return Meta{}, fmt.Errorf("parse install metadata: unknown keys %v", keys)
	}
	for _, k := range []string{"owner_user", "owner_uid", "owner_gid", "owner_home"} {
		if !md.IsDefined(k) {
			return Meta{}, fmt.Errorf("parse install metadata: missing %s", k)
		}
	}
	if err := m.Validate(); err != nil {
		return Meta{}, fmt.Errorf("parse install metadata: %w", err)
	}
	return m, nil
}

// Read reads and parses the file at path.
func Read(path string) (Meta, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Meta{}, fmt.Errorf("read install metadata: %w", err)
	}
	m, err := Parse(data)
	if err != nil {
		return Meta{}, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// Marshal encodes m as TOML.
func Marshal(m Meta) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("encode install metadata: %w", err)
	}
	var buf bytes.Buffer
	buf.WriteString("# Written by banger; read by the root helper and `banger system status`.\n")
	if err := toml.NewEncoder(&buf).Encode(m); err != nil {
		return nil, fmt.Errorf("encode install metadata: %w", err)
	}
	return buf.Bytes(), nil
}

// Write writes m to path atomically (temporary file, fsync, rename), mode
// 0644, creating the parent directory (0755) if needed.
func Write(path string, m Meta) error {
	data, err := Marshal(m)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write install metadata: %w", err)
	}
	f, err := os.CreateTemp(dir, ".install-*.toml")
	if err != nil {
		return fmt.Errorf("write install metadata: %w", err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write install metadata: %w", err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return fmt.Errorf("write install metadata: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write install metadata: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write install metadata: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write install metadata: %w", err)
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// ErrUntrusted is wrapped by ReadTrusted when the file could have been
// written by someone other than the reader.
var ErrUntrusted = errors.New("install metadata not trusted")

// ReadTrusted is Read for the root helper: path must be a regular file (not
// a symlink) owned by the calling euid and writable by no one else, since
// whoever can write it chooses who the helper serves.
func ReadTrusted(path string) (Meta, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return Meta{}, fmt.Errorf("read install metadata: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return Meta{}, fmt.Errorf("%s: not a regular file: %w", path, ErrUntrusted)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return Meta{}, fmt.Errorf("%s: mode %v is group or world writable: %w", path, fi.Mode().Perm(), ErrUntrusted)
	}
	if uid, ok := fileUID(fi); ok && uid != os.Geteuid() {
		return Meta{}, fmt.Errorf("%s: owned by uid %d, not %d: %w", path, uid, os.Geteuid(), ErrUntrusted)
	}
	return Read(path)
}
