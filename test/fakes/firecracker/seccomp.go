package main

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Firecracker installs a seccomp filter on each of its threads, with
// prctl(PR_SET_NO_NEW_PRIVS) first, and aborts if that fails: a host or a
// service manager that forbids seccomp(2) kills it, unless it was started
// with --no-seccomp (whose empty filters are never installed). The API
// thread is the first to do so, after the API socket is bound and before
// the first request is served. The fake installs an allow-all filter on its
// own API thread at that point, so it dies where Firecracker dies; what a
// real filter would forbid is not modelled.

// apiThreadName is the name Firecracker gives its API thread.
const apiThreadName = "fc_api"

// allowAll is a one-instruction BPF program that allows every syscall.
var allowAll = []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW}}

// installFilter sets no_new_privs and installs prog on the calling thread
// only (no TSYNC), as Firecracker does per thread. The caller must be locked
// to its OS thread and must never unlock it.
func installFilter(prog []unix.SockFilter) error {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %s", osError(err))
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	_, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&fprog))) //nolint:gosec // G103: seccomp(2) takes the filter program by pointer
	if errno != 0 {
		return fmt.Errorf("seccomp(SECCOMP_SET_MODE_FILTER): %s", osError(errno))
	}
	return nil
}

// setThreadName names the calling thread, as Rust's thread builder does.
func setThreadName(name string) {
	b := append([]byte(name), 0)
	_ = unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&b[0])), 0, 0, 0) //nolint:gosec // G103: prctl(PR_SET_NAME) takes the name by pointer
}

// abort ends the process the way a Rust panic with panic=abort does: by
// SIGABRT with its default action. The Go runtime catches SIGABRT, so the
// default action is restored first. The process is made non-dumpable so
// that no core file lands in the jail.
func abort() {
	var sa struct {
		handler  uintptr // SIG_DFL
		flags    uint64
		restorer uintptr
		mask     uint64
	}
	_, _, _ = unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(unix.SIGABRT), uintptr(unsafe.Pointer(&sa)), 0, unsafe.Sizeof(sa.mask), 0, 0) //nolint:gosec // G103: rt_sigaction(2) takes the action by pointer
	_ = unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	_ = unix.Tgkill(unix.Getpid(), unix.Gettid(), unix.SIGABRT)
	os.Exit(134) // not reached unless SIGABRT is blocked
}
