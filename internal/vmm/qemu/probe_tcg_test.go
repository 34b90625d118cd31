package qemu

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"banger/internal/execx"
	"banger/internal/testutil"
)

// TestProbeKernelRunsUnderTCG proves the probe guest itself is right: under
// TCG it must make QEMU exit with the expected code, otherwise a failed KVM
// probe would mean nothing.
func TestProbeKernelRunsUnderTCG(t *testing.T) {
	testutil.RequireVM(t)
	bin, err := execx.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatal(err)
	}
	kernel := filepath.Join(t.TempDir(), "probe.elf")
	if err := os.WriteFile(kernel, ProbeKernel(), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = execx.Default.Run(ctx, bin, "-M", "microvm", "-accel", "tcg", "-m", "16", "-nodefaults", "-no-user-config",
		"-display", "none", "-no-reboot", "-kernel", kernel, "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04")
	if got, want := execx.ExitCode(err), probeExitCode<<1|1; got != want {
		t.Fatalf("probe guest exit code = %d (%v), want %d", got, err, want)
	}
}
