package main

import (
	"errors"
	"fmt"
	"syscall"
	"testing"
)

func TestMiscMinor(t *testing.T) {
	const misc = "234 btrfs-control\n257 userfaultfd\n200 tun\n 59 padded\n"
	for _, tc := range []struct {
		text, name string
		want       uint32
		ok         bool
	}{
		{misc, "userfaultfd", 257, true},
		{misc, "tun", 200, true},
		{misc, "vsock", 0, false},
		{misc, "padded", 0, false}, // leading padding: the jailer's split misses it
		{"x userfaultfd\n", "userfaultfd", 0, false},
		{"", "userfaultfd", 0, false},
	} {
		got, ok := miscMinor(tc.text, tc.name)
		if got != tc.want || ok != tc.ok {
			t.Errorf("miscMinor(%q, %q) = %d, %v; want %d, %v", tc.text, tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

func TestJailDevices(t *testing.T) {
	minor := uint32(257)
	for _, tc := range []struct {
		uffd *uint32
		want string
	}{
		{nil, "[/dev/net/tun 10:200 /dev/kvm 10:232 /dev/urandom 1:9 optional]"},
		{&minor, "[/dev/net/tun 10:200 /dev/kvm 10:232 /dev/urandom 1:9 optional /dev/userfaultfd 10:257]"},
	} {
		var got []string
		for _, d := range jailDevices(tc.uffd) {
			s := fmt.Sprintf("%s %d:%d", d.path, d.major, d.minor)
			if d.optional {
				s += " optional"
			}
			got = append(got, s)
		}
		if fmt.Sprint(got) != tc.want {
			t.Errorf("jailDevices(%v) = %v; want %s", tc.uffd, got, tc.want)
		}
	}
}

func TestRustErr(t *testing.T) {
	err := fmt.Errorf("create /dev/kvm via mknod inside the jail: %w", rustErr(syscall.EEXIST))
	if err.Error() != "create /dev/kvm via mknod inside the jail: File exists (os error 17)" {
		t.Fatalf("message = %q", err)
	}
	if !errors.Is(err, syscall.EEXIST) {
		t.Fatal("the errno is not kept")
	}
}
