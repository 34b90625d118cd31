package firecracker

import (
	"testing"

	agentcmdline "banger/internal/agent/cmdline"
)

// TestKernelArgsNameVsock: the guest Firecracker boots is told its agent
// transport is vsock, whatever the user's kernel arguments say, and keeps
// bangerd's command line in front.
func TestKernelArgsNameVsock(t *testing.T) {
	for _, tc := range []struct {
		cmdline string
		want    string
	}{
		{"console=ttyS0", "console=ttyS0 reboot=k banger.transport=vsock"},
		{"console=ttyS0 banger.transport=virtio-serial", "console=ttyS0 banger.transport=virtio-serial reboot=k banger.transport=vsock"},
		{"console=ttyS0 banger.transport=auto", "console=ttyS0 banger.transport=auto reboot=k banger.transport=vsock"},
	} {
		got := kernelArgs(tc.cmdline)
		if got != tc.want {
			t.Errorf("kernel args for %q = %q, want %q", tc.cmdline, got, tc.want)
		}
		if p := agentcmdline.Parse(got); p.Transport != agentcmdline.TransportVsock {
			t.Errorf("the agent reads transport %q from %q", p.Transport, got)
		}
	}
}
