// Command jailer is a test double of the Firecracker v1.16.1 jailer for
// banger's tests, on hosts where real Firecracker cannot run. It takes the
// real jailer's command line, builds the same chroot
// (<chroot-base-dir>/<exec-name>/<id>/root with /dev/kvm, /dev/net/tun,
// /dev/urandom, /run and a copy of the exec file, owned by --uid/--gid),
// writes the PID file, joins --netns, applies --resource-limit and
// --cgroup, enters a new mount namespace, chroots, drops to --uid/--gid and
// execs the exec file in place (same PID), with
// --id=<id> --start-time-us=<n> --start-time-cpu-us=<n> before the
// arguments given after "--".
//
// Unlike the real jailer it first starts a sidecar (this binary run again
// with a hidden first argument), which stays outside the jail as root and
// boots the guest under QEMU for the fake firecracker, reached through a
// socketpair that becomes firecracker's fd 3. The sidecar ends, killing
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

func init() {
	// Namespaces, chroot and the final exec act on the calling thread: keep
	// main on one thread from the start.
	runtime.LockOSThread()
	if (len(os.Args) > 1 && os.Args[1] == sidecarArg) || testing.Testing() {
		return // fd 3 is the sidecar's channel; a test binary keeps its fds
	}
	closeInheritedFDs()
	reserveFD3()
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
