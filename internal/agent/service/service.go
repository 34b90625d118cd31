// Package service is the agent's role as a systemd service (the unit the
// initramfs stage installs in /run): serve the agent and leave the system to
// systemd, asking it to power off when the host says so.
package service

import (
	"fmt"

	"golang.org/x/sys/unix"

	"banger/internal/agent"
	"banger/internal/agent/cmdline"
	"banger/internal/agent/sys"
)

// systemd's poweroff and reboot requests (SIGRTMIN+4, SIGRTMIN+5); the
// kernel's SIGRTMIN is 34 (libc reserves two above 32 for itself).
const (
	sigPowerOff = unix.Signal(34 + 4)
	sigReboot   = unix.Signal(34 + 5)
)

// Run serves until the transport fails.
func Run(version string) error {
	params, err := cmdline.Read()
	if err != nil {
		agent.Logger.Print(err)
	}
	// systemd set the hostname from /etc/hostname before starting us; the
	// host's name for the VM wins, without touching the root disk.
	if params.Hostname != "" {
		if err := agent.SetHostname(params.Hostname, false); err != nil {
			agent.Logger.Print(err)
		}
	}
	if params.Net != "" {
		if c, err := sys.ParseNetConfig(params.Net); err != nil {
			agent.Logger.Print(err)
		} else if err := sys.ConfigureNet(c); err != nil {
			agent.Logger.Printf("configure network: %v", err)
		}
	}
	return agent.Run(agent.ModeService, version, params, shutdown)
}

func shutdown(reboot bool) {
	sig := sigPowerOff
	if reboot {
		sig = sigReboot
	}
	if err := unix.Kill(1, sig); err != nil {
		agent.Logger.Print(fmt.Errorf("ask systemd to power off: %w", err))
	}
}
