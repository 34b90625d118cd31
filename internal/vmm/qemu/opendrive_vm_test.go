package qemu

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/execx"
	"banger/internal/testutil"
	"banger/internal/vmm"
)

// driveArgs keeps the drive part of Args: -add-fd, -drive and the
// virtio-blk devices.
func driveArgs(argv []string) []string {
	var out []string
	for i := 0; i+1 < len(argv); i++ {
		switch {
		case argv[i] == "-add-fd", argv[i] == "-drive",
			argv[i] == "-device" && strings.HasPrefix(argv[i+1], "virtio-blk-device,"):
			out = append(out, argv[i], argv[i+1])
		}
	}
	return out
}

// runWithDrives starts real QEMU with spec's drives, as Args and
// ExtraFiles give them, and the probe kernel, which exits at once: QEMU
// opens every drive before the guest runs, so the probe's exit code means
// they all opened.
func runWithDrives(t *testing.T, spec vmm.Spec) {
	t.Helper()
	bin, err := execx.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatal(err)
	}
	kernel := filepath.Join(t.TempDir(), "probe.elf")
	if err := os.WriteFile(kernel, ProbeKernel(), 0o600); err != nil {
		t.Fatal(err)
	}
	spec.Kernel, spec.Initrd = kernel, ""
	args := append([]string{"-M", "microvm", "-accel", "tcg", "-m", "16", "-nodefaults", "-no-user-config",
		"-display", "none", "-no-reboot", "-kernel", kernel, "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"},
		driveArgs(Args(spec, "tcg", 0, "/a", "/c"))...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.ExtraFiles = ExtraFiles(spec)
	out, err := cmd.CombinedOutput()
	if got, want := execx.ExitCode(err), probeExitCode<<1|1; got != want {
		t.Fatalf("qemu exit code = %d (%v), want %d: a drive did not open\nargv %q\n%s", got, err, want, args, out)
	}
}

// TestOpenDrivesUnderQEMU: drives given as open files reach real QEMU.
func TestOpenDrivesUnderQEMU(t *testing.T) {
	testutil.RequireVM(t)
	dir := t.TempDir()
	open := func(name string, flag int) *os.File {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, make([]byte, 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(p, flag, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	runWithDrives(t, vmm.Spec{ID: "fd", Drives: []vmm.Drive{
		{ID: "root", Path: "root", File: open("root", os.O_RDWR)},
		{ID: "work", Path: "work", File: open("work", os.O_RDONLY), ReadOnly: true},
	}})
}

// TestBlockDeviceDriveUnderQEMU: a block device given open (as the
// helper gives a dm snapshot) opens through host_device. A loop device
// stands in for the snapshot, which this host's kernel may lack.
func TestBlockDeviceDriveUnderQEMU(t *testing.T) {
	testutil.RequireVM(t)
	testutil.RequireRoot(t)
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, make([]byte, 4<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	backing, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer backing.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no loop devices: %v", err)
	}
	defer ctl.Close()
	n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := os.OpenFile("/dev/loop"+strconv.Itoa(n), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if err := unix.IoctlSetInt(int(dev.Fd()), unix.LOOP_SET_FD, int(backing.Fd())); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := unix.IoctlSetInt(int(dev.Fd()), unix.LOOP_CLR_FD, 0); err != nil {
			t.Errorf("detach %s: %v", dev.Name(), err)
		}
	}()
	runWithDrives(t, vmm.Spec{ID: "blk", Drives: []vmm.Drive{{ID: "root", Path: dev.Name(), File: dev, Block: true}}})
}
