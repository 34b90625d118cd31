package vm

import (
	"errors"
	"fmt"

	"banger/internal/errdefs"
	"banger/internal/store"
	"banger/internal/vmm"
)

// checkSize refuses a vCPU count or memory size the VMM that would boot
// the VM cannot run, before any disk, tap or jail exists for it. Every VM
// boots under the active driver (a stopped VM keeps no VMM of its own).
// flagged says which sizes the request gave (the rest are defaults), so
// the error names what to change.
func (s *Service) checkSize(vcpu, memMiB int, vcpuFlagged, memFlagged bool) error {
	le, err := s.overLimit(vcpu, memMiB)
	if le == nil {
		return err
	}
	var what string
	switch {
	case le.Resource == "vcpu" && vcpuFlagged:
		what = "--vcpu"
	case le.Resource == "vcpu":
		what = fmt.Sprintf("default vcpu (%s)", s.defaults.VCPU.Why)
	case memFlagged:
		what = "--memory"
	default:
		what = fmt.Sprintf("default memory (%s)", s.defaults.MemoryMiB.Why)
	}
	return errdefs.Invalid("%s: %v", what, le)
}

// checkBootSize refuses to boot v under a VMM that cannot run its size,
// which happens when the configured VMM changed after v was sized. Nothing
// of v changes: a smaller size through 'vm set' makes it bootable.
func (s *Service) checkBootSize(v store.VM) error {
	le, err := s.overLimit(v.VCPU, v.MemoryMiB)
	if le == nil {
		return err
	}
	flag := "--vcpu"
	if le.Resource == "memory" {
		flag = "--memory"
	}
	return errdefs.Invalid("start %s: %v; resize it with 'banger vm set %s %s N'", v.Name, le, v.Name, flag)
}

// overLimit checks a size against the active driver's limits.
func (s *Service) overLimit(vcpu, memMiB int) (*vmm.LimitError, error) {
	err := vmm.LimitsOf(s.driver).Check(s.driver.Name(), vcpu, memMiB)
	var le *vmm.LimitError
	if errors.As(err, &le) {
		return le, nil
	}
	return nil, err
}
