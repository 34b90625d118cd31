// Command banger-agent is banger's guest agent: one static binary with three
// roles, chosen by how it is started (see selectRole).
//
//	/init of banger's initramfs   first boot stage, then switch root
//	banger-agent pid1             init of a root without an init system
//	banger-agent serve            systemd service (the unit the initramfs installs)
package main

import (
	"fmt"
	"os"

	"banger/internal/agent"
	"banger/internal/agent/initramfs"
	"banger/internal/agent/pid1"
	"banger/internal/agent/service"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const (
	roleInitramfs = "initramfs"
	rolePID1      = "pid1"
	roleService   = "serve"
	roleVersion   = "version"
)

// selectRole picks the role. PID 1 is decided by the environment, not by
// arguments, because the kernel starts /init without any: the initramfs
// marker file means stage one, otherwise the agent is the real root's init
// (also when named directly by banger.init=).
func selectRole(pid int, args []string, markerExists bool) (string, error) {
	if pid == 1 {
		if markerExists {
			return roleInitramfs, nil
		}
		return rolePID1, nil
	}
	if len(args) == 0 {
		return "", fmt.Errorf("usage: banger-agent serve|pid1|version")
	}
	switch args[0] {
	case rolePID1, roleService, roleVersion:
		return args[0], nil
	}
	return "", fmt.Errorf("unknown command %q (usage: banger-agent serve|pid1|version)", args[0])
}

func main() {
	_, err := os.Stat(initramfs.Marker)
	role, rerr := selectRole(os.Getpid(), os.Args[1:], err == nil)
	if rerr != nil {
		fmt.Fprintln(os.Stderr, "banger-agent:", rerr)
		os.Exit(2)
	}
	switch role {
	case roleInitramfs:
		initramfs.Run()
	case rolePID1:
		if os.Getpid() != 1 {
			agent.Logger.Print("pid1 mode needs to be PID 1")
			os.Exit(2)
		}
		pid1.Run(version)
	case roleService:
		if err := service.Run(version); err != nil {
			agent.Logger.Print(err)
			os.Exit(1)
		}
	case roleVersion:
		fmt.Println(version)
	}
}
