package qemu

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"banger/internal/execx"
)

// probeKVM boots a few-byte PVH guest under -accel kvm that writes to
// QEMU's isa-debug-exit port. Only a real exit code proves KVM can run a
// guest: /dev/kvm can exist and open fine and still not run ordinary guests
// (nested or paravirtual setups), in which case QEMU just hangs.
func probeKVM(ctx context.Context, bin string) (bool, string) {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false, "cannot open /dev/kvm: " + err.Error()
	}
	f.Close()
	dir, err := os.MkdirTemp("", "banger-kvm-probe-")
	if err != nil {
		return false, err.Error()
	}
	defer os.RemoveAll(dir)
	kernel := filepath.Join(dir, "probe.elf")
	if err := os.WriteFile(kernel, ProbeKernel(), 0o600); err != nil {
		return false, err.Error()
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	_, err = execx.Default.Run(ctx, bin, "-M", "microvm", "-accel", "kvm", "-m", "16", "-nodefaults", "-no-user-config",
		"-display", "none", "-no-reboot", "-kernel", kernel,
		"-device", "isa-debug-exit,iobase=0xf4,iosize=0x04")
	if ctx.Err() != nil {
		return false, "a test guest did not run under KVM within 3s"
	}
	// isa-debug-exit makes QEMU exit with (value<<1)|1.
	if code := execx.ExitCode(err); code == probeExitCode<<1|1 {
		return true, ""
	}
	return false, fmt.Sprintf("test guest under KVM failed: %v", err)
}

// probeKVMKernel boots kernel under KVM with no root and no init: a kernel
// that runs reaches "Kernel panic" and, with panic=-1 and -no-reboot, makes
// QEMU exit 0 within a second or two. An emulation failure leaves QEMU
// stopped instead, which the timeout catches.
func probeKVMKernel(ctx context.Context, bin, kernel string) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := execx.Default.Run(ctx, bin, "-M", "microvm,acpi=on", "-accel", "kvm", "-cpu", "host", "-m", "256",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-serial", "stdio",
		"-kernel", kernel, "-append", "console=ttyS0 panic=-1 loglevel=1 root=/dev/nonexistent rdinit=/nonexistent")
	if ctx.Err() != nil {
		return false, "the guest kernel did not run under KVM within 5s"
	}
	if err != nil {
		return false, fmt.Sprintf("the guest kernel failed under KVM: %v", err)
	}
	if !bytes.Contains(out, []byte("Kernel panic")) {
		return false, "the guest kernel under KVM exited without reaching its panic handler"
	}
	return true, ""
}

const probeExitCode = 0x31

// ProbeKernel returns a minimal ELF64 with a PVH entry note whose code
// writes probeExitCode to port 0xf4 and halts.
func ProbeKernel() []byte {
	const (
		base    = 0x100000
		ehsize  = 64
		phsize  = 56
		noteOff = ehsize + 2*phsize
		noteLen = 12 + 4 + 8 // header, "Xen\0", u64 entry
	)
	codeOff := uint64(noteOff + noteLen)
	code := []byte{
		0xb0, probeExitCode, // mov al, probeExitCode
		0xe6, 0xf4, // out 0xf4, al
		0xf4,       // hlt
		0xeb, 0xfd, // jmp hlt
	}
	total := codeOff + uint64(len(code))
	var b bytes.Buffer
	le := binary.LittleEndian
	w := func(v any) { _ = binary.Write(&b, le, v) }
	// ELF header
	b.Write([]byte{0x7f, 'E', 'L', 'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	w(uint16(2))              // ET_EXEC
	w(uint16(62))             // EM_X86_64
	w(uint32(1))              // EV_CURRENT
	w(uint64(base + codeOff)) // e_entry
	w(uint64(ehsize))         // e_phoff
	w(uint64(0))              // e_shoff
	w(uint32(0))              // e_flags
	w(uint16(ehsize))
	w(uint16(phsize))
	w(uint16(2)) // e_phnum
	w(uint16(0)) // e_shentsize
	w(uint16(0)) // e_shnum
	w(uint16(0)) // e_shstrndx
	// PT_LOAD of the whole file
	w(uint32(1))
	w(uint32(5)) // R+X
	w(uint64(0))
	w(uint64(base))
	w(uint64(base))
	w(total)
	w(total)
	w(uint64(0x1000))
	// PT_NOTE
	w(uint32(4))
	w(uint32(4))
	w(uint64(noteOff))
	w(uint64(base + noteOff))
	w(uint64(base + noteOff))
	w(uint64(noteLen))
	w(uint64(noteLen))
	w(uint64(4))
	// Xen note: XEN_ELFNOTE_PHYS32_ENTRY (18)
	w(uint32(4))
	w(uint32(8))
	w(uint32(18))
	b.Write([]byte("Xen\x00"))
	w(uint64(base + codeOff))
	b.Write(code)
	return b.Bytes()
}
