// Package e2e boots real guests (QEMU; TCG on hosts without usable KVM)
// through the real banger and bangerd binaries. It runs only with
// BANGER_TEST_VM=1 and a Debian kernel package in BANGER_E2E_KERNEL_DEB
// (see `make e2e`, which provides both).
//
// One daemon and one imported kernel serve the whole run; every test
// creates its own VMs, and TestMain checks that nothing is left behind.
package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var h *harness

type harness struct {
	root    string // temp root of HOME and XDG dirs
	bin     string // dir of banger, bangerd, banger-agent
	env     []string
	kernel  string // imported kernel version
	timesMu sync.Mutex
	times   []string
}

func TestMain(m *testing.M) {
	if dirs := os.Getenv(cgexecEnv); dirs != "" {
		cgexec(dirs, os.Args[1:]) // does not return
	}
	if os.Getenv("BANGER_TEST_VM") != "1" {
		fmt.Println("e2e: skipped (set BANGER_TEST_VM=1 and BANGER_E2E_KERNEL_DEB)")
		os.Exit(m.Run())
	}
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	deb := os.Getenv("BANGER_E2E_KERNEL_DEB")
	if deb == "" {
		return 1, fmt.Errorf("BANGER_E2E_KERNEL_DEB is not set")
	}
	wd, _ := os.Getwd()
	bin := filepath.Join(wd, "..", "..", "bin")
	for _, b := range []string{"banger", "bangerd", "banger-agent"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			return 1, fmt.Errorf("missing %s: run make build first", b)
		}
	}
	// A short root: VM sockets live under it and sun_path is 108 bytes.
	root, err := os.MkdirTemp("/tmp", "bge-")
	if err != nil {
		return 1, err
	}
	h = &harness{root: root, bin: bin}
	h.env = append(os.Environ(),
		"HOME="+filepath.Join(root, "home"),
		"XDG_CONFIG_HOME="+filepath.Join(root, "config"),
		"XDG_STATE_HOME="+filepath.Join(root, "state"),
		"XDG_CACHE_HOME="+filepath.Join(root, "cache"),
		"XDG_RUNTIME_DIR="+filepath.Join(root, "run"),
		"NO_COLOR=1",
		// Hermetic: a root helper running on this host for another owner
		// (banger's quick start leaves one) is not this daemon's.
		"BANGER_HELPER_SOCKET="+filepath.Join(root, "no-helper.sock"),
	)
	_ = os.MkdirAll(filepath.Join(root, "home"), 0o700)
	defer h.teardown()

	t0 := time.Now()
	out, err := h.cmd("kernel", "import-deb", deb, "--name", "default")
	if err != nil {
		return 1, fmt.Errorf("import kernel: %w\n%s", err, out)
	}
	fields := strings.Fields(out)
	if len(fields) < 2 {
		return 1, fmt.Errorf("import kernel: unexpected output %q", out)
	}
	h.kernel = fields[1]
	h.record("provision (daemon start + kernel import)", time.Since(t0))

	code := m.Run()
	if err := h.leakCheck(); err != nil {
		return 1, err
	}
	fmt.Println("e2e group timings:")
	for _, t := range h.times {
		fmt.Println("  " + t)
	}
	return code, nil
}

func (h *harness) record(what string, d time.Duration) {
	h.timesMu.Lock()
	defer h.timesMu.Unlock()
	h.times = append(h.times, fmt.Sprintf("%-45s %6.1fs", what, d.Seconds()))
}

// group skips t unless e2e tests are enabled, and times it for the summary.
func group(t *testing.T) func() {
	t.Helper()
	if h == nil {
		t.Skip("e2e test: set BANGER_TEST_VM=1 (make e2e)")
	}
	start := time.Now()
	return func() { h.record(t.Name(), time.Since(start)) }
}

// result is one CLI invocation.
type result struct {
	stdout, stderr string
	code           int
}

func (h *harness) run(args ...string) result {
	d := bangerTimeout(args)
	cmd := timedCommand(d, filepath.Join(h.bin, "banger"), args...)
	cmd.Env = h.env
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	start := time.Now()
	err := cmd.Run()
	se.WriteString(deadlineNote(start, d, err))
	code := 0
	if err != nil {
		code = -1
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
	}
	return result{so.String(), se.String(), code}
}

// cmdWithStdin is the banger command for args, reading stdin from r.
func (h *harness) cmdWithStdin(r io.Reader, args ...string) *exec.Cmd {
	cmd := timedCommand(bangerTimeout(args), filepath.Join(h.bin, "banger"), args...)
	cmd.Env = h.env
	cmd.Stdin = r
	return cmd
}

func (h *harness) cmd(args ...string) (string, error) {
	r := h.run(args...)
	if r.code != 0 {
		return r.stdout, fmt.Errorf("banger %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r.stdout, nil
}

func (h *harness) must(t *testing.T, args ...string) string {
	t.Helper()
	out, err := h.cmd(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

type vmView struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	State     string `json:"state"`
	PID       int    `json:"pid"`
	Dir       string `json:"dir"`
	MemoryMiB int    `json:"memory_mib"`
	VMM       string `json:"vmm"`
	RootDisk  string `json:"root_disk"`
}

func (h *harness) vms(t *testing.T) map[string]vmView {
	t.Helper()
	var vms []vmView
	if err := json.Unmarshal([]byte(h.must(t, "vm", "list", "--json")), &vms); err != nil {
		t.Fatal(err)
	}
	out := map[string]vmView{}
	for _, v := range vms {
		out[v.Name] = v
	}
	return out
}

// daemonPID finds this run's bangerd (by its environment), or 0.
func (h *harness) daemonPID() int {
	out, err := timedCommand(cmdTimeout, "pgrep", "-f", "-x", filepath.Join(h.bin, "bangerd")).Output()
	if err != nil {
		return 0
	}
	for _, l := range strings.Fields(string(out)) {
		var pid int
		if _, err := fmt.Sscan(l, &pid); err == nil && h.isOurDaemon(pid) {
			return pid
		}
	}
	return 0
}

func (h *harness) isOurDaemon(pid int) bool {
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	return err == nil && bytes.Contains(env, []byte("XDG_RUNTIME_DIR="+filepath.Join(h.root, "run")))
}

// qemuPIDs lists VMM processes whose sockets live under this run's root.
func (h *harness) qemuPIDs() []int {
	out, _ := timedCommand(cmdTimeout, "pgrep", "-f", "qemu-system-x86_64").Output()
	var pids []int
	for _, l := range strings.Fields(string(out)) {
		var pid int
		if _, err := fmt.Sscan(l, &pid); err != nil {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && bytes.Contains(cmdline, []byte(h.root)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// leakCheck runs after every test: no VM records, no VM dirs, no VMM
// processes, no VM runtime dirs.
func (h *harness) leakCheck() error {
	var problems []string
	out, err := h.cmd("vm", "list", "--json")
	if err != nil {
		problems = append(problems, err.Error())
	} else if strings.TrimSpace(out) != "[]" {
		problems = append(problems, "VMs left: "+out)
	}
	if ents, _ := os.ReadDir(filepath.Join(h.root, "state", "banger", "vms")); len(ents) > 0 {
		problems = append(problems, fmt.Sprintf("%d VM dirs left", len(ents)))
	}
	if ents, _ := os.ReadDir(filepath.Join(h.root, "run", "banger", "vm")); len(ents) > 0 {
		problems = append(problems, fmt.Sprintf("%d VM runtime dirs left", len(ents)))
	}
	if pids := h.qemuPIDs(); len(pids) > 0 {
		problems = append(problems, fmt.Sprintf("VMM processes left: %v", pids))
	}
	if len(problems) > 0 {
		return fmt.Errorf("leak check failed: %s", strings.Join(problems, "; "))
	}
	fmt.Println("e2e: leak check passed (no VMs, VM dirs, runtime dirs or VMM processes left)")
	return nil
}

// teardown stops the daemon and everything it may have left, then removes
// the run's root, so a failed run leaves nothing behind either.
func (h *harness) teardown() {
	for _, pid := range h.qemuPIDs() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if pid := h.daemonPID(); pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		for i := 0; i < 50 && syscall.Kill(pid, 0) == nil; i++ {
			time.Sleep(100 * time.Millisecond)
		}
	}
	_ = os.RemoveAll(h.root)
}
