// Package jailtest holds the test doubles and leak checks for banger's
// Firecracker jails (internal/jail, which it does not import, so that
// package's own tests can use it): a fake jailer, which is the test
// binary itself run under the name FakeJailerName, checks its argv, does
// the jailer's part of the chroot (takes the root over for the owner,
// creates the API socket) and stays alive; plus a jail base and binaries
// the jail checks accept, and checks that no mount or process is left.
package jailtest

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/privop"
	"banger/internal/procstat"

	"golang.org/x/sys/unix"
)

// FakeJailerName is the fake jailer's file name: a test binary started
// under this name plays the jailer (see MaybeRunFakeJailer).
const FakeJailerName = "fake-jailer"

// ReadyLine starts the line the fake jailer writes to its stdout (the VM's
// console) once its API socket listens.
const ReadyLine = "fake-jailer ready"

// MaybeRunFakeJailer plays the jailer and exits when the test binary runs
// as FakeJailerName; otherwise it returns at once. Call it first in
// TestMain (or from an init function).
func MaybeRunFakeJailer() {
	if filepath.Base(os.Args[0]) != FakeJailerName {
		return
	}
	os.Exit(runFakeJailer(os.Args[1:]))
}

// runFakeJailer checks argv as internal/jail builds it, does what the
// jailer does to the chroot before exec, listens on the API socket, reports
// its environment on stdout and waits for a signal.
func runFakeJailer(args []string) int {
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "fake-jailer: "+format+"\n", a...)
		return 2
	}
	// The argv internal/jail builds, in its order: five options, an
	// optional --cgroup-version 2, then firecracker's own arguments.
	opts := map[string]string{}
	rest := args
	for _, k := range []string{"--id", "--exec-file", "--uid", "--gid", "--chroot-base-dir"} {
		if len(rest) < 2 || rest[0] != k || rest[1] == "" {
			return fail("argv %q: want %s VALUE next", args, k)
		}
		opts[k], rest = rest[1], rest[2:]
	}
	if len(rest) >= 2 && rest[0] == "--cgroup-version" {
		if rest[1] != "2" {
			return fail("argv %q: --cgroup-version %q", args, rest[1])
		}
		rest = rest[2:]
	}
	if strings.Join(rest, " ") != "-- --api-sock "+privop.JailAPISocket {
		return fail("argv %q: firecracker args %q, want -- --api-sock %s", args, rest, privop.JailAPISocket)
	}
	uid, err1 := strconv.Atoi(opts["--uid"])
	gid, err2 := strconv.Atoi(opts["--gid"])
	if err1 != nil || err2 != nil {
		return fail("bad uid/gid in %q", args)
	}
	exec := filepath.Base(opts["--exec-file"])
	chroot := filepath.Join(opts["--chroot-base-dir"], exec, opts["--id"], "root")
	if fi, err := os.Lstat(filepath.Join(chroot, exec)); err != nil || !fi.Mode().IsRegular() {
		return fail("no firecracker copy in %s: %v", chroot, err)
	}
	// The jailer's own steps: the chroot and /run become the owner's 0700.
	if err := os.Chown(chroot, uid, gid); err != nil {
		return fail("%v", err)
	}
	if err := os.Chmod(chroot, 0o700); err != nil {
		return fail("%v", err)
	}
	run := filepath.Join(chroot, "run")
	if err := os.Mkdir(run, 0o700); err != nil {
		return fail("%v", err)
	}
	if err := os.Chown(run, uid, gid); err != nil {
		return fail("%v", err)
	}
	ln, err := net.Listen("unix", filepath.Join(chroot, privop.JailAPISocket))
	if err != nil {
		return fail("%v", err)
	}
	defer ln.Close()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	cwd, _ := os.Getwd()
	sid, _ := unix.Getsid(0)
	var stdin unix.Stat_t
	_ = unix.Fstat(0, &stdin)
	fmt.Printf("%s id=%s uid=%d gid=%d cwd=%s session_leader=%t stdin_null=%t env=%q\n", ReadyLine, opts["--id"], uid, gid,
		cwd, sid == os.Getpid(), stdin.Mode&unix.S_IFMT == unix.S_IFCHR && stdin.Rdev == unix.Mkdev(1, 3), os.Environ())
	<-sig
	return 0
}

// Base returns a jail base CheckBase accepts: root-owned 0711 directories
// below the temp dir (a root-owned sticky /tmp is accepted). It skips t
// when that filesystem is nodev or noexec. At the end of the test it fails
// t if anything is still mounted below the base (then unmounts it, so one
// failure does not leak into the host) and removes the base.
func Base(t testing.TB) string {
	t.Helper()
	top, err := os.MkdirTemp("", "bj")
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(top, "jail")
	for _, d := range []string{top, base} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if mps := MountsUnder(t, top); len(mps) > 0 {
			t.Errorf("mounts left below %s: %q", top, mps)
			for _, mp := range mps {
				_ = unix.Unmount(mp, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
			}
			if mps := MountsUnder(t, top); len(mps) > 0 {
				t.Errorf("could not unmount %q; leaving %s in place", mps, top)
				return // never remove through a live mount
			}
		}
		if err := os.RemoveAll(top); err != nil {
			t.Errorf("remove %s: %v", top, err)
		}
	})
	var st unix.Statfs_t
	if err := unix.Statfs(base, &st); err != nil {
		t.Fatal(err)
	}
	if st.Flags&(unix.ST_NODEV|unix.ST_NOEXEC) != 0 {
		t.Skipf("%s is on a nodev or noexec mount: the jailer could not create device nodes or exec there", top)
	}
	return base
}

// Binaries puts a root-owned fake firecracker (a small file, never run)
// and the fake jailer (a copy of the running test binary) in a new
// root-owned 0755 directory under dir, and returns their paths.
func Binaries(t testing.TB, dir string) (firecracker, jailer string) {
	t.Helper()
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	firecracker = filepath.Join(bin, "firecracker")
	if err := os.WriteFile(firecracker, []byte("#!/bin/false\nfake firecracker\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	jailer = filepath.Join(bin, FakeJailerName)
	src, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(jailer, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{firecracker, jailer} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return firecracker, jailer
}

// WaitReady waits until the console file at path holds the fake jailer's
// ready line and returns it.
func WaitReady(t testing.TB, console string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, _ := os.ReadFile(console)
		for _, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(line, ReadyLine) {
				return line
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("fake jailer not ready after 10s; console: %q", data)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// KillAndWait kills pid and waits until it is gone from /proc (reaped by
// whoever started it).
func KillAndWait(t testing.TB, pid int) {
	t.Helper()
	if err := unix.Kill(pid, unix.SIGKILL); err != nil && err != unix.ESRCH {
		t.Errorf("kill %d: %v", pid, err)
	}
	WaitGone(t, pid)
}

// WaitGone waits until /proc/PID is gone, and fails t after 10 s.
func WaitGone(t testing.TB, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); os.IsNotExist(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("process %d still there after 10s", pid)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// FakeJailers lists the pids of the running fake jailers this process
// started (children named FakeJailerName), for a leak check at the end of
// the tests. Other test binaries' run in parallel and are not counted.
func FakeJailers() []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		argv0, _, _ := strings.Cut(string(cmdline), "\x00")
		if filepath.Base(argv0) != FakeJailerName {
			continue
		}
		st, err := procstat.Read(pid)
		if err != nil || st.Gone() || st.PPID != os.Getpid() {
			continue // exited and not yet reaped, or not ours
		}
		out = append(out, pid)
	}
	return out
}

// MountsUnder lists the mount points at or below dir, deepest first, from
// /proc/self/mountinfo (paths with escaped characters are not expected in
// tests).
func MountsUnder(t testing.TB, dir string) []string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			out = append([]string{f[4]}, out...)
		}
	}
	return out
}
