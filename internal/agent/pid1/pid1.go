// Package pid1 is the agent's role as init of a root without an init system
// (a busybox or distroless image): it mounts the API filesystems, sets the
// hostname, brings up loopback, reaps orphans, serves the agent and shuts the
// machine down cleanly.
package pid1

import (
	"os"
	"os/signal"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/agent"
	"banger/internal/agent/cmdline"
	"banger/internal/agent/reaper"
	"banger/internal/agent/sys"
)

// Run never returns: PID 1 exiting panics the kernel.
func Run(version string) {
	sys.EnsureConsole()
	setup()
	params, err := cmdline.Read()
	if err != nil {
		agent.Logger.Print(err)
	}
	if params.Hostname != "" {
		if err := agent.SetHostname(params.Hostname, false); err != nil {
			agent.Logger.Print(err)
		}
	}
	if err := sys.LoopbackUp(); err != nil {
		agent.Logger.Print(err)
	}
	if params.Net != "" {
		if c, err := sys.ParseNetConfig(params.Net); err != nil {
			agent.Logger.Print(err)
		} else if err := sys.ConfigureNet(c); err != nil {
			agent.Logger.Printf("configure network: %v", err)
		}
	}
	reaper.Default() // reap orphans from the start
	handleSignals()
	err = agent.Run(agent.ModePID1, version, params, Shutdown)
	agent.Logger.Printf("agent stopped: %v", err)
	Shutdown(false)
}

// setup mounts what a login shell and common tools expect. Mounts made by
// the initramfs stage (moved into this root) are kept.
func setup() {
	const nosuidNodev = unix.MS_NOSUID | unix.MS_NODEV
	mounts := []struct {
		src, target, fstype string
		flags               uintptr
		data                string
	}{
		{"proc", "/proc", "proc", nosuidNodev | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", nosuidNodev | unix.MS_NOEXEC, ""},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
		{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "ptmxmode=0666,mode=0620"},
		{"tmpfs", "/dev/shm", "tmpfs", nosuidNodev, "mode=1777"},
		{"tmpfs", "/run", "tmpfs", nosuidNodev, "mode=0755"},
	}
	for _, m := range mounts {
		if err := sys.MountIfMissing(m.src, m.target, m.fstype, m.flags, m.data); err != nil {
			agent.Logger.Print(err)
		}
	}
	// A read-only root still needs a writable /tmp.
	if unix.Access("/tmp", unix.W_OK) != nil {
		if err := sys.Mount("tmpfs", "/tmp", "tmpfs", nosuidNodev, "mode=1777"); err != nil {
			agent.Logger.Print(err)
		}
	}
	// devtmpfs has no /dev/fd family; shells use it for process substitution.
	links := map[string]string{
		"/dev/fd":     "/proc/self/fd",
		"/dev/stdin":  "/proc/self/fd/0",
		"/dev/stdout": "/proc/self/fd/1",
		"/dev/stderr": "/proc/self/fd/2",
	}
	for name, target := range links {
		if _, err := os.Lstat(name); err != nil {
			_ = os.Symlink(target, name)
		}
	}
	if _, err := os.Lstat("/dev/ptmx"); err != nil {
		_ = os.Symlink("pts/ptmx", "/dev/ptmx")
	}
	// Ctrl-Alt-Del becomes SIGINT to PID 1 instead of an immediate reboot.
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF)
}

// handleSignals turns SIGTERM/SIGINT/SIGPWR into a power-off and swallows
// the signals whose Go default would end the process: PID 1 must not exit.
// Catching (rather than ignoring) keeps children's dispositions default.
func handleSignals() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, unix.SIGTERM, unix.SIGINT, unix.SIGPWR)
	swallow := make(chan os.Signal, 8)
	signal.Notify(swallow, unix.SIGHUP, unix.SIGQUIT, unix.SIGPIPE, unix.SIGUSR1, unix.SIGUSR2,
		unix.SIGALRM, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU)
	go func() {
		for range swallow {
		}
	}()
	go func() {
		<-stop
		Shutdown(false)
	}()
}

var shutdownOnce sync.Once

// Shutdown stops all processes, unmounts the work disk, remounts the root
// read-only and powers off (or restarts). It never returns.
func Shutdown(restart bool) {
	shutdownOnce.Do(func() {
		sys.KillAll(time.Second)
		unix.Sync()
		if sys.IsMountPoint("/root") {
			if err := unix.Unmount("/root", 0); err != nil {
				_ = unix.Unmount("/root", unix.MNT_DETACH)
			}
		}
		if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			agent.Logger.Printf("remount / read-only: %v", err)
		}
		if err := sys.PowerOff(restart); err != nil {
			agent.Logger.Print(err)
		}
	})
	select {} // a second caller waits for the first to power off
}
