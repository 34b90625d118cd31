package qemu

import "banger/internal/vmm"

var (
	_ vmm.Limited         = (*Driver)(nil)
	_ vmm.PowerOffStopper = (*Driver)(nil)
)

// maxVCPU is the most vCPUs a microvm guest gets under either accelerator:
// QEMU's microvm machine allows 288, but above 255 it needs x2APIC through
// the KVM irqchip, which TCG does not have (QEMU 7.2 refuses 256 there).
// Memory has no ceiling of QEMU's own: only what the host can map.
const maxVCPU = 255

// Limits implements vmm.Limited.
func (d *Driver) Limits() vmm.Limits { return vmm.Limits{MaxVCPU: maxVCPU} }

// PowerOffEndsVMM implements vmm.PowerOffStopper: a guest power-off makes
// QEMU exit (and so does a reboot, under -no-reboot).
func (d *Driver) PowerOffEndsVMM() bool { return true }
