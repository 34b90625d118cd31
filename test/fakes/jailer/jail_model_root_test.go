package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The tests in this file hold the fake jailer to the real one's process
// model: pivot_root rather than chroot, fatal device and folder failures,
// and a firecracker that dies where seccomp is forbidden. They need root
// (BANGER_TEST_ROOT=1).

// startFiltered starts cmd from a locked thread that carries filter, so
// the child inherits it; the thread ends with its goroutine and the test
// binary stays unfiltered. A nil filter starts cmd plainly.
func startFiltered(cmd *exec.Cmd, filter []unix.SockFilter) error {
	if filter == nil {
		return cmd.Start()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread carries the filter
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			errc <- fmt.Errorf("set no_new_privs: %w", err)
			return
		}
		fprog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
		if _, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&fprog))); errno != 0 {
			errc <- fmt.Errorf("install the test's seccomp filter: %w", errno)
			return
		}
		errc <- cmd.Start()
	}()
	return <-errc
}

// denySeccomp makes seccomp(2) fail with EPERM and allows everything else,
// like a service manager's system call filter that forbids it.
var denySeccomp = []unix.SockFilter{
	{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}, // seccomp_data.nr
	{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: unix.SYS_SECCOMP, Jt: 0, Jf: 1},
	{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
	{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
}

// namespaceMounts returns the mountinfo lines of pid's mount namespace as
// seen from that namespace's root (which setns makes the thread's root),
// so that mounts a chroot merely hides are listed too.
func namespaceMounts(t *testing.T, pid int) []string {
	t.Helper()
	type result struct {
		lines []string
		err   error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends in another namespace
		var r result
		defer func() { ch <- r }()
		proc, err := unix.Open("/proc", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			r.err = fmt.Errorf("open /proc: %w", err)
			return
		}
		defer unix.Close(proc)
		ns, err := unix.Open(fmt.Sprintf("/proc/%d/ns/mnt", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			r.err = fmt.Errorf("open the mount namespace: %w", err)
			return
		}
		defer unix.Close(ns)
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			r.err = fmt.Errorf("unshare fs: %w", err)
			return
		}
		if err := unix.Setns(ns, unix.CLONE_NEWNS); err != nil {
			r.err = fmt.Errorf("enter the mount namespace: %w", err)
			return
		}
		fd, err := unix.Openat(proc, "thread-self/mountinfo", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			r.err = fmt.Errorf("open mountinfo: %w", err)
			return
		}
		f := os.NewFile(uintptr(fd), "mountinfo")
		defer f.Close()
		b, err := io.ReadAll(f)
		if err != nil {
			r.err = fmt.Errorf("read mountinfo: %w", err)
			return
		}
		for _, l := range strings.Split(string(b), "\n") {
			if l != "" {
				r.lines = append(r.lines, l)
			}
		}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.lines
}

func TestJailerPivotsIntoTheChroot(t *testing.T) {
	requireRoot(t)
	base := jailBase(t)
	id := fmt.Sprintf("fakejail-pivot-%d", os.Getpid())
	r := startJailer(t, base, id)
	r.waitSocket()
	pid := r.cmd.Process.Pid

	own, _ := os.Readlink("/proc/self/ns/mnt")
	theirs, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	if own == "" || own == theirs {
		t.Fatalf("firecracker shares the test's mount namespace (%q)", theirs)
	}
	// After pivot_root and the unmount of the old root, the namespace holds
	// the jail's self-bind alone, mounted on /. A chroot would leave every
	// host mount in it, only out of the process's sight.
	mounts := namespaceMounts(t, pid)
	if len(mounts) != 1 {
		t.Fatalf("firecracker's mount namespace holds %d mounts, want the jail alone:\n%s", len(mounts), strings.Join(mounts, "\n"))
	}
	f := strings.Fields(mounts[0])
	if len(f) < 5 || f[4] != "/" || !strings.HasSuffix(f[3], filepath.Join("/firecracker", id, "root")) {
		t.Fatalf("the namespace's mount is not the jail on /: %s", mounts[0])
	}
	if _, err := os.Lstat(filepath.Join(r.chroot, oldRootDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left in the jail: %v", oldRootDir, err)
	}
}

// failJailer runs a jailer that must fail, and returns its output.
func failJailer(t *testing.T, r *jailRun) string {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(15 * time.Second):
		t.Fatalf("the jailer still runs after 15s:\n%s", r.consoleText())
	}
	out := r.consoleText()
	if r.waitErr == nil {
		t.Fatalf("the jailer succeeded:\n%s", out)
	}
	if _, err := os.Lstat(filepath.Join(r.chroot, "run", "firecracker.socket")); err == nil {
		t.Errorf("an API socket exists after the jailer failed:\n%s", out)
	}
	return out
}

func TestJailerUserfaultfdFailureIsFatal(t *testing.T) {
	requireRoot(t)
	if userfaultfdMinor() == nil {
		t.Skip("the host's /proc/misc lists no userfaultfd")
	}
	base := jailBase(t)
	id := fmt.Sprintf("fakejail-uffd-%d", os.Getpid())
	chroot := filepath.Join(base, "firecracker", id, "root")
	if err := os.MkdirAll(filepath.Join(chroot, "dev"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(chroot, "dev", "userfaultfd"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	out := failJailer(t, startJailer(t, base, id))
	if !strings.Contains(out, "create /dev/userfaultfd via mknod inside the jail: File exists (os error 17)") {
		t.Fatalf("output lacks the userfaultfd mknod failure:\n%s", out)
	}
}

// TestJailerStagingMistakes checks that a jail staged wrongly before the
// jailer runs makes it fail as the real jailer would.
func TestJailerStagingMistakes(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name    string
		missing bool // run with a chroot base that does not exist
		stage   func(chroot string) error
		want    string
	}{
		{name: "missing base", missing: true, want: "canonicalize path"},
		{name: "old_root left", stage: func(c string) error { return os.Mkdir(filepath.Join(c, oldRootDir), 0o700) },
			want: "create the old root directory before pivoting root: File exists (os error 17)"},
		{name: "dev is a file", stage: func(c string) error { return os.WriteFile(filepath.Join(c, "dev"), nil, 0o600) },
			want: "create directory /dev: File exists (os error 17)"},
		{name: "kvm node exists", stage: func(c string) error {
			if err := os.Mkdir(filepath.Join(c, "dev"), 0o700); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(c, "dev", "kvm"), nil, 0o600)
		}, want: "create /dev/kvm via mknod inside the jail: File exists (os error 17)"},
		{name: "exec copy not executable", stage: func(c string) error { return os.WriteFile(filepath.Join(c, "firecracker"), nil, 0o644) },
			want: "exec /firecracker: permission denied"},
		{name: "stale pid file", stage: func(c string) error { return os.WriteFile(filepath.Join(c, "firecracker.pid"), nil, 0o600) },
			want: "open file /firecracker.pid: File exists (os error 17)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := jailBase(t)
			id := fmt.Sprintf("fakejail-stage-%d", os.Getpid())
			if tc.missing {
				base = filepath.Join(base, "missing")
			} else {
				chroot := filepath.Join(base, "firecracker", id, "root")
				if err := os.MkdirAll(chroot, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := tc.stage(chroot); err != nil {
					t.Fatal(err)
				}
			}
			out := failJailer(t, startJailer(t, base, id))
			if !strings.Contains(out, tc.want) {
				t.Fatalf("output lacks %q:\n%s", tc.want, out)
			}
			if tc.missing {
				if _, err := os.Lstat(base); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("the jailer created the missing base: %v", err)
				}
			}
		})
	}
}

func TestJailedFirecrackerDiesWhereSeccompIsForbidden(t *testing.T) {
	requireRoot(t)
	base := jailBase(t)
	id := fmt.Sprintf("fakejail-seccomp-%d", os.Getpid())
	r := startJailerFiltered(t, base, id, nil, denySeccomp)
	select {
	case <-r.done:
	case <-time.After(15 * time.Second):
		t.Fatalf("firecracker still runs after 15s under a filter that forbids seccomp:\n%s", r.consoleText())
	}
	var ee *exec.ExitError
	if !errors.As(r.waitErr, &ee) {
		t.Fatalf("exit = %v, want death by SIGABRT:\n%s", r.waitErr, r.consoleText())
	}
	if ws := ee.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGABRT {
		t.Fatalf("exit = %v, want death by SIGABRT:\n%s", r.waitErr, r.consoleText())
	}
	if !strings.Contains(r.consoleText(), "Failed to set the requested seccomp filters on the API thread") {
		t.Fatalf("output lacks the API thread's seccomp failure:\n%s", r.consoleText())
	}
}

// TestJailerOnNodevBase: on a nodev mount the jailer's mknods succeed, but
// the nodes cannot be opened, so firecracker fails at its first device.
func TestJailerOnNodevBase(t *testing.T) {
	requireRoot(t)
	base, err := os.MkdirTemp("/var/tmp", "fakejail-nodev-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := unix.Mount("tmpfs", base, "tmpfs", unix.MS_NODEV, "mode=0755"); err != nil {
		t.Fatalf("mount a nodev tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(base, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount the nodev tmpfs: %v", err)
		}
	})
	id := fmt.Sprintf("fakejail-nodev-%d", os.Getpid())
	r := startJailer(t, base, id)
	r.waitSocket()
	if st := statOf(t, filepath.Join(r.chroot, "dev", "net", "tun")); st.Mode&syscall.S_IFMT != syscall.S_IFCHR {
		t.Fatalf("/dev/net/tun is not a character device: mode %o", st.Mode)
	}
	code, body := r.api("PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"bgnodev0"}`)
	if code != 400 || !strings.Contains(body, "/dev/net/tun: Permission denied (os error 13)") {
		t.Fatalf("PUT /network-interfaces on a nodev jail = %d %s", code, body)
	}
}
