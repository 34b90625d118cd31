// Package fakebuild owns how tests build the fake firecracker
// (test/fakes/firecracker) for the host they run on: strict, like
// Firecracker, wherever the host kernel has KVM, and with the fake's no-KVM
// opt-in only where it has none, so the guest still boots under QEMU TCG.
package fakebuild

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

// NoKVMLDFlags are the linker flags that turn the fake's opt-in on; the
// name must match the variable in test/fakes/firecracker/nokvm.go.
const NoKVMLDFlags = "-X main.noKVM=1"

// procMisc lists the host kernel's registered misc devices.
const procMisc = "/proc/misc"

// miscHasKVM reports whether a /proc/misc listing ("minor name" lines)
// registers the kvm device.
func miscHasKVM(listing string) bool {
	sc := bufio.NewScanner(strings.NewReader(listing))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[1] == "kvm" {
			return true
		}
	}
	return false
}

// HostHasKVM reports whether the host kernel has a KVM device. It asks
// /proc/misc rather than /dev/kvm: the node may exist without a driver
// behind it, or be missing from a container's /dev although KVM works.
func HostHasKVM() (bool, error) {
	b, err := os.ReadFile(procMisc)
	if err != nil {
		return false, fmt.Errorf("read misc devices: %w", err)
	}
	return miscHasKVM(string(b)), nil
}

// FirecrackerArgs returns the extra `go build` arguments for the fake
// firecracker on this host and, when they turn the opt-in on, a sentence
// for the test log saying why.
func FirecrackerArgs() (args []string, note string, err error) {
	kvm, err := HostHasKVM()
	if err != nil {
		return nil, "", err
	}
	if kvm {
		return nil, "", nil
	}
	return []string{"-ldflags", NoKVMLDFlags},
		"host has no KVM (no kvm in " + procMisc + "): the fake firecracker is built with its no-KVM opt-in and boots guests under TCG where Firecracker would refuse", nil
}
