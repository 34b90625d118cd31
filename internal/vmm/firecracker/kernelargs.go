package firecracker

import agentcmdline "banger/internal/agent/cmdline"

// kernelArgs is the guest command line Firecracker boots with: bangerd's,
// then what this driver adds.
//   - reboot=k: a guest reboot (and the panic=-1 banger passes) ends
//     firecracker through the emulated keyboard controller.
//   - banger.transport=vsock: the agent listens on vsock, the only channel
//     Firecracker gives a guest. It is stated, not guessed from /dev/vsock,
//     and comes last so a value in the user's kernel arguments cannot
//     override it.
func kernelArgs(cmdline string) string {
	return cmdline + " reboot=k " + agentcmdline.TransportArg(agentcmdline.TransportVsock)
}
