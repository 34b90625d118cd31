// Package config loads ~/.config/banger/config.toml and resolves VM defaults
// from the host. Every key is optional; an unknown key is an error that names
// it, so a typo never silently does nothing.
package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"runtime"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"

	"banger/internal/filesync"
	"banger/internal/sizes"
)

// Built-in defaults.
const (
	DefaultImageName  = "debian-bookworm"
	MinimalImageName  = "minimal"
	DefaultKernelName = "default"
	DefaultDiskSize   = "8G"
	DefaultLogLevel   = "info"
)

// Config is the parsed file.
type Config struct {
	LogLevel          string `toml:"log_level"`
	DefaultImageName  string `toml:"default_image_name"`
	DefaultKernelName string `toml:"default_kernel_name"`
	VMM               string `toml:"vmm"` // auto | firecracker | qemu
	QEMUBin           string `toml:"qemu_bin"`
	// FirecrackerBin, JailerBin, JailerEnabled and JailerChrootBase are
	// recognised only to explain why they cannot be set here (see
	// validate): root pins the binaries it runs at install.
	FirecrackerBin string `toml:"firecracker_bin"`
	JailerBin      string `toml:"jailer_bin"`
	JailerEnabled  *bool  `toml:"jailer_enabled"`
	// Catalog replaces the embedded catalog of short image and kernel
	// names (an absolute path to a TOML file).
	Catalog string `toml:"catalog"`
	// Storage is how VM root disks are made: auto, dm, reflink, overlay or copy.
	Storage          string     `toml:"storage"`
	JailerChrootBase string     `toml:"jailer_chroot_base"`
	KernelArgs       string     `toml:"kernel_args"`  // appended to every guest kernel command line
	SSHKeyPath       string     `toml:"ssh_key_path"` // owner's SSH key; absolute; generated when missing
	VMDefaults       VMDefaults `toml:"vm_defaults"`
	Network          Network    `toml:"network"`
	// FileSync copies files from the owner's home into every guest at
	// create and start ([[file_sync]] tables).
	FileSync []filesync.Entry `toml:"file_sync"`
	// ImageMaxUnpacked bounds what one tar or OCI import may unpack
	// ("64G"; empty: the image package's default).
	ImageMaxUnpacked string `toml:"image_max_unpacked"`
}

// Network is the [network] table.
type Network struct {
	// Enabled turns guest networking on; it needs the root helper.
	Enabled      *bool  `toml:"enabled"`
	BridgeName   string `toml:"bridge_name"`
	Subnet       string `toml:"subnet"`
	MTU          int    `toml:"mtu"`
	DNSListen    string `toml:"dns_listen"`
	HelperSocket string `toml:"helper_socket"`
	// VMToVM lets guests reach each other across the bridge.
	VMToVM *bool `toml:"vm_to_vm"`
	// AllowHost lists host services ("IP:PORT") guests may reach besides
	// banger's DNS; everything else on the host is closed to guests.
	AllowHost []string `toml:"allow_host"`
	// Allow lists IPv4 prefixes ("10.1.2.0/24") guests with NAT may reach
	// although egress closes them by default: private (RFC 1918), CGNAT
	// and link-local ranges. Metadata addresses stay closed regardless.
	Allow []string `toml:"allow"`
	// DNSUpstreams are the resolvers ("IP" or "IP:PORT") that bangerd asks,
	// for guests with NAT, about names outside .vm. Empty means the host's
	// (resolv.conf), which also resolves the host's own split-horizon and
	// VPN names for them.
	DNSUpstreams []string `toml:"dns_upstreams"`
}

// MaxDNSUpstreams bounds network.dns_upstreams: each is tried in turn, with
// a timeout, while a guest waits.
const MaxDNSUpstreams = 4

// Network defaults.
const (
	DefaultBridge       = "br-fc"
	DefaultSubnet       = "172.16.0.0/24"
	DefaultMTU          = 1500
	DefaultDNSListen    = "127.0.0.1:42069"
	DefaultHelperSocket = "/run/banger-root/helper.sock"
)

// VMDefaults is the [vm_defaults] table.
type VMDefaults struct {
	VCPU      int    `toml:"vcpu"`
	MemoryMiB int    `toml:"memory_mib"`
	DiskSize  string `toml:"disk_size"`
}

// Load reads path. A missing file is an empty config.
func Load(path string) (Config, error) {
	var c Config
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return c.withDefaults(), nil
	}
	if err != nil {
		return c, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes data; name is used in errors.
func Parse(name string, data []byte) (Config, error) {
	var c Config
	md, err := toml.Decode(string(data), &c)
	if err != nil {
		return c, fmt.Errorf("parse config %s: %w", name, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, 0, len(und))
		for _, k := range und {
			keys = append(keys, k.String())
		}
		sort.Strings(keys)
		return c, fmt.Errorf("parse config %s: unknown key(s): %s", name, strings.Join(keys, ", "))
	}
	if err := c.validate(); err != nil {
		return c, fmt.Errorf("parse config %s: %w", name, err)
	}
	return c.withDefaults(), nil
}

func (c Config) validate() error {
	switch c.LogLevel {
	case "", "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log_level %q: want debug, info, warn or error", c.LogLevel)
	}
	switch c.VMM {
	case "", "auto", "qemu", "firecracker":
	default:
		return fmt.Errorf("vmm %q: want auto, firecracker or qemu", c.VMM)
	}
	switch c.Storage {
	case "", "auto", "dm", "reflink", "overlay", "copy":
	default:
		return fmt.Errorf("storage %q: want auto, dm, reflink, overlay or copy", c.Storage)
	}
	if c.JailerEnabled != nil && !*c.JailerEnabled {
		return errors.New("jailer_enabled = false: banger always runs firecracker under the jailer, as a uid of its own in a chroot; use vmm = \"qemu\" to run without it")
	}
	if c.JailerChrootBase != "" {
		return errors.New("jailer_chroot_base: the jail base is where root creates device nodes and mounts, so the root helper chooses it: pass --jail-base to 'banger system run' (or banger-helper)")
	}
	for _, b := range []struct{ key, val, flag string }{{"firecracker_bin", c.FirecrackerBin, "--firecracker-bin"}, {"jailer_bin", c.JailerBin, "--jailer-bin"}} {
		if b.val != "" {
			return fmt.Errorf("%s %q: root runs only the binaries pinned at install, never a user's choice; remove it here and pass %s to 'banger system install' or 'banger system run' (as root)", b.key, b.val, b.flag)
		}
	}
	if c.Catalog != "" && !strings.HasPrefix(c.Catalog, "/") {
		return fmt.Errorf("catalog %q: must be an absolute path", c.Catalog)
	}
	if c.VMDefaults.VCPU < 0 {
		return fmt.Errorf("vm_defaults.vcpu %d: must be positive", c.VMDefaults.VCPU)
	}
	if c.VMDefaults.MemoryMiB < 0 {
		return fmt.Errorf("vm_defaults.memory_mib %d: must be positive", c.VMDefaults.MemoryMiB)
	}
	if c.VMDefaults.DiskSize != "" {
		if _, err := sizes.Parse(c.VMDefaults.DiskSize); err != nil {
			return fmt.Errorf("vm_defaults.disk_size: %w", err)
		}
	}
	for i, e := range c.FileSync {
		if err := e.Validate(); err != nil {
			return fmt.Errorf("file_sync entry %d: %w", i+1, err)
		}
	}
	if err := checkImages(c); err != nil {
		return err
	}
	if c.SSHKeyPath != "" && !strings.HasPrefix(c.SSHKeyPath, "/") {
		return fmt.Errorf("ssh_key_path %q: must be an absolute path", c.SSHKeyPath)
	}
	n := c.Network
	if n.BridgeName != "" && !bridgeRe.MatchString(n.BridgeName) {
		return fmt.Errorf("network.bridge_name %q: want br-fc or br-fc-<1-9 of a-z0-9>", n.BridgeName)
	}
	if n.Subnet != "" {
		p, err := netip.ParsePrefix(n.Subnet)
		if err != nil || !p.Addr().Is4() || p.Bits() < 8 || p.Bits() > 29 {
			return fmt.Errorf("network.subnet %q: want an IPv4 CIDR with a prefix length from 8 to 29", n.Subnet)
		}
	}
	if n.MTU != 0 && (n.MTU < 576 || n.MTU > 9000) {
		return fmt.Errorf("network.mtu %d: want 576 to 9000", n.MTU)
	}
	if n.DNSListen != "" {
		if _, err := netip.ParseAddrPort(n.DNSListen); err != nil {
			return fmt.Errorf("network.dns_listen %q: want IP:PORT", n.DNSListen)
		}
	}
	for _, a := range n.AllowHost {
		ap, err := netip.ParseAddrPort(a)
		if err != nil {
			return fmt.Errorf("network.allow_host %q: want IP:PORT", a)
		}
		if ap.Addr().IsLinkLocalUnicast() {
			return fmt.Errorf("network.allow_host %q: link-local (metadata) addresses stay blocked", a)
		}
	}
	if err := checkDNSUpstreams(n.DNSUpstreams); err != nil {
		return err
	}
	if err := checkAllow(n.Allow); err != nil {
		return err
	}
	if n.HelperSocket != "" && !strings.HasPrefix(n.HelperSocket, "/") {
		return fmt.Errorf("network.helper_socket %q: want an absolute path", n.HelperSocket)
	}
	return nil
}

// checkDNSUpstreams accepts up to MaxDNSUpstreams unicast "IP" or
// "IP:PORT" entries.
func checkDNSUpstreams(ups []string) error {
	if len(ups) > MaxDNSUpstreams {
		return fmt.Errorf("network.dns_upstreams: %d entries, at most %d", len(ups), MaxDNSUpstreams)
	}
	for _, u := range ups {
		ip, err := netip.ParseAddr(u)
		if err != nil {
			ap, perr := netip.ParseAddrPort(u)
			if perr != nil || ap.Port() == 0 {
				return fmt.Errorf("network.dns_upstreams %q: want IP or IP:PORT", u)
			}
			ip = ap.Addr()
		}
		if ip.IsUnspecified() || ip.IsMulticast() {
			return fmt.Errorf("network.dns_upstreams %q: want a unicast address", u)
		}
	}
	return nil
}

var bridgeRe = regexp.MustCompile(`^br-fc(-[a-z0-9]{1,9})?$`)

func (c Config) withDefaults() Config {
	if c.LogLevel == "" {
		c.LogLevel = DefaultLogLevel
	}
	if c.DefaultImageName == "" {
		c.DefaultImageName = DefaultImageName
	}
	if c.DefaultKernelName == "" {
		c.DefaultKernelName = DefaultKernelName
	}
	if c.VMM == "" {
		c.VMM = "auto"
	}
	n := &c.Network
	if n.BridgeName == "" {
		n.BridgeName = DefaultBridge
	}
	if n.Subnet == "" {
		n.Subnet = DefaultSubnet
	}
	if n.MTU == 0 {
		n.MTU = DefaultMTU
	}
	if n.DNSListen == "" {
		n.DNSListen = DefaultDNSListen
	}
	if n.HelperSocket == "" {
		n.HelperSocket = DefaultHelperSocket
	}
	if n.VMToVM == nil {
		yes := true
		n.VMToVM = &yes
	}
	return c
}

// Source says where a resolved default came from.
type Source string

// Sources of a default.
const (
	FromConfig  Source = "config"
	FromHost    Source = "auto"
	FromBuiltin Source = "builtin"
)

// Resolved is a VM default with its provenance.
type Resolved[T any] struct {
	Value  T
	Source Source
	Why    string
}

// Defaults are the resolved VM defaults.
type Defaults struct {
	VCPU      Resolved[int]
	MemoryMiB Resolved[int]
	DiskSize  Resolved[int64]
}

// Host describes the machine for default sizing.
type Host struct {
	CPUs      int
	MemoryMiB int
}

// ProbeHost reads the CPU count and total memory.
func ProbeHost() Host {
	h := Host{CPUs: runtime.NumCPU()}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int
		for _, line := range strings.Split(string(data), "\n") {
			if _, err := fmt.Sscanf(line, "MemTotal: %d kB", &kb); err == nil {
				h.MemoryMiB = kb / 1024
				break
			}
		}
	}
	return h
}

// Floors under the host heuristic.
const (
	minVCPU      = 1
	maxVCPU      = 4
	minMemoryMiB = 512
	maxMemoryMiB = 8192
)

// ResolveDefaults applies config > host heuristic > built-in floor.
func (c Config) ResolveDefaults(h Host) Defaults {
	var d Defaults
	switch {
	case c.VMDefaults.VCPU > 0:
		d.VCPU = Resolved[int]{c.VMDefaults.VCPU, FromConfig, "vm_defaults.vcpu"}
	case h.CPUs > 0:
		v := min(max(h.CPUs/4, minVCPU), maxVCPU)
		d.VCPU = Resolved[int]{v, FromHost, fmt.Sprintf("%d host cpus / 4, between %d and %d", h.CPUs, minVCPU, maxVCPU)}
	default:
		d.VCPU = Resolved[int]{minVCPU, FromBuiltin, "host cpu count unknown"}
	}
	switch {
	case c.VMDefaults.MemoryMiB > 0:
		d.MemoryMiB = Resolved[int]{c.VMDefaults.MemoryMiB, FromConfig, "vm_defaults.memory_mib"}
	case h.MemoryMiB > 0:
		v := min(max(h.MemoryMiB/8, minMemoryMiB), maxMemoryMiB)
		d.MemoryMiB = Resolved[int]{v, FromHost, fmt.Sprintf("%d MiB host memory / 8, between %d and %d MiB", h.MemoryMiB, minMemoryMiB, maxMemoryMiB)}
	default:
		d.MemoryMiB = Resolved[int]{minMemoryMiB, FromBuiltin, "host memory unknown"}
	}
	if c.VMDefaults.DiskSize != "" {
		v, _ := sizes.Parse(c.VMDefaults.DiskSize)
		d.DiskSize = Resolved[int64]{v, FromConfig, "vm_defaults.disk_size"}
	} else {
		v, _ := sizes.Parse(DefaultDiskSize)
		d.DiskSize = Resolved[int64]{v, FromBuiltin, "built-in " + DefaultDiskSize}
	}
	return d
}
