package sysunit

import (
	"os/exec"
	"strings"
	"testing"
)

// firecrackerSyscalls are the system calls the jailer and Firecracker make
// under the helper unit (they are its children, so its SystemCallFilter
// applies to them too). Firecracker's own x86_64 seccomp profile (v1.16)
// allows its threads the first group; before installing it, Firecracker
// calls seccomp(2) and prctl(PR_SET_NO_NEW_PRIVS), binds its API socket
// and starts its threads; the jailer copies the binary, makes the chroot
// and its device nodes, enters a new mount namespace, pivots into the
// chroot, drops to the VM's uid and gid and execs Firecracker.
var firecrackerSyscalls = map[string][]string{
	"firecracker threads (its seccomp profile)": {
		"accept4", "brk", "clock_gettime", "close", "connect", "epoll_ctl", "epoll_pwait", "eventfd2",
		"exit", "exit_group", "fcntl", "fstat", "fsync", "ftruncate", "futex", "getrandom", "gettid",
		"io_uring_enter", "io_uring_register", "io_uring_setup", "ioctl", "lseek", "madvise",
		"memfd_create", "mincore", "mmap", "mprotect", "mremap", "msync", "munmap", "open", "read",
		"readv", "recvfrom", "recvmsg", "restart_syscall", "rt_sigaction", "rt_sigprocmask",
		"rt_sigreturn", "sched_yield", "sendmsg", "sendto", "sigaltstack", "socket", "stat",
		"timerfd_create", "timerfd_settime", "tkill", "write", "writev",
	},
	"firecracker start-up": {
		"seccomp", "prctl", "bind", "listen", "clone", "clone3", "openat", "execve", "sched_getaffinity",
	},
	"jailer": {
		"getdents64", "mkdir", "mkdirat", "chmod", "chown", "fchown", "mknod", "mknodat", "unshare",
		"mount", "pivot_root", "umount2", "chroot", "chdir", "prlimit64", "setrlimit", "setsid",
		"setgid", "setuid", "setgroups", "copy_file_range", "sendfile", "dup2", "dup3",
	},
}

// expandFilter returns the system calls a SystemCallFilter= list names,
// groups expanded by systemd-analyze itself.
func expandFilter(t *testing.T, items []string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, it := range items {
		if !strings.HasPrefix(it, "@") {
			out[it] = true
			continue
		}
		b, err := exec.Command("systemd-analyze", "syscall-filter", it).Output()
		if err != nil {
			t.Fatalf("systemd-analyze syscall-filter %s: %v", it, err)
		}
		lines := strings.Split(string(b), "\n")
		var sub []string
		for _, l := range lines[1:] {
			f := strings.Fields(l)
			if len(f) == 0 || strings.HasPrefix(f[0], "#") {
				continue
			}
			sub = append(sub, f[0])
		}
		for s := range expandFilter(t, sub) {
			out[s] = true
		}
	}
	return out
}

// TestHelperFilterAllowsFirecracker expands the helper unit's
// SystemCallFilter= lines with systemd-analyze and checks every system
// call the jailer and Firecracker make: a call the unit forbids fails with
// EPERM, and Firecracker panics when seccomp(2) does.
func TestHelperFilterAllowsFirecracker(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed")
	}
	var allow, deny []string
	for _, l := range strings.Split(Helper(typical()), "\n") {
		v, ok := strings.CutPrefix(l, "SystemCallFilter=")
		if !ok {
			continue
		}
		if rest, neg := strings.CutPrefix(v, "~"); neg {
			deny = append(deny, strings.Fields(rest)...)
		} else {
			allow = append(allow, strings.Fields(v)...)
		}
	}
	allowed, denied := expandFilter(t, allow), expandFilter(t, deny)
	if len(allowed) < 100 {
		t.Fatalf("the helper unit's filter expands to only %d calls: %v", len(allowed), allow)
	}
	for who, calls := range firecrackerSyscalls {
		for _, c := range calls {
			if !allowed[c] || denied[c] {
				t.Errorf("%s calls %s, which bangerd-root.service's SystemCallFilter forbids", who, c)
			}
		}
	}
}
