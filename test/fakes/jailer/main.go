// Command jailer is a test double of the Firecracker v1.16.1 jailer for
// banger's tests, on hosts where real Firecracker cannot run. It takes the
// real jailer's command line and does what the real one does to its
// environment, in the same order: closes inherited descriptors and clears
// its environment; requires --chroot-base-dir to exist; creates
// <chroot-base-dir>/<exec-name>/<id>/root and copies the exec file into it;
// joins --netns; applies --resource-limit (no-file 2048 by default) and
// --cgroup; enters a new mount namespace, self-binds the chroot,
// pivot_roots into it and unmounts the old root; then, from inside, makes
// /, /dev, /dev/net and /run (0700, owned by --uid/--gid), the nodes
// /dev/net/tun, /dev/kvm, /dev/urandom (a failure is only a warning) and
// /dev/userfaultfd when /proc/misc lists it, and the PID file; drops to
// --uid/--gid and execs the exec file in place (same PID) with --id,
// --start-time-us, --start-time-cpu-us and --parent-cpu-time-us before the
// arguments given after "--".
//
// Unlike the real jailer it also starts a sidecar (this binary run again
// with a hidden first argument) before it joins the cgroups and the mount
// namespace. The sidecar stays outside the jail as root and boots the
// guest under QEMU for the fake firecracker, reached through a socketpair
// that becomes firecracker's fd 3. The sidecar ends, killing
// QEMU and removing its temporary directory, when firecracker's end of the
// socketpair closes. --daemonize and --new-pid-ns are refused.
//
// Never install it as a real jailer: it is only for tests.
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

const jailerVersion = "1.16.1"

// sidecarArg, as the first argument, runs the sidecar instead of the jailer.
const sidecarArg = "--fake-sidecar"

// fd3Busy is set when fd 3 was already the Go runtime's epoll descriptor at
// start-up: the final dup onto fd 3 must not pull it from under the runtime.
var fd3Busy bool

// sidecarEnv is the environment the jailer was started with. The jailer
// clears its own environment first thing, so firecracker gets none; the
// sidecar, which is no part of the real jailer, keeps it (it needs PATH).
var sidecarEnv []string

func init() {
	// Namespaces, chroot and the final exec act on the calling thread: keep
	// main on one thread from the start.
	runtime.LockOSThread()
	if (len(os.Args) > 1 && os.Args[1] == sidecarArg) || testing.Testing() {
		return // fd 3 is the sidecar's channel; a test binary keeps its fds
	}
	closeInheritedFDs()
	reserveFD3()
	sidecarEnv = os.Environ()
	os.Clearenv()
}

// closeInheritedFDs closes every descriptor above stderr the caller left
// open, as the real jailer's process sanitizing does, so that firecracker
// inherits nothing but stdio (and, here, the sidecar channel). The Go
// runtime's own poller descriptors are kept.
func closeInheritedFDs() {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < 3 {
			continue
		}
		l, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || strings.HasPrefix(l, "anon_inode:[event") {
			continue // gone already (the directory's own fd) or the runtime's
		}
		unix.Close(fd)
	}
}

// reserveFD3 holds fd 3 with a close-on-exec placeholder so that no file
// the runtime or this program opens lands there; the exec replaces it
// atomically with firecracker's end of the sidecar channel. An fd 3
// inherited from the caller is simply replaced at that point.
func reserveFD3() {
	if _, err := unix.FcntlInt(3, unix.F_GETFD, 0); err == nil {
		if l, err := os.Readlink("/proc/self/fd/3"); err == nil && strings.Contains(l, "eventpoll") {
			fd3Busy = true
		}
		return
	}
	fd, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err == nil && fd != 3 {
		unix.Close(fd)
	}
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == sidecarArg {
		os.Exit(runSidecar(os.Args[2:]))
	}
	if err := runJailer(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "fake jailer: %v\n", err)
		os.Exit(1)
	}
}
