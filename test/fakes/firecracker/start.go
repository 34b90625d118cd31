package main

// InstanceStart: the actions, the checks Firecracker makes before it boots,
// and the boot through the sidecar.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

func (m *machine) action(a InstanceActionInfo) error {
	switch a.ActionType {
	case "InstanceStart":
		return m.instanceStart()
	case "FlushMetrics":
		if !m.started {
			return errPreBoot
		}
		if m.metrics == nil {
			return badRequest("Metrics error: Cannot flush metrics: the metrics system was not initialized.")
		}
		if err := m.metrics.flush(); err != nil {
			return badRequest("Metrics error: Cannot flush metrics: %s", osError(err))
		}
		return nil
	case "SendCtrlAltDel":
		if !m.started {
			return errPreBoot
		}
		if err := m.backend.CtrlAltDel(); err != nil {
			return badRequest("Failed to send CTRL+ALT+DEL: %v", err)
		}
		return nil
	}
	return deserializeError(fmt.Errorf("unknown variant `%s`, expected one of `FlushMetrics`, `InstanceStart`, `SendCtrlAltDel`", a.ActionType))
}

func startError(format string, args ...any) error {
	return badRequest("Start microvm error: "+format, args...)
}

// instanceStart boots the guest. Files were opened when configured, as the
// jailed uid, like Firecracker does; what is left to prove here is the KVM
// device and the kernel image format.
func (m *machine) instanceStart() error {
	if m.started {
		return errPostBoot
	}
	if m.boot == nil {
		return startError("Cannot start microvm without kernel configuration.")
	}
	root := m.rootDrive()
	if root == nil && m.boot.initrd == nil {
		// Real Firecracker would boot a guest that then panics; the fake
		// refuses early because no banger configuration is meant to do it.
		return startError("fake firecracker: neither a root block device nor an initrd is configured.")
	}
	if len(m.ifaces) > 1 {
		return notEmulated("more than one network interface")
	}
	kvm, err := m.openKVM()
	if err != nil {
		return err
	}
	if err := checkELF(m.boot.kernel); err != nil {
		kvm.Close()
		return startError("Cannot load kernel due to invalid memory configuration or invalid kernel image: Kernel Loader: %s: %v", m.boot.cfg.KernelImagePath, err)
	}
	cmdline := m.kernelCmdline()
	if err := validCmdline(cmdline); err != nil {
		kvm.Close()
		return startError("The kernel command line is invalid: %v", err)
	}
	if m.backend == nil {
		kvm.Close()
		return startError("fake firecracker: no VMM sidecar on fd 3 (run the fake firecracker through the fake jailer).")
	}
	spec := bootSpec{
		ID:      m.id,
		VCPU:    int(m.mc.VcpuCount),
		MemMiB:  int(m.mc.MemSizeMib),
		Cmdline: cmdline,
		Kernel:  m.boot.kernel,
		Initrd:  m.boot.initrd,
		Console: m.serialFile,
		Entropy: m.entropy != nil,
	}
	for _, d := range m.bootOrder() {
		spec.Drives = append(spec.Drives, bootDrive{File: d.file, ReadOnly: d.cfg.IsReadOnly != nil && *d.cfg.IsReadOnly})
	}
	if len(m.ifaces) == 1 {
		spec.Tap = m.ifaces[0].tap
		if mac := m.ifaces[0].cfg.GuestMAC; mac != nil {
			spec.MAC = strings.ToLower(*mac)
		}
	}
	if err := m.backend.Boot(spec); err != nil {
		kvm.Close()
		return startError("fake firecracker: %v", err)
	}
	m.kvm = kvm
	m.started = true
	m.log.infof("Successfully started microvm.")
	return nil
}

func (m *machine) rootDrive() *drive {
	for _, d := range m.drives {
		if d.cfg.IsRootDevice {
			return d
		}
	}
	return nil
}

// bootOrder is the guest's block device order: the root device first (it
// becomes /dev/vda), the others in the order they were added.
func (m *machine) bootOrder() []*drive {
	var out []*drive
	if r := m.rootDrive(); r != nil {
		out = append(out, r)
	}
	for _, d := range m.drives {
		if !d.cfg.IsRootDevice {
			out = append(out, d)
		}
	}
	return out
}

// kernelCmdline builds the guest command line like builder.rs: boot_args
// (or the default), pci=off unless PCI is enabled, then the root device.
func (m *machine) kernelCmdline() string {
	args := defaultBootArgs
	if m.boot.cfg.BootArgs != nil {
		args = *m.boot.cfg.BootArgs
	}
	parts := []string{}
	if s := strings.TrimSpace(args); s != "" {
		parts = append(parts, s)
	}
	if !m.enablePCI {
		parts = append(parts, "pci=off")
	}
	if r := m.rootDrive(); r != nil {
		if r.cfg.Partuuid != nil {
			parts = append(parts, "root=PARTUUID="+*r.cfg.Partuuid)
		} else {
			parts = append(parts, "root=/dev/vda")
		}
		if r.cfg.IsReadOnly != nil && *r.cfg.IsReadOnly {
			parts = append(parts, "ro")
		} else {
			parts = append(parts, "rw")
		}
	}
	return strings.Join(parts, " ")
}

// checkELF verifies what Firecracker's loader needs on x86_64: a 64-bit
// little-endian ELF for EM_X86_64 (a bzImage is refused).
func checkELF(f *os.File) error {
	var h [20]byte
	n, err := f.ReadAt(h[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read the ELF header: %s", osError(err))
	}
	switch {
	case n < 4 || string(h[:4]) != "\x7fELF":
		return fmt.Errorf("failed to load ELF kernel image: invalid ELF magic number")
	case n < len(h):
		return fmt.Errorf("failed to load ELF kernel image: truncated ELF header")
	case h[4] != 2:
		return fmt.Errorf("failed to load ELF kernel image: not a 64-bit ELF")
	case h[5] != 1:
		return fmt.Errorf("failed to load ELF kernel image: not little-endian")
	case binary.LittleEndian.Uint16(h[18:]) != 62:
		return fmt.Errorf("failed to load ELF kernel image: machine is not x86_64")
	}
	return nil
}
