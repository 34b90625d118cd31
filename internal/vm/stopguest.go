package vm

import (
	"context"

	"banger/internal/agentclient"
	"banger/internal/vmm"
)

// askGuestToStop asks the guest of in to end in the way that makes its
// VMM exit: a power-off, or a reboot for a VMM that outlives a guest
// power-off (Firecracker halts instead, and each stop would wait out
// ShutdownTimeout and then signal it). The driver is the one that started
// the VM, which may no longer be the active one.
func (s *Service) askGuestToStop(ctx context.Context, sess *agentclient.Session, in *instance) error {
	if d := s.driverFor(in.proc.Handle.VMM); d != nil && !vmm.PowerOffEndsVMM(d) {
		return sess.Reboot(ctx)
	}
	return sess.Shutdown(ctx)
}
