package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/netdev/netdevtest"
)

// TestSupervisorRestartsChildren kills bangerd, then the helper, under
// `banger system run` and checks that each comes back on its own: the VM
// that ran through both crashes is the same boot, and new VMs still get
// their own addresses (which needs both bangerd and the helper's taps).
func TestSupervisorRestartsChildren(t *testing.T) {
	defer group(t)()
	if os.Geteuid() != 0 || os.Getenv("BANGER_E2E_NETWORK") != "1" {
		t.Skip("set BANGER_E2E_NETWORK=1 and run as root (make e2e does)")
	}
	sp := startSplit(t, true)
	sp.ensureKernel(t)
	run := func(timeout time.Duration, args ...string) string {
		t.Helper()
		r := ownerRunWithin(sp, timeout, args...)
		if r.code != 0 {
			t.Fatalf("banger %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
		}
		return r.stdout
	}
	create := func(name string) string {
		t.Helper()
		run(5*time.Minute, "vm", "create", "--name", name, "--image", "minimal")
		t.Cleanup(func() { _ = ownerRunWithin(sp, 2*time.Minute, "vm", "delete", name) })
		return guestAddr(t, run(2*time.Minute, "vm", "exec", name, "--", "ip", "-4", "addr", "show", "eth0"))
	}
	bootID := func(name string) string {
		t.Helper()
		return strings.TrimSpace(run(2*time.Minute, "vm", "exec", name, "--", "cat", "/proc/sys/kernel/random/boot_id"))
	}

	addr1 := create("sup1")
	boot1 := bootID("sup1")
	if boot1 == "" {
		t.Fatal("sup1 has an empty boot_id")
	}

	// bangerd dies; the helper and the VM do not notice.
	sp.killChild(t, "bangerd")
	if got := bootID("sup1"); got != boot1 {
		t.Fatalf("sup1 boot_id after bangerd's restart = %q, want %q (the VM was restarted)", got, boot1)
	}
	addr2 := create("sup2")
	if addr2 == addr1 {
		t.Fatalf("sup2 got sup1's address %s after bangerd's restart", addr1)
	}

	// The helper dies; bangerd keeps running and uses the new one.
	sp.killChild(t, "banger-helper")
	if got := bootID("sup1"); got != boot1 {
		t.Fatalf("sup1 boot_id after the helper's restart = %q, want %q", got, boot1)
	}
	run(2*time.Minute, "vm", "delete", "sup2")
	addr3 := create("sup3")
	if addr3 == addr1 {
		t.Fatalf("sup3 got sup1's address %s after the helper's restart", addr1)
	}

	// Deleting every VM after the two crashes leaves no tap behind: the
	// restarted helper still knows the taps made before it crashed.
	run(2*time.Minute, "vm", "delete", "sup1")
	run(2*time.Minute, "vm", "delete", "sup3")
	leaks, err := netdevtest.LeaksIn(sp.ns.path)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leaks {
		if strings.Contains(l, "tap") {
			t.Errorf("left after deleting every VM: %s", l)
		}
	}
	// One of each child runs: a restart replaced the dead one and left no
	// second copy.
	for _, name := range []string{"bangerd", "banger-helper"} {
		if pids := sp.childPIDs(name); len(pids) != 1 {
			t.Errorf("%s processes after the restarts = %v, want exactly one", name, pids)
		}
	}
}

var inetRE = regexp.MustCompile(`inet (\d+\.\d+\.\d+\.\d+)/`)

// guestAddr is the IPv4 address in `ip -4 addr show` output.
func guestAddr(t *testing.T, out string) string {
	t.Helper()
	m := inetRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no IPv4 address on the guest's eth0: %q", out)
	}
	return m[1]
}

// ownerRunWithin runs the CLI as sp's owner, killing it after timeout so
// that one hang fails this test rather than the whole run.
func ownerRunWithin(sp *split, timeout time.Duration, args ...string) result {
	nsName := ""
	if sp.inNetns {
		nsName = sp.ns.name
	}
	cmd := ownerCmd(nsName, sp.owner, args...)
	var so, se strings.Builder
	cmd.Stdout, cmd.Stderr = &so, &se
	if err := cmd.Start(); err != nil {
		return result{"", err.Error(), -1}
	}
	timer := time.AfterFunc(timeout, func() { _ = cmd.Process.Kill() })
	err := cmd.Wait()
	if !timer.Stop() {
		return result{so.String(), se.String() + fmt.Sprintf("\n(killed after %s)", timeout), -1}
	}
	if err != nil {
		code := -1
		if cmd.ProcessState != nil {
			code = cmd.ProcessState.ExitCode()
		}
		return result{so.String(), se.String(), code}
	}
	return result{so.String(), se.String(), 0}
}

// childPIDs lists the processes running binary name from the owner's copy
// of the binaries whose parent is this split's supervisor.
func (sp *split) childPIDs(name string) []int {
	var pids []int
	for _, pid := range procsFrom(ownerBin) {
		exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
		if err != nil || filepath.Base(exe) != name {
			continue
		}
		if ppid(pid) == sp.sup.Process.Pid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// ppid is pid's parent, or 0.
func ppid(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name may hold spaces: the fields we want follow its ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

// killChild SIGKILLs the supervisor's child running binary bin and waits
// until the supervisor logs that it restarted it under a new pid.
func (sp *split) killChild(t *testing.T, bin string) {
	t.Helper()
	logName := strings.TrimPrefix(bin, "banger-")
	pids := sp.childPIDs(bin)
	if len(pids) != 1 {
		t.Fatalf("%s processes under system run = %v, want exactly one", bin, pids)
	}
	old := pids[0]
	marker := regexp.MustCompile(regexp.QuoteMeta(logName) + ` restarted \(pid (\d+);`)
	before := len(marker.FindAllString(sp.supLog.String(), -1))
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatalf("kill %s (pid %d): %v", bin, old, err)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		all := marker.FindAllStringSubmatch(sp.supLog.String(), -1)
		if len(all) > before {
			newPID, _ := strconv.Atoi(all[len(all)-1][1])
			if newPID == old {
				t.Fatalf("%s restarted under its old pid %d", bin, old)
			}
			if got := sp.childPIDs(bin); len(got) != 1 || got[0] != newPID {
				t.Fatalf("%s processes after its restart = %v, want [%d] as logged", bin, got, newPID)
			}
			t.Logf("%s (pid %d) killed; restarted as pid %d", bin, old, newPID)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q restart logged within 90s of killing pid %d", logName, old)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
