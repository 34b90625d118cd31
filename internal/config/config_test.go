package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name    string
		toml    string
		wantErr []string // substrings, in this order
	}{
		{"unknown keys sorted", "zeta = 1\nalpha = 2\n[vm_defaults]\nvcpus = 3\n",
			[]string{"unknown key(s): alpha, vm_defaults.vcpus, zeta"}},
		{"unknown table", "[extra]\nx = 1\n", []string{"unknown key(s):", "extra"}},
		{"bad log level", `log_level = "verbose"`, []string{`log_level "verbose"`}},
		{"bad vmm", `vmm = "kvmtool"`, []string{`vmm "kvmtool"`, "auto, firecracker or qemu"}},
		// Root runs no binary a user names, not even a good one.
		{"firecracker_bin", `firecracker_bin = "/usr/local/bin/firecracker"`, []string{`firecracker_bin "/usr/local/bin/firecracker"`, "pinned at install", "--firecracker-bin"}},
		{"jailer_bin is sudo", `jailer_bin = "/usr/bin/sudo"`, []string{`jailer_bin "/usr/bin/sudo"`, "pinned at install", "--jailer-bin"}},
		{"relative catalog", `catalog = "cat.toml"`, []string{`catalog "cat.toml"`, "absolute"}},
		{"bad storage", `storage = "zfs"`, []string{`storage "zfs"`, "auto, dm, reflink, overlay or copy"}},
		{"jailer disabled", `jailer_enabled = false`, []string{"jailer_enabled = false", "always runs firecracker under the jailer"}},
		{"chroot base", `jailer_chroot_base = "/srv/jailer"`, []string{"jailer_chroot_base", "--jail-base"}},
		{"negative vcpu", "[vm_defaults]\nvcpu = -1\n", []string{"vm_defaults.vcpu -1"}},
		{"negative memory", "[vm_defaults]\nmemory_mib = -5\n", []string{"vm_defaults.memory_mib -5"}},
		{"bad disk size", "[vm_defaults]\ndisk_size = \"lots\"\n", []string{"vm_defaults.disk_size", `"lots"`}},
		{"wrong type", `log_level = 3`, []string{"parse config cfg.toml"}},
		{"syntax", `log_level = `, []string{"parse config cfg.toml"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("cfg.toml", []byte(tc.toml))
			if err == nil {
				t.Fatalf("Parse succeeded, want an error")
			}
			msg := err.Error()
			if !strings.Contains(msg, "cfg.toml") {
				t.Errorf("error %q does not name the file", msg)
			}
			rest := msg
			for _, w := range tc.wantErr {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("error %q: want %q (in order %q)", msg, w, tc.wantErr)
				}
				rest = rest[i+len(w):]
			}
		})
	}
}

func TestParseValid(t *testing.T) {
	c, err := Parse("cfg.toml", []byte(`
log_level = "debug"
vmm = "qemu"
kernel_args = "quiet"
[vm_defaults]
vcpu = 3
memory_mib = 1536
disk_size = "20G"
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.LogLevel != "debug" || c.VMM != "qemu" || c.KernelArgs != "quiet" || c.VMDefaults.VCPU != 3 ||
		c.VMDefaults.MemoryMiB != 1536 || c.VMDefaults.DiskSize != "20G" {
		t.Fatalf("Parse = %+v", c)
	}
	// Unset keys get the built-in defaults.
	if c.DefaultImageName != DefaultImageName || c.DefaultKernelName != DefaultKernelName {
		t.Fatalf("defaults not applied: %+v", c)
	}
}

func TestLoadMissingFileIsDefaults(t *testing.T) {
	c, err := Load(filepath.Join(t.TempDir(), "nope", "config.toml"))
	if err != nil {
		t.Fatalf("Load(missing): %v", err)
	}
	empty, err := Parse("empty", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.LogLevel != DefaultLogLevel || c.DefaultImageName != DefaultImageName || c.DefaultKernelName != DefaultKernelName ||
		c.VMM != "auto" || c.Network.BridgeName != DefaultBridge || c.Network.Subnet != DefaultSubnet ||
		c.Network.MTU != DefaultMTU || c.Network.DNSListen != DefaultDNSListen || c.Network.HelperSocket != DefaultHelperSocket {
		t.Fatalf("Load(missing) = %+v, want the built-in defaults", c)
	}
	if c.LogLevel != empty.LogLevel || c.Network.Subnet != empty.Network.Subnet {
		t.Fatalf("Load(missing) %+v differs from an empty file %+v", c, empty)
	}
}

func TestLoadReadsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte("bogus = true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("Load = %v, want an error naming %s and the key", err, path)
	}
}

func TestResolveDefaults(t *testing.T) {
	const gib = 1024
	tests := []struct {
		name    string
		cfg     VMDefaults
		host    Host
		vcpu    int
		vcpuSrc Source
		mem     int
		memSrc  Source
		disk    int64
		diskSrc Source
	}{
		{"small host", VMDefaults{}, Host{CPUs: 2, MemoryMiB: 24 * gib}, 1, FromHost, 3072, FromHost, 8 << 30, FromBuiltin},
		{"big host capped", VMDefaults{}, Host{CPUs: 64, MemoryMiB: 512 * gib}, 4, FromHost, 8192, FromHost, 8 << 30, FromBuiltin},
		{"tiny memory floored", VMDefaults{}, Host{CPUs: 8, MemoryMiB: 2 * gib}, 2, FromHost, 512, FromHost, 8 << 30, FromBuiltin},
		{"unknown host", VMDefaults{}, Host{}, 1, FromBuiltin, 512, FromBuiltin, 8 << 30, FromBuiltin},
		{"config wins", VMDefaults{VCPU: 16, MemoryMiB: 100, DiskSize: "2T"}, Host{CPUs: 64, MemoryMiB: 512 * gib},
			16, FromConfig, 100, FromConfig, 2 << 40, FromConfig},
		{"config partial", VMDefaults{MemoryMiB: 700}, Host{CPUs: 12, MemoryMiB: 16 * gib}, 3, FromHost, 700, FromConfig, 8 << 30, FromBuiltin},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := Config{VMDefaults: tc.cfg}.ResolveDefaults(tc.host)
			if d.VCPU.Value != tc.vcpu || d.VCPU.Source != tc.vcpuSrc {
				t.Errorf("VCPU = %d (%s), want %d (%s)", d.VCPU.Value, d.VCPU.Source, tc.vcpu, tc.vcpuSrc)
			}
			if d.MemoryMiB.Value != tc.mem || d.MemoryMiB.Source != tc.memSrc {
				t.Errorf("MemoryMiB = %d (%s), want %d (%s)", d.MemoryMiB.Value, d.MemoryMiB.Source, tc.mem, tc.memSrc)
			}
			if d.DiskSize.Value != tc.disk || d.DiskSize.Source != tc.diskSrc {
				t.Errorf("DiskSize = %d (%s), want %d (%s)", d.DiskSize.Value, d.DiskSize.Source, tc.disk, tc.diskSrc)
			}
			for _, r := range []string{d.VCPU.Why, d.MemoryMiB.Why, d.DiskSize.Why} {
				if r == "" {
					t.Errorf("a resolved default has no Why: %+v", d)
				}
			}
		})
	}
}

func TestProbeHost(t *testing.T) {
	h := ProbeHost()
	if h.CPUs < 1 {
		t.Errorf("ProbeHost CPUs = %d", h.CPUs)
	}
	if _, err := os.Stat("/proc/meminfo"); err == nil && h.MemoryMiB <= 0 {
		t.Errorf("ProbeHost MemoryMiB = %d with /proc/meminfo present", h.MemoryMiB)
	}
}

func TestNetworkConfig(t *testing.T) {
	c, err := Parse("t", []byte("[network]\nbridge_name = \"br-fc-dev\"\nsubnet = \"10.77.0.0/16\"\nmtu = 1400\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Network.BridgeName != "br-fc-dev" || c.Network.Subnet != "10.77.0.0/16" || c.Network.MTU != 1400 ||
		c.Network.DNSListen != DefaultDNSListen || !*c.Network.VMToVM {
		t.Fatalf("network = %+v", c.Network)
	}
	for _, bad := range []string{
		"[network]\nbridge_name = \"eth0\"\n",
		"[network]\nbridge_name = \"br-fc-waytoolongname\"\n",
		"[network]\nsubnet = \"10.0.0.0/30\"\n",
		"[network]\nsubnet = \"fd00::/64\"\n",
		"[network]\nmtu = 100\n",
		"[network]\ndns_listen = \"localhost\"\n",
		"[network]\nhelper_socket = \"rel/path\"\n",
		"[network]\ncolour = \"blue\"\n",
		"[network]\nallow_host = [\"nonsense\"]\n",
		"[network]\nallow_host = [\"169.254.169.254:80\"]\n",
	} {
		if _, err := Parse("t", []byte(bad)); err == nil {
			t.Errorf("Parse(%q) accepted bad network config", bad)
		}
	}
}

func TestFileSyncConfig(t *testing.T) {
	c, err := Parse("t", []byte("[[file_sync]]\nhost = \"~/.gitconfig\"\nguest = \"~/.gitconfig\"\nmode = \"0644\"\n"))
	if err != nil || len(c.FileSync) != 1 || c.FileSync[0].Mode != "0644" {
		t.Fatalf("file_sync = %+v, %v", c.FileSync, err)
	}
	for _, bad := range []string{
		"[[file_sync]]\nhost = \"\"\nguest = \"~/x\"\n",
		"[[file_sync]]\nhost = \"~/x\"\nguest = \"/etc/x\"\n",
		"[[file_sync]]\nhost = \"~/../x\"\nguest = \"~/x\"\n",
		"[[file_sync]]\nhost = \"~/x\"\nguest = \"~/x\"\nmode = \"bad\"\n",
		"[[file_sync]]\nhost = \"~/x\"\nguest = \"~/x\"\ncolour = \"red\"\n",
	} {
		if _, err := Parse("t", []byte(bad)); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}
