package vm

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/execx"
	"banger/internal/privop"
	"banger/internal/sizes"
)

// Doctor checks the host and the stores and says which VMM will be used.
func (s *Service) Doctor(ctx context.Context) api.Doctor {
	var d api.Doctor
	add := func(name, status, format string, a ...any) {
		d.Checks = append(d.Checks, api.Check{Name: name, Status: status, Detail: fmt.Sprintf(format, a...)})
	}
	probe := s.driver.Probe(ctx)
	d.VMM, d.Accel, d.VMMReason = s.driver.Name(), probe.Accel, probe.Reason
	if probe.Available {
		add("vmm", "ok", "%s with %s: %s", s.driver.Name(), probe.Accel, probe.Reason)
	} else {
		add("vmm", "fail", "%s unavailable: %s", s.driver.Name(), probe.Reason)
	}
	if st, err := os.Stat("/dev/kvm"); err != nil {
		add("kvm", "warn", "/dev/kvm missing: guests run under slow software emulation")
	} else if probe.Accel != "kvm" {
		add("kvm", "warn", "/dev/kvm exists (%v) but cannot run guests here: using TCG (slower boots)", st.Mode())
	} else {
		add("kvm", "ok", "usable")
	}
	if s.opts.StorageNote != "" {
		add("storage", "ok", "%s: %s", s.opts.Storage, s.opts.StorageNote)
	}
	if s.opts.DriverNote != "" {
		add("vmm choice", "ok", "%s", s.opts.DriverNote)
	}
	if fc := s.opts.Firecracker; fc != nil {
		status, detail := fc.Doctor(ctx)
		if s.driver.Name() != "firecracker" && status != "fail" {
			detail += "; " + s.driver.Name() + " is used"
		}
		add("firecracker", status, "%s", detail)
	}
	for _, tool := range []string{"mkfs.ext4", "debugfs", "e2fsck", "resize2fs"} {
		if p, err := execx.LookPath(tool); err != nil {
			add(tool, "fail", "not found: apt-get install e2fsprogs")
		} else {
			add(tool, "ok", "%s", p)
		}
	}
	if p, err := execx.LookPath("busybox"); err != nil {
		add("busybox", "warn", "not found: the built-in minimal image needs busybox-static")
	} else {
		add("busybox", "ok", "%s", p)
	}
	if _, err := os.Stat(s.agentBin); err != nil {
		add("agent", "fail", "guest agent binary %s: %v", s.agentBin, err)
	} else {
		add("agent", "ok", "%s", s.agentBin)
	}
	s.doctorNetwork(ctx, add)
	ks, _ := s.st.ListKernels(ctx)
	if len(ks) == 0 {
		add("kernels", "fail", "no kernel: 'apt-get download linux-image-cloud-amd64' dependency, then 'banger kernel import-deb FILE.deb'")
	} else {
		names := make([]string, 0, len(ks))
		found := false
		for _, k := range ks {
			names = append(names, k.Name)
			found = found || k.Name == s.cfg.DefaultKernelName
		}
		if found {
			add("kernels", "ok", "%s (default %q present)", strings.Join(names, ", "), s.cfg.DefaultKernelName)
		} else {
			add("kernels", "fail", "%s; default kernel %q missing", strings.Join(names, ", "), s.cfg.DefaultKernelName)
		}
	}
	if _, err := s.st.GetImage(ctx, s.cfg.DefaultImageName); err == nil {
		add("images", "ok", "default image %q present", s.cfg.DefaultImageName)
	} else {
		add("images", "warn", "default image %q missing: VMs use the built-in minimal image", s.cfg.DefaultImageName)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(s.layout.StateDir, &fs); err == nil {
		free := int64(fs.Bavail) * fs.Bsize
		status := "ok"
		if free < 2<<30 {
			status = "warn"
		}
		add("disk", status, "%.1f GiB free in %s", float64(free)/(1<<30), s.layout.StateDir)
	}
	def := s.defaults
	d.Defaults = []api.Default{
		{Key: "vcpu", Value: fmt.Sprint(def.VCPU.Value), Source: string(def.VCPU.Source), Why: def.VCPU.Why},
		{Key: "memory_mib", Value: fmt.Sprint(def.MemoryMiB.Value), Source: string(def.MemoryMiB.Source), Why: def.MemoryMiB.Why},
		{Key: "disk_size", Value: sizes.Format(def.DiskSize.Value), Source: string(def.DiskSize.Source), Why: def.DiskSize.Why},
		{Key: "default_image_name", Value: s.cfg.DefaultImageName, Source: sourceOf(s.cfg.DefaultImageName, config.DefaultImageName), Why: ""},
		{Key: "default_kernel_name", Value: s.cfg.DefaultKernelName, Source: sourceOf(s.cfg.DefaultKernelName, config.DefaultKernelName), Why: ""},
	}
	return d
}

func sourceOf(v, builtin string) string {
	if v == builtin {
		return string(config.FromBuiltin)
	}
	return string(config.FromConfig)
}

// doctorNetwork checks the root helper, the bridge, DNS and NAT.
func (s *Service) doctorNetwork(ctx context.Context, add func(name, status, format string, a ...any)) {
	if s.net == nil {
		add("network", "warn", "off: no root helper answered; guests have no NIC (start one with 'sudo banger system run --owner $USER')")
		return
	}
	raw, _, err := s.net.Helper.Call(ctx, privop.Ping{})
	var ping privop.PingResult
	if err == nil {
		err = json.Unmarshal(raw, &ping)
	}
	switch {
	case err != nil:
		add("helper", "fail", "root helper does not answer: %v", err)
	case ping.OwnerUID != os.Getuid():
		add("helper", "fail", "root helper serves uid %d, not %d", ping.OwnerUID, os.Getuid())
	default:
		add("helper", "ok", "root helper %s serves uid %d (%d ops; verified root by peer credentials)", ping.Version, ping.OwnerUID, len(ping.Ops))
		if _, note := PinnedSubnet(s.cfg.Network.Subnet, ping.Subnet); note != "" {
			add("subnet", "warn", "%s", note)
		} else if ping.Subnet != "" {
			add("subnet", "ok", "%s, pinned by root at install", ping.Subnet)
		}
		doctorSnapshots(ping, add)
	}
	if _, err := os.Stat("/sys/class/net/" + s.net.Bridge); err == nil {
		add("bridge", "ok", "%s up with %s (subnet %s)", s.net.Bridge, s.net.plan.GatewayPrefix(), s.net.plan.Subnet)
	} else {
		add("bridge", "warn", "%s not created yet (made when the first VM starts)", s.net.Bridge)
	}
	if s.net.DNSPort != 0 {
		add("dns", "ok", "<name>.vm answered on %s (and on %s:%d for guests)", s.cfg.Network.DNSListen, s.net.plan.Gateway, s.net.DNSPort)
	}
	nat := 0
	if vms, err := s.st.ListVMs(ctx); err == nil {
		for _, v := range vms {
			if v.NAT {
				nat++
			}
		}
	}
	add("nat", "ok", "opt-in per VM with --nat (%d VM(s) have it); nothing is masqueraded otherwise", nat)
}

// doctorSnapshots reports the helper's dm snapshots: how many run, and the
// ones stuck half-made or busy, which the next start or delete of their VM
// removes.
func doctorSnapshots(ping privop.PingResult, add func(name, status, format string, a ...any)) {
	switch {
	case !ping.Snapshots:
		return
	case len(ping.SnapshotsStuck) > 0:
		add("snapshots", "warn", "%d active; not torn down yet (the VM's next start or delete retries): %s",
			ping.SnapshotsActive, strings.Join(ping.SnapshotsStuck, "; "))
	default:
		add("snapshots", "ok", "%d active", ping.SnapshotsActive)
	}
}
