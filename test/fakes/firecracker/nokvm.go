package main

import (
	"errors"
	"os"
	"syscall"
)

// noKVM is the no-KVM opt-in, set only at build time
// (-ldflags "-X main.noKVM=1"). A plain build leaves it empty and the fake
// is as strict as Firecracker: InstanceStart fails without a usable KVM
// device. Tests set it only on hosts whose kernel has no KVM at all, where
// that refusal would stop every boot although the guest never needs KVM
// (the sidecar runs it under QEMU TCG).
var noKVM string

// noKVMWarning is logged when the opt-in lets a start go on without KVM.
const noKVMWarning = "host has no KVM: this test build boots the guest under TCG where Firecracker would refuse"

// noKVMBuild reports whether this binary was built with the opt-in.
func noKVMBuild() bool { return noKVM == "1" }

// hostLacksKVM reports whether a failed open of the jail's /dev/kvm means
// the host kernel has no KVM driver: the jailer's node (misc 10:232) then
// opens with ENODEV. Anything else (a missing node, EACCES on a nodev
// mount or from permissions, a wrong file) is a staging fault the fake
// must keep reporting.
func hostLacksKVM(err error) bool { return errors.Is(err, syscall.ENODEV) }

// openKVM opens the jail's KVM device at InstanceStart, as Firecracker
// does, and holds it while the guest runs. With the opt-in and a host
// without KVM it logs a warning and returns no file and no error (a nil
// *os.File's Close only returns ErrInvalid, so callers may close it).
func (m *machine) openKVM() (*os.File, error) {
	kvm, err := os.OpenFile(m.devKVM, os.O_RDWR, 0)
	if err == nil {
		return kvm, nil
	}
	if m.allowNoKVM && hostLacksKVM(err) {
		m.log.logf(levelWarning, "%s (%s: %s)", noKVMWarning, m.devKVM, osError(err))
		return nil, nil
	}
	return nil, startError("Cannot open the KVM file descriptor %s: %s", m.devKVM, osError(err))
}
