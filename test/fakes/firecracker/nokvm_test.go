package main

import (
	"bytes"
	"os"
	"strings"
	"syscall"
	"testing"
)

func TestHostLacksKVM(t *testing.T) {
	for _, tc := range []struct {
		errno syscall.Errno
		want  bool
	}{
		{syscall.ENODEV, true},
		{syscall.EACCES, false},
		{syscall.EPERM, false},
		{syscall.ENOENT, false},
		{syscall.ENXIO, false},
		{syscall.EISDIR, false},
	} {
		err := &os.PathError{Op: "open", Path: "/dev/kvm", Err: tc.errno}
		if got := hostLacksKVM(err); got != tc.want {
			t.Errorf("hostLacksKVM(%v) = %v, want %v", tc.errno, got, tc.want)
		}
	}
}

// A test binary is a plain build: the opt-in is off unless the linker set it.
func TestNoKVMOffByDefault(t *testing.T) {
	if noKVMBuild() || newMachine("x").allowNoKVM {
		t.Fatalf("plain build has the no-KVM opt-in on (noKVM=%q)", noKVM)
	}
}

// With the opt-in, a /dev/kvm that fails for any reason but a missing KVM
// driver still fails InstanceStart, and nothing is booted or logged as TCG.
func TestNoKVMOptInKeepsOtherFailures(t *testing.T) {
	cases := []struct {
		name, want string
		kvm        func(e *testEnv) string
	}{
		{"missing node", "No such file or directory (os error 2)", func(e *testEnv) string { return e.path("no-kvm") }},
		{"a directory", "Is a directory (os error 21)", func(e *testEnv) string { return e.dir }},
	}
	if os.Geteuid() != 0 {
		cases = append(cases, struct {
			name, want string
			kvm        func(e *testEnv) string
		}{"no permission", "Permission denied (os error 13)", func(e *testEnv) string {
			p := e.file("kvm-0000", nil)
			if err := os.Chmod(p, 0); err != nil {
				t.Fatal(err)
			}
			return p
		}})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			var log bytes.Buffer
			e.m.log.configure(&log, levelInfo, false, false)
			e.m.allowNoKVM = true
			e.configure()
			e.m.devKVM = tc.kvm(e)
			code, body := e.do("PUT", "/actions", `{"action_type":"InstanceStart"}`)
			if code != 400 || !strings.Contains(faultOf(t, body), "Cannot open the KVM file descriptor "+e.m.devKVM+": "+tc.want) {
				t.Fatalf("InstanceStart = %d %s", code, body)
			}
			if len(e.backend.boots) != 0 || e.m.started {
				t.Fatal("the guest was booted")
			}
			if strings.Contains(log.String(), "host has no KVM") {
				t.Fatalf("warned of a missing KVM for %s:\n%s", tc.name, log.String())
			}
		})
	}
}

// With the opt-in, a KVM device that opens is still opened and held.
func TestNoKVMOptInHoldsKVM(t *testing.T) {
	e := newTestEnv(t)
	var log bytes.Buffer
	e.m.log.configure(&log, levelInfo, false, false)
	e.m.allowNoKVM = true
	e.configure()
	e.start()
	if e.m.kvm == nil || e.m.kvm.Name() != e.m.devKVM {
		t.Fatalf("KVM device not held after InstanceStart: %v", e.m.kvm)
	}
	if strings.Contains(log.String(), "host has no KVM") {
		t.Fatalf("warned of a missing KVM although it opened:\n%s", log.String())
	}
}
