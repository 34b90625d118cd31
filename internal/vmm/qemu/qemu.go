// Package qemu is the QEMU driver: qemu-system-x86_64 with the microvm
// machine, KVM when it really works and TCG otherwise. The guest agent
// talks over a virtio-serial port, the serial console goes to a unix socket
// that bangerd reads into a bounded log.
package qemu

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	agentcmdline "banger/internal/agent/cmdline"
	"banger/internal/agentproto"
	"banger/internal/execx"
	"banger/internal/paths"
	"banger/internal/vmm"
)

// Name of this driver.
const Name = "qemu"

// AgentPortID is the QEMU device id of the agent's virtio-serial port.
const AgentPortID = "agentport"

// Driver launches QEMU microvm processes.
type Driver struct {
	// Bin is the qemu-system-x86_64 binary (looked up on PATH when empty).
	Bin string
	// ForceAccel pins the accelerator ("kvm" or "tcg") instead of probing.
	ForceAccel string
	// ProbeKernel returns a Linux kernel to verify KVM with when no VM is
	// being started (doctor); it may return "".
	ProbeKernel func() string

	// ProbeCache, when set, is a file that keeps KVM verdicts across
	// bangerd restarts: on a host where KVM cannot run guests the kernel
	// probe costs its full timeout, which no VM start should pay twice.
	ProbeCache string

	mu     sync.Mutex
	probes map[string]vmm.Probe // by probe key
}

var _ vmm.Driver = (*Driver)(nil)

// Name implements vmm.Driver.
func (d *Driver) Name() string { return Name }

func (d *Driver) bin() (string, error) {
	if d.Bin != "" {
		return d.Bin, nil
	}
	return execx.LookPath("qemu-system-x86_64")
}

// Args builds the QEMU argv (without the binary) for spec. It is a pure
// function so the command line can be tested without running anything.
func Args(spec vmm.Spec, accel string, tscKHz int, agentSock, consoleSock string) []string {
	machine := "microvm,acpi=on,pit=off,pic=off,rtc=on"
	if accel == "tcg" {
		// The PIT and PIC are cheap to keep under TCG and make early boot
		// timer calibration quicker; under KVM the in-kernel ones are used.
		machine = "microvm,acpi=on,rtc=on"
	}
	cmdline := spec.Cmdline
	if accel == "tcg" && tscKHz > 0 {
		// Under TCG the kernel's TSC calibration against the PIT often fails
		// (host scheduling jitter), and microvm has no HPET or PM timer to
		// fall back on: the kernel then waits forever for a timer tick that
		// never arrives. The guest's TSC is the host's, so tell it the
		// frequency instead of letting it measure.
		cmdline += " tsc_early_khz=" + strconv.Itoa(tscKHz) + " tsc=reliable"
	}
	// The guest agent is told its channel rather than guessing it: a
	// /dev/vsock node exists in any guest that loaded the vsock module.
	cmdline += " " + agentcmdline.TransportArg(agentcmdline.TransportVirtioSerial)
	args := []string{
		"-name", "banger-" + spec.ID + ",process=banger-" + spec.ID,
		"-M", machine,
		"-accel", accel,
		"-m", strconv.Itoa(spec.MemoryMiB),
		"-smp", strconv.Itoa(spec.VCPU),
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
	}
	if accel == "kvm" {
		args = append(args, "-cpu", "host")
	}
	args = append(args, "-kernel", spec.Kernel)
	if spec.Initrd != "" {
		args = append(args, "-initrd", spec.Initrd)
	}
	args = append(args, "-append", cmdline)
	fd := 3 // the child's extra files: see ExtraFiles
	if spec.Net != nil {
		fd++
	}
	for i, d := range spec.Drives {
		opt := "id=" + d.ID + ",file=" + escapeOpt(d.Path)
		if d.File != nil {
			// An fd set per drive: QEMU dups the fd whose access mode
			// matches, so auto-read-only (which would ask for a
			// read-only one first) is off.
			set := strconv.Itoa(i + 1)
			args = append(args, "-add-fd", "fd="+strconv.Itoa(fd)+",set="+set+",opaque="+escapeOpt(d.ID))
			fd++
			driver := "file"
			if d.Block {
				driver = "host_device"
			}
			opt = "id=" + d.ID + ",file.driver=" + driver + ",file.filename=/dev/fdset/" + set + ",file.auto-read-only=off"
		}
		format := "raw"
		if d.Format != "" {
			format = d.Format
		}
		opt += ",format=" + format + ",if=none,cache=unsafe,discard=unmap"
		if d.ReadOnly {
			opt += ",readonly=on"
		}
		args = append(args, "-drive", opt, "-device", "virtio-blk-device,drive="+d.ID)
	}
	args = append(args,
		"-device", "virtio-serial-device,max_ports=2",
		"-chardev", "socket,id=agent,path="+escapeOpt(agentSock)+",server=on,wait=off",
		// The port's id makes QEMU report the guest opening and closing it
		// (QMP VSERPORT_CHANGE events).
		"-device", "virtserialport,chardev=agent,name="+agentproto.PortName+",id="+AgentPortID,
		// wait=on: QEMU does not start the guest until bangerd is reading the
		// console, so no boot output is lost.
		"-chardev", "socket,id=console,path="+escapeOpt(consoleSock)+",server=on,wait=on",
		"-serial", "chardev:console",
	)
	if spec.Net != nil {
		// The tap arrives as the child's first extra file: fd 3 (see ExtraFiles).
		args = append(args,
			"-netdev", "tap,id=net0,fd=3,vhost=off",
			"-device", "virtio-net-device,netdev=net0,mac="+spec.Net.MAC)
	} else {
		args = append(args, "-nic", "none")
	}
	return args
}

// ExtraFiles lists the files QEMU inherits for spec, from fd 3 on, in the
// order Args numbers them: the tap, then each drive given open.
func ExtraFiles(spec vmm.Spec) []*os.File {
	var out []*os.File
	if spec.Net != nil {
		out = append(out, spec.Net.Tap)
	}
	for _, d := range spec.Drives {
		if d.File != nil {
			out = append(out, d.File)
		}
	}
	return out
}

// HostTSCKHz returns the host's TSC frequency in kHz, or 0 when unknown.
func HostTSCKHz() int {
	if b, err := os.ReadFile("/sys/devices/system/cpu/cpu0/tsc_freq_khz"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 {
			return n
		}
	}
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	return parseCPUInfoKHz(string(b))
}

// parseCPUInfoKHz reads the first "cpu MHz" line of /proc/cpuinfo.
func parseCPUInfoKHz(cpuinfo string) int {
	for _, line := range strings.Split(cpuinfo, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(k) != "cpu MHz" {
			continue
		}
		mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || mhz <= 0 {
			return 0
		}
		return int(mhz*1000 + 0.5)
	}
	return 0
}

// escapeOpt doubles commas, QEMU's escape inside option values.
func escapeOpt(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// Probe implements vmm.Driver: qemu must exist, and KVM is used only if a
// guest really runs under it.
func (d *Driver) Probe(ctx context.Context) vmm.Probe {
	k := ""
	if d.ProbeKernel != nil {
		k = d.ProbeKernel()
	}
	return d.probeFor(ctx, k)
}

// probeFor probes with a given Linux kernel, caching the verdict per kernel:
// some hosts run a trivial guest under KVM but fail on the first
// instruction a real kernel needs (paravirtualised or nested KVM), so only
// a real kernel reaching its panic handler proves KVM usable.
func (d *Driver) probeFor(ctx context.Context, kernel string) vmm.Probe {
	d.mu.Lock()
	defer d.mu.Unlock()
	key := d.probeKey(kernel)
	if p, ok := d.probes[key]; ok {
		return p
	}
	if d.probes == nil {
		d.probes = loadProbeCache(d.ProbeCache)
		if p, ok := d.probes[key]; ok {
			return p
		}
	}
	p := d.doProbe(ctx, kernel)
	if p.Available {
		d.probes[key] = p
		saveProbeCache(d.ProbeCache, d.probes)
	}
	return p
}

// probeKey names everything a KVM verdict depends on: the qemu binary, the
// guest kernel, the host kernel and the KVM device.
func (d *Driver) probeKey(kernel string) string {
	bin, _ := d.bin()
	parts := []string{d.ForceAccel, statKey(bin), statKey(kernel), statKey("/dev/kvm")}
	if rel, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		parts = append(parts, strings.TrimSpace(string(rel)))
	}
	return strings.Join(parts, "|")
}

func statKey(p string) string {
	if p == "" {
		return ""
	}
	st, err := os.Stat(p)
	if err != nil {
		return p + ":missing"
	}
	return fmt.Sprintf("%s:%d:%d", p, st.Size(), st.ModTime().UnixNano())
}

func loadProbeCache(path string) map[string]vmm.Probe {
	m := map[string]vmm.Probe{}
	if path == "" {
		return m
	}
	if b, err := os.ReadFile(path); err == nil {
		_ = json.Unmarshal(b, &m)
	}
	return m
}

func saveProbeCache(path string, m map[string]vmm.Probe) {
	if path == "" {
		return
	}
	b, err := json.Marshal(m)
	if err != nil {
		return
	}
	tmp := path + ".tmp"
	if os.WriteFile(tmp, b, 0o600) == nil {
		_ = os.Rename(tmp, path)
	}
}

func (d *Driver) doProbe(ctx context.Context, kernel string) vmm.Probe {
	bin, err := d.bin()
	if err != nil {
		return vmm.Probe{Reason: "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"}
	}
	if d.ForceAccel != "" {
		return vmm.Probe{Available: true, Accel: d.ForceAccel, Reason: "accelerator pinned to " + d.ForceAccel}
	}
	ok, why := probeKVM(ctx, bin)
	if ok && kernel != "" {
		ok, why = probeKVMKernel(ctx, bin, kernel)
		if ok {
			return vmm.Probe{Available: true, Accel: "kvm", Reason: "KVM boots the guest kernel"}
		}
	} else if ok {
		return vmm.Probe{Available: true, Accel: "kvm", Reason: "KVM runs a test guest (not yet verified with a Linux kernel)"}
	}
	return vmm.Probe{Available: true, Accel: "tcg", Reason: "KVM unusable (" + why + "); using TCG software emulation"}
}

// Start implements vmm.Driver.
func (d *Driver) Start(ctx context.Context, spec vmm.Spec) (*vmm.Process, error) {
	bin, err := d.bin()
	if err != nil {
		return nil, err
	}
	probe := d.probeFor(ctx, spec.Kernel)
	if !probe.Available {
		return nil, fmt.Errorf("start qemu: %s", probe.Reason)
	}
	if err := os.MkdirAll(spec.RunDir, 0o700); err != nil {
		return nil, fmt.Errorf("start qemu: %w", err)
	}
	agentSock := filepath.Join(spec.RunDir, paths.AgentSock)
	consoleSock := filepath.Join(spec.RunDir, paths.ConsoleSock)
	for _, s := range []string{agentSock, consoleSock} {
		if err := os.Remove(s); err != nil && !os.IsNotExist(err) {
			return nil, fmt.Errorf("start qemu: %w", err)
		}
	}
	logf, err := os.OpenFile(spec.LogPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("start qemu: %w", err)
	}
	defer logf.Close()

	// The VMM must outlive bangerd (restarts, crashes), so it is not tied to
	// the request context and runs in its own session.
	cmd := execx.Default.Command(context.Background(), bin, Args(spec, probe.Accel, HostTSCKHz(), agentSock, consoleSock)...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.ExtraFiles = ExtraFiles(spec)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start qemu: %w", err)
	}
	// Reap the child whenever it exits; exit is observed through the pidfd.
	go func() { _ = cmd.Wait() }()

	p, err := vmm.NewProcess(vmm.Handle{
		VMM: Name, PID: cmd.Process.Pid, AgentSock: agentSock, ConsoleSock: consoleSock, Accel: probe.Accel,
	})
	if err != nil {
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("start qemu: %w", err)
	}
	return p, nil
}

// Adopt implements vmm.Driver: the process must still be the one recorded
// (same start time) and its command line must name this VM.
func (d *Driver) Adopt(h vmm.Handle) (*vmm.Process, error) {
	argv, err := vmm.Cmdline(h.PID)
	if err != nil {
		return nil, vmm.ErrGone
	}
	if !isOurs(argv, h) {
		return nil, vmm.ErrGone
	}
	return vmm.NewProcess(h)
}

func isOurs(argv []string, h vmm.Handle) bool {
	if len(argv) == 0 || !strings.Contains(filepath.Base(argv[0]), "qemu") {
		return false
	}
	for _, a := range argv {
		if strings.Contains(a, "path="+escapeOpt(h.AgentSock)+",") {
			return true
		}
	}
	return false
}
