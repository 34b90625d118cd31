package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"banger/test/fakebuild"
)

var (
	strictOnce sync.Once
	strictFC   string
	strictErr  error
)

// strictFirecracker builds the fake firecracker without the no-KVM opt-in,
// as `make fakes` does, beside the other fakes (named firecracker too: the
// jailer names the chroot's folder after the exec file).
func strictFirecracker(t *testing.T) string {
	t.Helper()
	fakes(t)
	strictOnce.Do(func() {
		strictFC = filepath.Join(buildDir, "strict", "firecracker")
		strictErr = goBuild(strictFC, "firecracker")
	})
	if strictErr != nil {
		t.Fatal(strictErr)
	}
	return strictFC
}

// jailFile writes a file into the chroot, owned by the jailed uid.
func jailFile(t *testing.T, chroot, name string, data []byte) {
	t.Helper()
	p := filepath.Join(chroot, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, nobody, nobody); err != nil {
		t.Fatal(err)
	}
}

// TestNoKVMBuildRoot runs the two builds of the fake firecracker through
// the jailer on a host without KVM, up to InstanceStart with a kernel that
// is not an ELF (so nothing boots): the strict build stops at the jail's
// /dev/kvm like Firecracker; the opt-in build, as fakebuild makes it,
// warns and goes on to the kernel check that follows.
func TestNoKVMBuildRoot(t *testing.T) {
	requireRoot(t)
	if kvm, err := fakebuild.HostHasKVM(); err != nil || kvm {
		t.Skipf("needs a host without KVM (has KVM: %v, %v)", kvm, err)
	}
	jailer, optIn := fakes(t)
	for _, tc := range []struct {
		name, fc, want string
		warns          bool
	}{
		{"strict", strictFirecracker(t), "Cannot open the KVM file descriptor /dev/kvm: No such device (os error 19)", false},
		{"opt-in", optIn, "Kernel Loader: /vmlinux: failed to load ELF kernel image: invalid ELF magic", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := jailBase(t)
			id := fmt.Sprintf("fakekvm-%s-%d", tc.name, os.Getpid())
			r := startJailerExec(t, jailer, tc.fc, base, id, nil, nil)
			r.waitSocket()
			jailFile(t, r.chroot, "vmlinux", []byte("not an ELF kernel"))
			jailFile(t, r.chroot, "initrd", []byte("070701"))
			r.mustAPI("PUT", "/boot-source", `{"kernel_image_path":"/vmlinux","initrd_path":"/initrd"}`)
			code, body := r.api("PUT", "/actions", `{"action_type":"InstanceStart"}`)
			if code != 400 || !strings.Contains(body, tc.want) {
				t.Fatalf("InstanceStart = %d %s, want 400 with %q\n%s", code, body, tc.want, r.consoleText())
			}
			warned := strings.Contains(r.consoleText(), "host has no KVM: this test build boots the guest under TCG where Firecracker would refuse")
			if warned != tc.warns {
				t.Fatalf("warned of a missing KVM: %v, want %v\n%s", warned, tc.warns, r.consoleText())
			}
		})
	}
}
