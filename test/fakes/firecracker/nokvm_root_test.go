package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// absentKVMNode makes the jailer's /dev/kvm node (misc 10:232) in dir and
// returns its path. It needs root, BANGER_TEST_ROOT=1 and a host kernel
// without KVM, where opening the node fails with ENODEV.
func absentKVMNode(t *testing.T, dir string) string {
	t.Helper()
	if os.Geteuid() != 0 || os.Getenv("BANGER_TEST_ROOT") != "1" {
		t.Skip("needs root and BANGER_TEST_ROOT=1")
	}
	p := filepath.Join(dir, "kvm")
	if err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(10, 232))); err != nil {
		t.Fatalf("mknod %s: %v", p, err)
	}
	return p
}

func requireENODEV(t *testing.T, p string) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err == nil {
		f.Close()
		t.Skip("the host has KVM: its device opens")
	}
	if !errors.Is(err, syscall.ENODEV) {
		t.Skipf("a KVM node here does not fail with ENODEV: %v", err)
	}
}

func devDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(d, &st); err != nil || st.Flags&unix.ST_NODEV != 0 {
		t.Skipf("the temp dir %s allows no device nodes", d)
	}
	return d
}

func startWithKVM(t *testing.T, kvm string, optIn bool) (*testEnv, int, string, string) {
	t.Helper()
	e := newTestEnv(t)
	var log bytes.Buffer
	e.m.log.configure(&log, levelInfo, false, false)
	e.m.allowNoKVM = optIn
	e.configure()
	e.m.devKVM = kvm
	code, body := e.do("PUT", "/actions", `{"action_type":"InstanceStart"}`)
	return e, code, body, log.String()
}

// The strict build fails InstanceStart on a host without KVM, as
// Firecracker does.
func TestStrictBuildNeedsKVMRoot(t *testing.T) {
	kvm := absentKVMNode(t, devDir(t))
	requireENODEV(t, kvm)
	e, code, body, _ := startWithKVM(t, kvm, false)
	if code != 400 || !strings.Contains(faultOf(t, body), "Cannot open the KVM file descriptor "+kvm+": No such device (os error 19)") {
		t.Fatalf("strict InstanceStart without KVM = %d %s", code, body)
	}
	if len(e.backend.boots) != 0 {
		t.Fatal("the strict build booted a guest without KVM")
	}
}

// The opt-in build boots the guest on a host without KVM, and says so.
func TestNoKVMBuildBootsWithoutKVMRoot(t *testing.T) {
	kvm := absentKVMNode(t, devDir(t))
	requireENODEV(t, kvm)
	e, code, body, log := startWithKVM(t, kvm, true)
	if code != 204 {
		t.Fatalf("opt-in InstanceStart without KVM = %d %s", code, body)
	}
	if len(e.backend.boots) != 1 || !e.m.started || e.m.kvm != nil {
		t.Fatalf("boots %d, started %v, kvm %v", len(e.backend.boots), e.m.started, e.m.kvm)
	}
	if !strings.Contains(log, noKVMWarning) {
		t.Fatalf("no warning in the log:\n%s", log)
	}
}

// The opt-in forgives no other failure: the same node on a nodev mount
// (EACCES even for root) still fails InstanceStart.
func TestNoKVMBuildRefusesNodevRoot(t *testing.T) {
	dir := devDir(t)
	requireENODEV(t, absentKVMNode(t, dir))
	nodev := filepath.Join(dir, "nodev")
	if err := os.Mkdir(nodev, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", nodev, "tmpfs", unix.MS_NODEV, "mode=0755,size=1m"); err != nil {
		t.Fatalf("mount a nodev tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(nodev, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount the nodev tmpfs: %v", err)
		}
	})
	kvm := absentKVMNode(t, nodev)
	e, code, body, log := startWithKVM(t, kvm, true)
	if code != 400 || !strings.Contains(faultOf(t, body), "Cannot open the KVM file descriptor "+kvm+": Permission denied (os error 13)") {
		t.Fatalf("opt-in InstanceStart with KVM on a nodev mount = %d %s", code, body)
	}
	if len(e.backend.boots) != 0 || strings.Contains(log, noKVMWarning) {
		t.Fatalf("booted %d guests; log:\n%s", len(e.backend.boots), log)
	}
}
