package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRunRmCommand(t *testing.T) {
	t.Parallel()
	defer group(t)()
	r := h.run("vm", "run", "--rm", "--name", "runrm", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
	if r.code != 7 {
		t.Fatalf("exit code = %d, want 7 (stderr %q)", r.code, r.stderr)
	}
	if r.stdout != "out\n" {
		t.Errorf("stdout = %q, want %q", r.stdout, "out\n")
	}
	if !strings.Contains(r.stderr, "err\n") || strings.Contains(r.stderr, "out") {
		t.Errorf("stderr = %q, want err and not out", r.stderr)
	}
	if _, ok := h.vms(t)["runrm"]; ok {
		t.Error("vm runrm still listed after --rm")
	}
	// Other tests run VMs in parallel: every VMM left must belong to a VM
	// that is still listed.
	listed := map[string]bool{}
	for _, v := range h.vms(t) {
		listed[v.ID] = true
	}
	for _, pid := range h.qemuPIDs() {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		id := ""
		for _, arg := range strings.Split(string(cmdline), "\x00") {
			if rest, ok := strings.CutPrefix(arg, "banger-"); ok {
				id, _, _ = strings.Cut(rest, ",")
				break
			}
		}
		if !listed[id] {
			t.Errorf("VMM pid %d (vm id %q) belongs to no listed VM", pid, id)
		}
	}
	matches, _ := filepath.Glob(filepath.Join(h.root, "state", "banger", "vms", "*", "root.ext4"))
	for _, m := range matches {
		if strings.Contains(m, "runrm") {
			t.Errorf("disk left: %s", m)
		}
	}
}

func TestPersistentVM(t *testing.T) {
	t.Parallel()
	defer group(t)()
	h.must(t, "vm", "create", "--name", "persist")
	defer h.run("vm", "delete", "persist")
	if got := strings.TrimSpace(h.must(t, "vm", "exec", "persist", "--", "uname", "-r")); got != h.kernel {
		t.Fatalf("guest uname -r = %q, want %q", got, h.kernel)
	}
	h.must(t, "vm", "exec", "persist", "--", "sh", "-c", "echo kept > /root/marker; echo rootfs > /etc/marker; sync")
	checkStats(t, "persist", true)
	// The root disk is kept the way doctor says storage works here.
	doctor := h.must(t, "doctor")
	wantRoot := map[bool]string{true: "qcow2 overlay", false: "file"}[regexp.MustCompile(`storage\s+overlay:`).MatchString(doctor)]
	if got := h.vms(t)["persist"].RootDisk; got != wantRoot {
		t.Errorf("root disk %q, want %q for the storage doctor reports:\n%s", got, wantRoot, doctor)
	}
	dir := h.vms(t)["persist"].Dir
	h.must(t, "vm", "stop", "persist")
	if st := h.vms(t)["persist"].State; st != "stopped" {
		t.Fatalf("state after stop = %q", st)
	}
	checkStats(t, "persist", false)
	h.must(t, "vm", "start", "persist")
	out := h.must(t, "vm", "exec", "persist", "--", "cat", "/root/marker", "/etc/marker")
	if out != "kept\nrootfs\n" {
		t.Fatalf("files after restart = %q", out)
	}
	if logs := h.must(t, "vm", "logs", "persist"); !strings.Contains(logs, "banger-agent: ready") {
		t.Errorf("vm logs lacks the agent's ready line: %q", logs)
	}
	h.must(t, "vm", "delete", "persist")
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("vm dir %s still exists after delete (%v)", dir, err)
	}
	if _, ok := h.vms(t)["persist"]; ok {
		t.Fatal("vm still listed after delete")
	}
}

// TestDaemonCrashAdopt kills bangerd with SIGKILL while a VM runs: the next
// CLI command restarts it, and it adopts the VM.
func TestDaemonCrashAdopt(t *testing.T) {
	defer group(t)()
	h.must(t, "vm", "create", "--name", "survivor")
	defer h.run("vm", "delete", "survivor")
	vmPID := h.vms(t)["survivor"].PID
	pid := h.daemonPID()
	if pid == 0 {
		t.Fatal("cannot find bangerd")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(100 * time.Millisecond)
	}
	v := h.vms(t)["survivor"] // restarts the daemon
	if v.State != "running" || v.PID != vmPID {
		t.Fatalf("after daemon crash: state %q pid %d, want running pid %d", v.State, v.PID, vmPID)
	}
	if np := h.daemonPID(); np == pid || np == 0 {
		t.Fatalf("daemon pid %d after restart (was %d)", np, pid)
	}
	if out := h.must(t, "vm", "exec", "survivor", "--", "echo", "alive"); out != "alive\n" {
		t.Fatalf("exec after adopt = %q", out)
	}
}

// TestSeveralNames drives two VMs with one command per lifecycle step.
func TestSeveralNames(t *testing.T) {
	t.Parallel()
	defer group(t)()
	h.must(t, "vm", "create", "--no-start", "--name", "multi-a")
	h.must(t, "vm", "create", "--no-start", "--name", "multi-b")
	defer h.run("vm", "delete", "multi-a", "multi-b")
	if out := h.must(t, "vm", "start", "multi-a", "multi-b", "multi-a"); out != "multi-a\nmulti-b\n" {
		t.Fatalf("start output = %q (names deduplicated, in order)", out)
	}
	for _, n := range []string{"multi-a", "multi-b"} {
		if got := h.must(t, "vm", "exec", n, "--", "hostname"); got != n+"\n" {
			t.Errorf("hostname in %s = %q", n, got)
		}
	}
	r := h.run("vm", "kill", "multi-a", "ghost")
	if r.code == 0 || !strings.Contains(r.stderr, "not_found") || r.stdout != "multi-a\n" {
		t.Errorf("kill with one unknown name: code %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	if st := h.vms(t)["multi-a"].State; st != "stopped" {
		t.Errorf("multi-a after kill: %s", st)
	}
	h.must(t, "vm", "delete", "multi-a", "multi-b")
	if vms := h.vms(t); len(vms) > 0 {
		for n := range vms {
			if strings.HasPrefix(n, "multi-") {
				t.Errorf("%s still listed after delete", n)
			}
		}
	}
}

// TestDoctorExplainsVMM: with no root helper (this harness's bangerd runs
// alone), doctor says Firecracker cannot run without one and that QEMU is
// used. What it says of storage, with device-mapper present or not, is
// internal/vm's TestDoctorExplainsStorage, from an injected probe.
func TestDoctorExplainsVMM(t *testing.T) {
	t.Parallel()
	defer group(t)()
	if _, err := os.Stat("/usr/local/bin/firecracker"); err == nil {
		t.Skip("firecracker is installed here")
	}
	out := h.must(t, "doctor")
	for _, want := range []string{"VMM: qemu", "the root helper does not answer", "qemu is used", "auto: qemu, since firecracker cannot be used"} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out)
		}
	}
}
