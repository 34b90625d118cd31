package sysrun

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/errdefs"
)

// TestPinsCheck: what root is asked to pin for Firecracker is refused
// with a clear error when root would not run it (nothing is executed), and
// so is a uid range someone already has.
func TestPinsCheck(t *testing.T) {
	dir := t.TempDir()
	bin := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\necho ran > "+filepath.Join(dir, "ran")+"\n"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	setuid := bin("jailer-suid", 0o755|os.ModeSetuid)
	setgid := bin("firecracker-sgid", 0o755|os.ModeSetgid)
	link := filepath.Join(dir, "jailer-link")
	if err := os.Symlink(setuid, link); err != nil {
		t.Fatal(err)
	}
	none := Accounts{}
	for _, tc := range []struct {
		name string
		p    Pins
		want string
	}{
		{"setuid jailer", Pins{JailerBin: setuid}, "--jailer-bin " + setuid + ": binary " + setuid + " is setuid or setgid"},
		{"setgid firecracker", Pins{FirecrackerBin: setgid}, "--firecracker-bin " + setgid},
		{"symlinked jailer", Pins{JailerBin: link}, "is a symlink"},
		{"uid range below 65536", Pins{VMMUIDBase: 1000}, "--vmm-uid-base 1000"},
		{"uid range past 2^31", Pins{VMMUIDBase: 1<<31 - 100}, "--vmm-uid-base"},
		{"public subnet", Pins{Subnet: "8.8.8.0/24"}, `--subnet "8.8.8.0/24": not inside a private range`},
		{"unmasked subnet", Pins{Subnet: "192.168.1.1/24"}, "host bits set"},
		{"tiny subnet", Pins{Subnet: "192.168.1.0/30"}, "prefix length from 16 to 29"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.p.FirecrackerBin = or(tc.p.FirecrackerBin, filepath.Join(dir, "no-firecracker"))
			tc.p.JailerBin = or(tc.p.JailerBin, filepath.Join(dir, "no-jailer"))
			err := tc.p.Check(none)
			if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check = %v, want invalid mentioning %q", err, tc.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "ran")); err == nil {
		t.Error("a refused binary was executed")
	}
	// Missing binaries are fine: Firecracker is then off, and doctor says
	// why.
	if err := (Pins{FirecrackerBin: "/nonexistent/fc", JailerBin: "/nonexistent/jailer"}).Check(none); err != nil {
		t.Errorf("missing binaries: %v", err)
	}

	// The uid range must be nobody's.
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	missing := Pins{FirecrackerBin: "/nonexistent/fc", JailerBin: "/nonexistent/jailer"}
	for _, tc := range []struct {
		name string
		acc  Accounts
		want string
	}{
		{"an account", Accounts{Passwd: write("passwd", "root:x:0:0::/root:/bin/sh\nsvc:x:1879113800:100::/:/bin/false\n")}, "id 1879113800 of svc"},
		{"a group", Accounts{Group: write("group", "vmm:x:1879113728:\n")}, "id 1879113728 of vmm"},
		{"a subordinate range", Accounts{SubUID: write("subuid", "alice:1879000000:200000\n")}, "ids 1879000000-1879199999 of alice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := missing.Check(tc.acc)
			if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check = %v, want invalid mentioning %q", err, tc.want)
			}
		})
	}
	free := Accounts{
		Passwd: write("passwd-ok", "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n"),
		SubUID: write("subuid-ok", "alice:100000:65536\n"),
	}
	if err := missing.Check(free); err != nil {
		t.Errorf("a range nobody has: %v", err)
	}
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
