// Package sys holds the guest-side system calls the agent's boot roles share:
// mounting, loopback bring-up and powering the machine off. Everything here
// needs root and a guest; none of it runs in unit tests.
package sys

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// IsMountPoint reports whether path is the root of a mount: its device
// differs from its parent's, or it is "/". Bind mounts of the same
// filesystem are not detected; the agent never creates those.
func IsMountPoint(path string) bool {
	var st, pst unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return false
	}
	if unix.Stat(filepath.Join(path, ".."), &pst) != nil {
		return false
	}
	return st.Dev != pst.Dev || st.Ino == pst.Ino
}

// Mount mounts source on target, creating target if missing.
func Mount(source, target, fstype string, flags uintptr, data string) error {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("create mount point %s: %w", target, err)
	}
	if err := unix.Mount(source, target, fstype, flags, data); err != nil {
		return fmt.Errorf("mount %s (%s) on %s: %w", source, fstype, target, err)
	}
	return nil
}

// MountIfMissing mounts unless target is already a mount point.
func MountIfMissing(source, target, fstype string, flags uintptr, data string) error {
	if IsMountPoint(target) {
		return nil
	}
	return Mount(source, target, fstype, flags, data)
}

// LoopbackUp brings lo up; the kernel then assigns 127.0.0.1 and ::1 itself.
// It uses ioctls because the guest may have no ip(8).
func LoopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bring up lo: socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("bring up lo: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring up lo: get flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring up lo: set flags: %w", err)
	}
	return nil
}

// EnsureConsole opens /dev/console on fds 0-2 when they are closed, which
// happens when the initramfs has no /dev/console node for the kernel.
func EnsureConsole() {
	if _, err := unix.FcntlInt(2, unix.F_GETFD, 0); err == nil {
		return
	}
	fd, err := unix.Open("/dev/console", unix.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return
	}
	for i := 0; i < 3; i++ {
		if i != fd {
			_ = unix.Dup2(fd, i)
		}
	}
	if fd > 2 {
		_ = unix.Close(fd)
	}
}

// KillAll stops every process but the caller (which must be PID 1): SIGTERM,
// up to grace for them to go, then SIGKILL and a short wait for the kernel to
// finish them off. Zombies are left to the reaper.
func KillAll(grace time.Duration) {
	_ = unix.Kill(-1, unix.SIGTERM)
	_ = unix.Kill(-1, unix.SIGCONT) // stopped processes must run to die
	waitNone(grace)
	_ = unix.Kill(-1, unix.SIGKILL)
	waitNone(time.Second)
}

// waitNone waits until no process but the caller and kernel threads lives.
func waitNone(d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !othersLeft("/proc", os.Getpid()) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// PowerOff syncs and powers off (or restarts). It does not return on
// success; under QEMU with -no-reboot either makes the VMM exit.
func PowerOff(restart bool) error {
	unix.Sync()
	cmd := unix.LINUX_REBOOT_CMD_POWER_OFF
	if restart {
		cmd = unix.LINUX_REBOOT_CMD_RESTART
	}
	if err := unix.Reboot(cmd); err != nil {
		return fmt.Errorf("reboot(%#x): %w", cmd, err)
	}
	return nil
}
