package vmm

import "fmt"

// Limits are the guest sizes a VMM accepts. A zero field means the VMM
// sets no bound of its own there (the host's memory still does).
type Limits struct {
	MaxVCPU   int
	MaxMemMiB int
}

// Limited is a driver whose VMM refuses some guest sizes. bangerd checks
// them when a VM is created, resized or started, so a VM the VMM would
// refuse is turned down before any disk, tap or jail is made for it.
type Limited interface {
	Limits() Limits
}

// LimitsOf returns d's limits, or none for a driver that states none.
func LimitsOf(d Driver) Limits {
	if l, ok := d.(Limited); ok {
		return l.Limits()
	}
	return Limits{}
}

// LimitError is a guest size a VMM refuses.
type LimitError struct {
	VMM      string
	Resource string // "vcpu" or "memory"
	Limit    int
	Value    int
}

func (e *LimitError) Error() string {
	if e.Resource == "memory" {
		return fmt.Sprintf("%s runs at most %d MiB of memory, not %d", e.VMM, e.Limit, e.Value)
	}
	return fmt.Sprintf("%s runs at most %d vCPUs, not %d", e.VMM, e.Limit, e.Value)
}

// Check refuses vcpu or memMiB outside l with a *LimitError naming the
// VMM, the limit and the value. Lower bounds common to every VMM (at least
// one vCPU, banger's memory floor) are the caller's.
func (l Limits) Check(vmm string, vcpu, memMiB int) error {
	if l.MaxVCPU > 0 && vcpu > l.MaxVCPU {
		return &LimitError{VMM: vmm, Resource: "vcpu", Limit: l.MaxVCPU, Value: vcpu}
	}
	if l.MaxMemMiB > 0 && memMiB > l.MaxMemMiB {
		return &LimitError{VMM: vmm, Resource: "memory", Limit: l.MaxMemMiB, Value: memMiB}
	}
	return nil
}

// PowerOffStopper is a driver that says whether a guest power-off ends its
// VMM process. One that does not (Firecracker: its guests have no ACPI
// sleep state, so a power-off only halts the vCPUs) is stopped by asking
// the guest to reboot, which such a VMM is configured to exit on.
type PowerOffStopper interface {
	PowerOffEndsVMM() bool
}

// PowerOffEndsVMM reports whether a guest power-off ends d's VMM; true for
// a driver that does not say.
func PowerOffEndsVMM(d Driver) bool {
	if p, ok := d.(PowerOffStopper); ok {
		return p.PowerOffEndsVMM()
	}
	return true
}
