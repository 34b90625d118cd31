package e2e

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestConformance runs one lifecycle against each VMM driver, through the
// real split (root helper + the owner's bangerd, in a test network
// namespace): run, exec, stop/start persistence, surviving a restart of
// the helper and bangerd, delete, and nothing left behind. Firecracker runs
// as an ordinary banger configured with vmm = "firecracker" whose binaries
// are the contract-checking test doubles (test/fakes): the helper stages
// the jail and runs the (fake) jailer, which drops to the owner and execs
// the (fake) firecracker in the chroot; bangerd configures it over the API
// socket with the SDK and reaches the agent over the vsock socket.
func TestConformance(t *testing.T) {
	if os.Geteuid() != 0 || os.Getenv("BANGER_E2E_NETWORK") != "1" {
		t.Skip("set BANGER_E2E_NETWORK=1 and run as root")
	}
	for _, drv := range []string{"qemu", "firecracker"} {
		t.Run(drv, func(t *testing.T) {
			defer group(t)()
			if drv == "firecracker" && os.Getenv("BANGER_E2E_FIRECRACKER") != "1" {
				t.Skip("set BANGER_E2E_FIRECRACKER=1")
			}
			conformance(t, drv)
		})
	}
}

func conformance(t *testing.T, drv string) {
	writeOwnerConfig(t, "vmm = \""+drv+"\"\n")
	var fakes string
	var pins []string
	if drv == "firecracker" {
		// Root pins the binaries it runs; the owner's config cannot.
		fakes = buildFakes(t)
		pins = []string{"--firecracker-bin", filepath.Join(fakes, "firecracker"), "--jailer-bin", filepath.Join(fakes, "jailer")}
	}
	sp := startSplit(t, true, pins...)
	sp.ensureKernel(t)
	jails := filepath.Join(h.root, "hs", "jail", "firecracker")

	if out := sp.mustAs("vm", "run", "--rm", "--", "echo", "ok"); out != "ok\n" {
		t.Fatalf("vm run --rm -- echo ok printed %q", out)
	}
	if drv == "firecracker" {
		// Over Firecracker's vCPU limit: refused before anything exists.
		before := sp.mustAs("vm", "list", "--json")
		r := sp.run("vm", "create", "--name", "big", "--vcpu", "33")
		if r.code == 0 || !strings.Contains(r.stderr, "firecracker runs at most 32 vCPUs, not 33") {
			t.Errorf("vm create --vcpu 33 under firecracker: exit %d, stderr %q", r.code, r.stderr)
		}
		if after := sp.mustAs("vm", "list", "--json"); after != before {
			t.Errorf("a refused create changed the VM list:\n%s\n%s", before, after)
		}
		if ents, _ := os.ReadDir(jails); len(ents) > 0 {
			t.Errorf("a refused create left jails: %v", ents)
		}
	}

	sp.mustAs("vm", "create", "--name", "conf")
	defer sp.run("vm", "delete", "conf")
	v := showVM(t, sp, "conf")
	if v.VMM != drv || v.State != "running" {
		t.Fatalf("vm conf runs under %q in state %q, want %s running", v.VMM, v.State, drv)
	}
	sp.mustAs("vm", "exec", "conf", "--", "sh", "-c", "echo persisted > /root/p")
	if drv == "firecracker" {
		ownerCannotTouchJail(t, sp.owner, filepath.Join(jails, v.ID, "root"), v.PID)
	}
	// A stop the guest cooperates with ends the VMM at once, without
	// waiting out bangerd's shutdown timeout (15 s): Firecracker outlives a
	// guest power-off and exits on a guest reboot, QEMU exits on either.
	stopStart := time.Now()
	sp.mustAs("vm", "stop", "conf")
	if took := time.Since(stopStart); took >= 2*time.Second {
		t.Errorf("vm stop took %s, want under 2 s", took.Round(time.Millisecond))
	} else {
		t.Logf("vm stop took %s", took.Round(time.Millisecond))
	}
	if alive(v.PID) {
		t.Errorf("VMM pid %d still alive after stop", v.PID)
	}
	sp.mustAs("vm", "start", "conf")
	if out := sp.mustAs("vm", "exec", "conf", "--", "cat", "/root/p"); out != "persisted\n" {
		t.Errorf("after stop/start /root/p = %q", out)
	}

	// Restarting the helper and bangerd leaves the VM running; it is
	// adopted again and answers.
	v = showVM(t, sp, "conf")
	sp.restart(t)
	if after := showVM(t, sp, "conf"); after.State != "running" || after.PID != v.PID {
		t.Fatalf("after restarting helper and bangerd: state %q pid %d, want running pid %d", after.State, after.PID, v.PID)
	}
	if out := sp.mustAs("vm", "exec", "conf", "--", "echo", "alive"); out != "alive\n" {
		t.Errorf("exec after restart = %q", out)
	}
	// With no host connected (bangerd down), the guest idles: its agent
	// once took a port with no host for a connection and reopened it in a
	// busy loop, a whole core of a QEMU guest. (Under the fake firecracker
	// v.PID is not the guest's QEMU; the agent is the same.)
	if drv == "qemu" {
		ticks := func() int {
			b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(v.PID), "stat"))
			if err != nil {
				t.Fatalf("read the VMM's CPU time: %v", err)
			}
			st := string(b)
			f := strings.Fields(st[strings.LastIndexByte(st, ')')+1:])
			u, _ := strconv.Atoi(f[11]) // utime, in clock ticks (100 a second)
			k, _ := strconv.Atoi(f[12]) // stime
			return u + k
		}
		sp.stopSupervisor(t)
		before, start := ticks(), time.Now()
		time.Sleep(3 * time.Second)
		used, wall := ticks()-before, time.Since(start)
		if limit := int(wall.Seconds() * 100 / 2); used > limit {
			t.Errorf("with bangerd down the guest used %d CPU ticks in %s (limit %d): its agent spins", used, wall.Round(time.Millisecond), limit)
		}
		sp.startSupervisor(t)
	}
	// Every reconnect after a restart reaches the agent: a port of the
	// agent's used by an earlier bangerd is given back each time.
	for i := range 6 {
		sp.restart(t)
		if r := sp.run("vm", "exec", "conf", "--", "echo", "alive"); r.code != 0 || r.stdout != "alive\n" {
			t.Errorf("exec after restart %d: exit %d, stdout %q, stderr %q", i+2, r.code, r.stdout, r.stderr)
		}
	}

	var decoy *exec.Cmd
	if drv == "firecracker" {
		// The jailer's pid file sits in the chroot, which the VM's uid may
		// write: point it at another process; deleting the VM must not
		// signal that one.
		decoy = exec.Command("sleep", "300")
		if err := decoy.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = decoy.Process.Kill(); _ = decoy.Wait() }()
		pidFile := filepath.Join(jails, v.ID, "root", "firecracker.pid")
		if err := os.WriteFile(pidFile, []byte(strconv.Itoa(decoy.Process.Pid)), 0o644); err != nil {
			t.Fatalf("tamper with the pid file: %v", err)
		}
	}
	sp.mustAs("vm", "delete", "conf")
	if decoy != nil && !alive(decoy.Process.Pid) {
		t.Error("deleting the VM killed the process its tampered pid file named")
	}
	if alive(v.PID) {
		t.Errorf("VMM pid %d still alive after delete", v.PID)
	}
	if _, err := os.Stat(v.Dir); !os.IsNotExist(err) {
		t.Errorf("VM dir %s left after delete (%v)", v.Dir, err)
	}
	if ents, _ := os.ReadDir(jails); len(ents) > 0 {
		t.Errorf("jails left: %v", ents)
	}
	if m := mountsUnder(t, h.root); len(m) > 0 {
		t.Errorf("mounts left under the test root: %v", m)
	}
	if fakes != "" {
		// The sidecar ends once its QEMU has (it sees firecracker's end
		// of their socketpair close): give a loaded host a few seconds.
		pids := procsFrom(fakes)
		for deadline := time.Now().Add(10 * time.Second); len(pids) > 0 && time.Now().Before(deadline); pids = procsFrom(fakes) {
			time.Sleep(100 * time.Millisecond)
		}
		if len(pids) > 0 {
			t.Errorf("fake jailer sidecars left 10 s after delete: %v", pids)
		}
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || !strings.HasPrefix(s[i+1:], " Z")
}

func showVM(t *testing.T, sp *split, name string) vmView {
	t.Helper()
	var v vmView
	if err := json.Unmarshal([]byte(sp.mustAs("vm", "show", name, "--json")), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// buildFakes builds the test doubles into a root-owned directory, as the
// helper insists for binaries it runs as root.
func buildFakes(t *testing.T) string {
	t.Helper()
	fakes := filepath.Join(h.root, "fakes")
	for _, b := range []string{"firecracker", "jailer"} {
		buildFake(t, fakes, b)
	}
	if err := os.Chmod(fakes, 0o755); err != nil {
		t.Fatal(err)
	}
	return fakes
}

// writeOwnerConfig gives the split's owner a config.toml for this test.
func writeOwnerConfig(t *testing.T, body string) {
	t.Helper()
	dir := filepath.Join(h.root, "owner", ".config", "banger")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(p) })
}

func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			out = append(out, fields[4])
		}
	}
	return out
}

func repoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}
