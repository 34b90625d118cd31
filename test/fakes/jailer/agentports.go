package main

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"banger/internal/agent/transport"
	"banger/internal/vmm/qemu"
	"banger/test/fakes/internal/sidecarproto"
)

// The guest's agent ports beyond the first (which qemu.Args declares, on
// the real driver's virtio-serial device) sit on a second virtio-serial
// device of their own: the driver's device has room for one port only.

// extraBus is the device id of the virtio-serial device of the extra ports.
const extraBus = "agentports"

// portID is the QEMU device id of agent port i, the id VSERPORT_CHANGE
// names.
func portID(i int) string {
	if i == 0 {
		return qemu.AgentPortID
	}
	return qemu.AgentPortID + strconv.Itoa(i)
}

// portIndex maps a VSERPORT_CHANGE id back to its agent port, among n.
func portIndex(id string, n int) (int, bool) {
	for i := range n {
		if portID(i) == id {
			return i, true
		}
	}
	return 0, false
}

// extraPortArgs declares agent ports 1.. on socks[1:], named as the agent
// looks for them (transport.PortName).
func extraPortArgs(socks []string) []string {
	if len(socks) <= 1 {
		return nil
	}
	// Port number 0 of a virtio-serial device is kept for a console, so
	// n-1 ports need max_ports=n.
	args := []string{"-device", "virtio-serial-device,id=" + extraBus + ",max_ports=" + strconv.Itoa(len(socks))}
	for i := 1; i < len(socks); i++ {
		chardev := "agent" + strconv.Itoa(i)
		args = append(args,
			"-chardev", "socket,id="+chardev+",path="+strings.ReplaceAll(socks[i], ",", ",,")+",server=on,wait=off",
			"-device", "virtserialport,bus="+extraBus+".0,chardev="+chardev+",name="+transport.PortName(i)+",id="+portID(i))
	}
	return args
}

// sendPort tells firecracker that the guest opened or closed agent port i.
func (s *sidecarServer) sendPort(i int, open bool) {
	_ = s.conn.Send(sidecarproto.Message{Op: sidecarproto.OpPort, Port: i, Open: open})
}

// holdAgentSocks keeps an O_PATH fd of each agent socket, through which
// agentAddr reaches the socket for as long as QEMU listens on it, even
// after its file is gone. The socket directory is in the helper's /tmp,
// which under systemd is the unit's PrivateTmp=: systemd empties it when
// the helper's unit stops, while this sidecar and its VM live on.
func (vm *qemuVM) holdAgentSocks() error {
	for _, p := range vm.agentSocks {
		fd, err := unix.Open(p, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("hold agent socket: %w", err)
		}
		vm.agentHeld = append(vm.agentHeld, fd)
	}
	return nil
}

// agentAddr is the address the sidecar dials for agent port i: its held
// socket when there is one. Connecting through the /proc/self/fd link
// reaches the socket by inode, not by name.
func (vm *qemuVM) agentAddr(i int) string {
	if i < len(vm.agentHeld) {
		return "/proc/self/fd/" + strconv.Itoa(vm.agentHeld[i])
	}
	return vm.agentSocks[i]
}
