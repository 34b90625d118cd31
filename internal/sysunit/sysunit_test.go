package sysunit

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func typical() Spec {
	return Spec{
		BinDir: "/usr/local/lib/banger", Owner: "dev", OwnerUID: 1000, OwnerGID: 1000, Home: "/home/dev",
		HelperSocket: "/run/banger-root/helper.sock", HelperStateDir: "/var/lib/banger-root",
		InstallMeta: "/etc/banger/install.toml",
	}
}

// TestUnitsGolden pins both unit files as install writes them.
func TestUnitsGolden(t *testing.T) {
	for name, text := range map[string]string{DaemonUnit: Daemon(typical()), HelperUnit: Helper(typical())} {
		p := filepath.Join("testdata", name)
		if *update {
			if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("%v (run with -update)", err)
		}
		if text != string(want) {
			t.Errorf("%s differs from %s:\n%s", name, p, text)
		}
	}
}

// TestUnitsKeepVMsAlive: both units must let VMs outlive a restart.
func TestUnitsKeepVMsAlive(t *testing.T) {
	for name, text := range map[string]string{DaemonUnit: Daemon(typical()), HelperUnit: Helper(typical())} {
		for _, want := range []string{"KillMode=process\n", "RuntimeDirectoryPreserve=yes\n", "NoNewPrivileges=yes\n"} {
			if !strings.Contains(text, want) {
				t.Errorf("%s lacks %q", name, strings.TrimSpace(want))
			}
		}
	}
	if d := Daemon(typical()); !strings.Contains(d, "CapabilityBoundingSet=\n") || !strings.Contains(d, "User=dev\n") {
		t.Error("bangerd.service must run as the owner with an empty capability set")
	}
	// PrivateDevices= would silently drop CAP_MKNOD, which jail staging needs.
	if h := Helper(typical()); strings.Contains(h, "PrivateDevices=yes") || !strings.Contains(h, "CAP_MKNOD") {
		t.Error("bangerd-root.service must keep CAP_MKNOD")
	}
}

func TestSpecValidate(t *testing.T) {
	mod := func(f func(*Spec)) Spec { s := typical(); f(&s); return s }
	bad := map[string]Spec{
		"relative bin dir":   mod(func(s *Spec) { s.BinDir = "bin" }),
		"space in home":      mod(func(s *Spec) { s.Home = "/home/a b" }),
		"newline in socket":  mod(func(s *Spec) { s.HelperSocket = "/run/x\nExecStartPre=/bin/evil" }),
		"specifier in state": mod(func(s *Spec) { s.HelperStateDir = "/var/lib/%h" }),
		"owner with space":   mod(func(s *Spec) { s.Owner = "a b" }),
		"root owner":         mod(func(s *Spec) { s.OwnerUID = 0 }),
	}
	for name, s := range bad {
		if err := s.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := typical().Validate(); err != nil {
		t.Errorf("typical spec: %v", err)
	}
}

var exposureRe = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)

// TestUnitsVerifyAndExposure runs systemd's own checks on the units:
// `systemd-analyze verify` is clean and `systemd-analyze security` scores
// bangerd.service at most 3.0 and the helper at most 6.5.
func TestUnitsVerifyAndExposure(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed")
	}
	dir := t.TempDir()
	s := typical()
	s.BinDir = filepath.Join(dir, "bin")
	if err := os.MkdirAll(s.BinDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"bangerd", "banger-helper"} {
		if err := os.WriteFile(filepath.Join(s.BinDir, b), []byte("#!/bin/true\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	limits := map[string]float64{DaemonUnit: 3.0, HelperUnit: 6.5}
	texts := map[string]string{DaemonUnit: Daemon(s), HelperUnit: Helper(s)}
	var files []string
	for name, text := range texts {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	out, err := exec.Command("systemd-analyze", append([]string{"verify"}, files...)...).CombinedOutput()
	// verify complains about a User= that does not exist on this host;
	// everything else it prints is a real problem.
	var problems []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" && !strings.Contains(l, "User=dev") && !strings.Contains(l, "user dev") {
			problems = append(problems, l)
		}
	}
	if len(problems) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, strings.Join(problems, "\n"))
	}
	for name, limit := range limits {
		out, _ := exec.Command("systemd-analyze", "security", "--offline=true", filepath.Join(dir, name)).CombinedOutput()
		m := exposureRe.FindSubmatch(out)
		if m == nil {
			t.Fatalf("no exposure level for %s in:\n%s", name, out)
		}
		got, _ := strconv.ParseFloat(string(m[1]), 64)
		t.Logf("%s: exposure %.1f (limit %.1f)", name, got, limit)
		if got > limit {
			t.Errorf("%s: exposure %.1f above %.1f", name, got, limit)
		}
	}
}
