package testutil

import (
	"runtime"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// AsUser runs fn on an OS thread that touches files as uid:gid would: its
// groups are gid alone, its fsuid and fsgid are uid and gid, and its
// effective capabilities are none (setfsuid drops only root's file
// capabilities; CAP_SYS_PTRACE, say, would still follow another uid's
// /proc/PID/root). Credentials are per thread in the kernel, and this one
// is never handed back to the runtime: it ends with its goroutine. The
// caller must be root.
func AsUser(t testing.TB, uid, gid int, fn func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see above
		g := uint32(gid)
		if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, 1, uintptr(unsafe.Pointer(&g)), 0); e != 0 { //nolint:gosec // G103: setgroups(2) takes the list by pointer
			done <- e
			return
		}
		if err := unix.Setfsgid(gid); err != nil {
			done <- err
			return
		}
		if err := unix.Setfsuid(uid); err != nil {
			done <- err
			return
		}
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var caps [2]unix.CapUserData
		if err := unix.Capget(&hdr, &caps[0]); err != nil {
			done <- err
			return
		}
		caps[0].Effective, caps[1].Effective = 0, 0
		if err := unix.Capset(&hdr, &caps[0]); err != nil {
			done <- err
			return
		}
		fn()
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatalf("act as uid %d: %v", uid, err)
	}
}
