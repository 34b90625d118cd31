package firecracker

import "banger/internal/vmm"

var (
	_ vmm.Limited         = (*Driver)(nil)
	_ vmm.PowerOffStopper = (*Driver)(nil)
)

// maxVCPU is Firecracker's vCPU ceiling: its machine configuration refuses
// a count above 32. Memory has no ceiling of Firecracker's own: any whole
// number of MiB above zero is accepted when guest memory is not backed by
// huge pages (banger does not ask for them), so only the host bounds it.
const maxVCPU = 32

// Limits implements vmm.Limited.
func (d *Driver) Limits() vmm.Limits { return vmm.Limits{MaxVCPU: maxVCPU} }

// PowerOffEndsVMM implements vmm.PowerOffStopper. Firecracker's guests see
// no ACPI sleep state, so a guest power-off halts the vCPUs and leaves the
// process running; a guest reboot ends it, since banger boots with reboot=k.
func (d *Driver) PowerOffEndsVMM() bool { return false }
