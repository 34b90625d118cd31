package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/netdev/netdevtest"

	"golang.org/x/sys/unix"
)

// TestSystemdInstall installs banger as its two systemd services inside a
// Debian container booted with systemd as PID 1 (systemd-nspawn -b, a
// private network, /dev/kvm bound in, device policies enforced), uses it
// as the owner, restarts both services under a running VM, and uninstalls.
func TestSystemdInstall(t *testing.T) {
	defer group(t)()
	if os.Geteuid() != 0 || os.Getenv("BANGER_E2E_SYSTEMD") != "1" {
		t.Skip("set BANGER_E2E_SYSTEMD=1 and run as root (needs systemd-nspawn and the Debian mirror once)")
	}
	if _, err := exec.LookPath("systemd-nspawn"); err != nil {
		t.Fatal("systemd-nspawn missing: scripts/deps.sh installs systemd-container")
	}
	t0 := time.Now()
	rootfs := nspawnRootfs(t)
	t.Logf("container rootfs ready in %s", time.Since(t0).Round(time.Second))

	kdir := t.TempDir()
	if err := os.Chmod(kdir, 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, os.Getenv("BANGER_E2E_KERNEL_DEB"), filepath.Join(kdir, "kernel.deb"), 0o644)
	// The Firecracker leg runs the test doubles, which root pins at
	// install like real binaries, and the owner's config that picks them.
	fakes := buildFakes(t)
	fcConfig := t.TempDir()
	if err := os.Chmod(fcConfig, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(fcConfig, "config.toml"), []byte("vmm = \"firecracker\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := bootContainer(t, rootfs, "--bind-ro="+h.bin+":/opt/banger/bin", "--bind-ro="+kdir+":/opt/banger/kernel",
		"--bind-ro="+fakes+":/opt/banger/fakes", "--bind-ro="+fcConfig+":/opt/banger/fcconfig",
		// Loop devices carry a Firecracker VM's drives into its jail;
		// the container's /dev has only the control node.
		"--bind=/dev/loop-control")

	c.must(t, "/opt/banger/bin/banger", "system", "install", "--owner", "dev")
	for _, u := range []string{"bangerd-root.service", "bangerd.service"} {
		if out := c.run("systemctl", "is-active", u); strings.TrimSpace(out.stdout) != "active" {
			t.Fatalf("%s is %q after install", u, out.stdout)
		}
	}
	if st := c.must(t, "banger", "system", "status"); strings.Count(st, "answers") != 2 || !strings.Contains(st, "launch_firecracker") {
		t.Errorf("system status:\n%s", st)
	}
	// Installing again refreshes and changes nothing else.
	c.must(t, "/opt/banger/bin/banger", "system", "install", "--owner", "dev")

	c.mustAs(t, "dev", "banger", "kernel", "import-deb", "/opt/banger/kernel/kernel.deb", "--name", "default")
	if out := c.mustAs(t, "dev", "banger", "vm", "run", "--rm", "--", "echo", "ok"); out != "ok\n" {
		t.Fatalf("vm run as dev printed %q", out)
	}
	// bangerd.service is systemd's to stop: the CLI's daemon stop refuses
	// and says how, and the daemon keeps answering.
	if r := c.runAs("dev", "banger", "daemon", "stop"); r.code == 0 || !strings.Contains(r.stderr, "bangerd runs as bangerd.service") {
		t.Errorf("daemon stop under systemd: exit %d, stderr %q", r.code, r.stderr)
	}
	if st := c.mustAs(t, "dev", "banger", "daemon", "status"); !strings.Contains(st, "managed: systemd") {
		t.Errorf("daemon status under systemd: %q", st)
	}
	c.mustAs(t, "dev", "banger", "vm", "create", "--name", "keep")
	boot := c.mustAs(t, "dev", "banger", "vm", "exec", "keep", "--", "cat", "/proc/sys/kernel/random/boot_id")
	c.must(t, "systemctl", "restart", "bangerd-root.service", "bangerd.service")
	var state string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		r := c.runAs("dev", "banger", "vm", "show", "keep", "--json")
		var v vmView
		if r.code == 0 && json.Unmarshal([]byte(r.stdout), &v) == nil {
			if state = v.State; state == "running" {
				break
			}
		}
	}
	if state != "running" {
		t.Fatalf("after restarting both services vm keep is %q", state)
	}
	if again := c.mustAs(t, "dev", "banger", "vm", "exec", "keep", "--", "cat", "/proc/sys/kernel/random/boot_id"); again != boot {
		t.Errorf("guest boot id changed across the restart: %q -> %q", boot, again)
	}

	// banger's own restart does the same, and waits for both sockets.
	c.must(t, "banger", "system", "restart")
	if again := c.mustAs(t, "dev", "banger", "vm", "exec", "keep", "--", "cat", "/proc/sys/kernel/random/boot_id"); again != boot {
		t.Errorf("guest boot id changed across banger system restart: %q -> %q", boot, again)
	}
	units := c.must(t, "banger", "system", "install", "--owner", "dev", "--print-units")
	for _, want := range []string{"# bangerd-root.service", "# bangerd.service", "User=dev", "KillMode=process"} {
		if !strings.Contains(units, want) {
			t.Errorf("--print-units lacks %q", want)
		}
	}

	systemdFirecracker(t, c)

	r := c.run("banger", "system", "uninstall", "--purge")
	if r.code == 0 || !strings.Contains(r.stderr, "keep") || !strings.Contains(r.stderr, "--force") {
		t.Errorf("uninstall with a running VM: exit %d, stderr %q; want a refusal naming keep and --force", r.code, r.stderr)
	}
	c.must(t, "banger", "system", "uninstall", "--purge", "--force")
	for _, p := range []string{"/etc/systemd/system/bangerd.service", "/etc/systemd/system/bangerd-root.service",
		"/etc/banger/install.toml", "/run/banger", "/run/banger-root", "/var/lib/banger", "/var/lib/banger-root",
		"/var/cache/banger", "/usr/local/lib/banger", "/usr/local/bin/banger"} {
		if r := c.run("test", "-e", p); r.code == 0 {
			t.Errorf("%s left after uninstall --purge", p)
		}
	}
	if r := c.run("pgrep", "-a", "-f", "banger|qemu"); strings.TrimSpace(r.stdout) != "" {
		t.Errorf("processes left after uninstall:\n%s", r.stdout)
	}
	// The test's own binds live under /opt/banger; anything else naming
	// banger is a leftover.
	for _, l := range strings.Split(c.must(t, "cat", "/proc/self/mountinfo"), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.Contains(f[4], "banger") && !strings.HasPrefix(f[4], "/opt/banger/") {
			t.Errorf("mount left after uninstall: %s", l)
		}
	}
	leaks, err := netdevtest.LeaksIn("/proc/" + strconv.Itoa(c.leader) + "/ns/net")
	if err != nil {
		t.Error(err)
	}
	if len(leaks) > 0 {
		t.Errorf("network left in the container after uninstall: %v", leaks)
		t.Logf("the services' journal:\n%s", c.run("journalctl", "-u", "bangerd.service", "-u", "bangerd-root.service", "-n", "80", "--no-pager").stdout)
	}
	if r := c.run("nft", "list", "tables"); strings.Contains(r.stdout, "banger") {
		t.Errorf("nftables tables left: %s", r.stdout)
	}
	if home := c.run("test", "-d", "/home/dev/.config/banger"); home.code != 0 {
		t.Error("uninstall removed the owner's config directory")
	}
}

// systemdFirecracker runs the Firecracker path under the production units:
// root pins the (fake) firecracker and jailer at install, the owner's
// config picks the VMM, and the jailer and firecracker run as children of
// bangerd-root.service, under its syscall filter, device policy and mount
// namespace, while bangerd.service (a mount namespace of its own) reaches
// the VM only through the helper. Before banger's units allowed seccomp
// and before drives stopped crossing mount namespaces, this failed: the
// fake firecracker dies when it cannot install its seccomp filter, as the
// real one does.
func systemdFirecracker(t *testing.T, c *container) {
	t.Helper()
	c.must(t, "/opt/banger/bin/banger", "system", "install", "--owner", "dev",
		"--firecracker-bin", "/opt/banger/fakes/firecracker", "--jailer-bin", "/opt/banger/fakes/jailer")
	c.mustAs(t, "dev", "cp", "/opt/banger/fcconfig/config.toml", "/home/dev/.config/banger/config.toml")
	c.must(t, "banger", "system", "restart")
	if r := c.runAs("dev", "banger", "vm", "create", "--name", "fc"); r.code != 0 {
		t.Logf("helper's journal:\n%s", c.run("journalctl", "-u", "bangerd-root.service", "-n", "60", "--no-pager").stdout)
		var failed vmView
		if json.Unmarshal([]byte(c.runAs("dev", "banger", "vm", "show", "fc", "--json").stdout), &failed) == nil && failed.Dir != "" {
			t.Logf("fc's console:\n%s", c.run("tail", "-n", "40", filepath.Join(failed.Dir, "console.log")).stdout)
		}
		t.Fatalf("firecracker: vm create as dev: exit %d: %s", r.code, r.stderr)
	}
	if out := c.mustAs(t, "dev", "banger", "vm", "run", "--rm", "--", "echo", "ok"); out != "ok\n" {
		t.Fatalf("firecracker: vm run as dev printed %q", out)
	}
	var v vmView
	if err := json.Unmarshal([]byte(c.mustAs(t, "dev", "banger", "vm", "show", "fc", "--json")), &v); err != nil {
		t.Fatal(err)
	}
	if v.VMM != "firecracker" || v.State != "running" {
		t.Fatalf("vm fc runs under %q in state %q, want firecracker running", v.VMM, v.State)
	}
	// Firecracker runs as a uid of the VM's own, and the owner reaches
	// nothing of its jail.
	uid := strings.TrimSpace(c.must(t, "ps", "-o", "uid=", "-p", strconv.Itoa(v.PID)))
	if n, err := strconv.Atoi(uid); err != nil || n < 65536 {
		t.Errorf("firecracker (pid %d) runs as uid %q, want one of the VMM range", v.PID, uid)
	}
	if r := c.runAs("dev", "ls", "/var/lib/banger-root/jail"); r.code == 0 {
		t.Errorf("the owner lists the jail base: %s", r.stdout)
	}
	boot := c.mustAs(t, "dev", "banger", "vm", "exec", "fc", "--", "cat", "/proc/sys/kernel/random/boot_id")
	c.must(t, "systemctl", "restart", "bangerd-root.service", "bangerd.service")
	var again, lastErr string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		r := c.runAs("dev", "banger", "vm", "exec", "fc", "--", "cat", "/proc/sys/kernel/random/boot_id")
		if r.code == 0 {
			again = r.stdout
			break
		}
		lastErr = r.stderr
	}
	if again != boot {
		t.Logf("bangerd's log:\n%s", c.run("tail", "-n", "30", "/var/lib/banger/bangerd.log").stdout)
		t.Errorf("firecracker guest after restarting both services: boot id %q, want %q (last error %q)", again, boot, lastErr)
	}
	start := time.Now()
	c.mustAs(t, "dev", "banger", "vm", "stop", "fc")
	t.Logf("firecracker: vm stop took %s", time.Since(start).Round(time.Millisecond))
	c.mustAs(t, "dev", "banger", "vm", "delete", "fc")
	if out := c.must(t, "ls", "-A", "/var/lib/banger-root/jail/firecracker"); strings.TrimSpace(out) != "" {
		t.Errorf("jails left after delete: %s", out)
	}
}

// nspawnPackages is the container's package set; the rootfs cache is keyed
// by it.
var nspawnPackages = []string{"systemd", "systemd-sysv", "dbus", "libpam-systemd", "iproute2", "nftables", "procps",
	"kmod", "qemu-system-x86", "busybox-static", "e2fsprogs"}

// nspawnRootfs debootstraps (once, cached outside the repo by its package
// set) a bookworm root with systemd and what banger runs inside, and a
// user "dev".
func nspawnRootfs(t *testing.T) string {
	t.Helper()
	cache := os.Getenv("BANGER_E2E_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "banger-e2e")
	}
	sum := sha256.Sum256([]byte("bookworm minbase v1 " + strings.Join(nspawnPackages, ",")))
	dir := filepath.Join(cache, "nspawn", hex.EncodeToString(sum[:])[:16])
	root := filepath.Join(dir, "rootfs")
	if _, err := os.Stat(filepath.Join(dir, "complete")); err == nil {
		return root
	}
	tmp := root + ".tmp"
	_ = os.RemoveAll(tmp)
	_ = os.RemoveAll(root)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	steps := [][]string{
		{"debootstrap", "--variant=minbase", "--include=" + strings.Join(nspawnPackages, ","), "bookworm", tmp},
		{"chroot", tmp, "useradd", "-m", "-s", "/bin/bash", "-u", "1000", "dev"},
		{"chroot", tmp, "apt-get", "clean"},
	}
	for _, s := range steps {
		if out, err := timedCommand(buildTimeout, s[0], s[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", s, err, tail(string(out), 2000))
		}
	}
	// Every boot gets a fresh machine id (the overlay is volatile).
	if err := os.WriteFile(filepath.Join(tmp, "etc", "machine-id"), nil, 0o444); err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(filepath.Join(tmp, "etc", "hostname"))
	_ = os.Remove(filepath.Join(tmp, "var", "lib", "dbus", "machine-id"))
	if err := os.Symlink("/etc/machine-id", filepath.Join(tmp, "var", "lib", "dbus", "machine-id")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, root); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "complete"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// container is a booted systemd-nspawn container.
type container struct {
	name   string
	rootfs string
	cmd    *exec.Cmd
	leader int // the container's PID 1 (systemd) in the host's pid namespace
	cg     []string
	log    syncLog
}

// cgroupRoots are the hierarchies nspawn creates its own cgroups in.
func cgroupRoots() []string {
	var st syscall.Statfs_t
	if syscall.Statfs("/sys/fs/cgroup", &st) == nil && st.Type == 0x63677270 { // pure cgroup2
		return []string{"/sys/fs/cgroup"}
	}
	var out []string
	for _, h := range []string{"systemd", "unified"} {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", h, "cgroup.procs")); err == nil {
			out = append(out, filepath.Join("/sys/fs/cgroup", h))
		}
	}
	return out
}

// bootContainer boots rootfs (volatile: the cache is never written) with
// systemd as PID 1 and waits until systemd reports the system running.
// nspawn runs in cgroups of its own, so that whatever it creates there is
// removed with them, and is stopped (and everything cleaned) at the end.
func bootContainer(t *testing.T, rootfs string, extra ...string) *container {
	t.Helper()
	c := &container{name: fmt.Sprintf("banger-e2e-%d", os.Getpid()), rootfs: rootfs}
	for _, r := range cgroupRoots() {
		d := filepath.Join(r, "banger-nspawn-"+c.name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		c.cg = append(c.cg, d)
	}
	args := []string{"systemd-nspawn", "--boot", "--directory=" + rootfs, "--machine=" + c.name,
		"--register=no", "--keep-unit", "--private-network", "--console=read-only", "--link-journal=no", "--quiet",
		"--volatile=overlay", "--system-call-filter=bpf"}
	if _, err := os.Stat("/dev/kvm"); err == nil {
		args = append(args, "--bind=/dev/kvm")
	} else {
		// systemd resolves DeviceAllow=/dev/kvm by the node's numbers and
		// drops the rule when there is no node, which would forbid the
		// jailer's mknod of it. On a host without KVM the container gets
		// the node with no driver behind it (opening it fails, as it
		// would on the host).
		node := filepath.Join(t.TempDir(), "kvm")
		if err := unix.Mknod(node, unix.S_IFCHR|0o600, int(unix.Mkdev(10, 232))); err != nil {
			t.Fatal(err)
		}
		t.Logf("host has no /dev/kvm: the container gets a driverless node for it, so the helper unit's DeviceAllow=/dev/kvm resolves")
		args = append(args, "--bind="+node+":/dev/kvm")
	}
	// The jailer also makes /dev/userfaultfd in each jail when the kernel
	// has it, which the unit allows by path, as the host's devtmpfs has it;
	// nspawn's /dev does not.
	if _, err := os.Stat("/dev/userfaultfd"); err == nil {
		args = append(args, "--bind=/dev/userfaultfd")
	}
	args = append(args, extra...)
	c.cmd = exec.Command(os.Args[0], args...)
	// The unified hierarchy and bpf() let systemd inside enforce
	// DevicePolicy=, which the units rely on.
	c.cmd.Env = append(os.Environ(), cgexecEnv+"="+strings.Join(c.cg, ":"), "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1")
	c.cmd.Stdout, c.cmd.Stderr = &c.log, &c.log
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	t.Cleanup(func() { c.stop(t, done) })

	deadline := time.Now().Add(60 * time.Second)
	for c.leader == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("container did not start:\n%s", c.log.String())
		}
		select {
		case <-done:
			t.Fatalf("systemd-nspawn exited:\n%s", c.log.String())
		case <-time.After(50 * time.Millisecond):
		}
		kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", c.cmd.Process.Pid, c.cmd.Process.Pid))
		for _, k := range strings.Fields(string(kids)) {
			if comm, _ := os.ReadFile("/proc/" + k + "/comm"); strings.TrimSpace(string(comm)) == "systemd" {
				c.leader, _ = strconv.Atoi(k)
			}
		}
	}
	// systemctl answers only once systemd's bus is up.
	state := ""
	for state != "running" && state != "degraded" {
		if time.Now().After(deadline) {
			t.Fatalf("container systemd not up (state %q):\n%s", state, c.log.String())
		}
		state = strings.TrimSpace(c.run("systemctl", "is-system-running", "--wait").stdout)
		if state == "" {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if state != "running" {
		t.Logf("container state %q; failed units:\n%s", state, c.run("systemctl", "--failed", "--no-legend").stdout)
	}
	return c
}

// stop halts the container (SIGTERM makes nspawn halt it cleanly), kills
// what is left if it does not, and removes nspawn's leftovers.
func (c *container) stop(t *testing.T, done <-chan struct{}) {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Errorf("systemd-nspawn did not stop on SIGTERM; killing the container")
		for _, d := range c.cg {
			_ = os.WriteFile(filepath.Join(d, "cgroup.kill"), []byte("1"), 0o644)
		}
		_ = c.cmd.Process.Kill()
		<-done
	}
	for _, d := range c.cg {
		var dirs []string
		_ = filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("remove cgroup %s: %v", dirs[i], err)
			}
		}
	}
	// nspawn cannot clean these when /run is not a tmpfs.
	for _, p := range []string{"/run/systemd/nspawn/propagate/" + c.name, "/run/systemd/nspawn/locks/machine-" + c.name} {
		_ = os.RemoveAll(p)
	}
	for _, p := range []string{"/run/systemd/nspawn/propagate", "/run/systemd/nspawn/locks", "/run/systemd/nspawn"} {
		_ = os.Remove(p) // only when empty
	}
	// Leak check: nothing of the container is left on the host.
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mi), "\n") {
		if strings.Contains(l, c.rootfs) || strings.Contains(l, "nspawn-volatile") {
			t.Errorf("container mount left on the host: %s", l)
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), "--machine="+c.name) {
			t.Errorf("container process left on the host: %s", strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	if t.Failed() {
		t.Logf("container console:\n%s", tail(c.log.String(), 8000))
	}
}

// run runs argv inside the container as root.
func (c *container) run(argv ...string) result {
	return c.exec(append([]string{"env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, argv...))
}

// runAs runs argv inside the container as user, with the user's login
// environment.
func (c *container) runAs(user string, argv ...string) result {
	return c.exec(append([]string{"setpriv", "--reuid=" + user, "--regid=" + user, "--init-groups", "--reset-env"}, argv...))
}

func (c *container) exec(argv []string) result {
	d := cmdTimeout
	if slices.Contains(argv, "image") || slices.Contains(argv, "kernel") {
		d = buildTimeout
	}
	cmd := timedCommand(d, "nsenter", append([]string{"-t", strconv.Itoa(c.leader), "-a"}, argv...)...)
	var so, se strings.Builder
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

func (c *container) must(t *testing.T, argv ...string) string {
	t.Helper()
	r := c.run(argv...)
	if r.code != 0 {
		t.Fatalf("in the container: %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(argv, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

func (c *container) mustAs(t *testing.T, user string, argv ...string) string {
	t.Helper()
	r := c.runAs(user, argv...)
	if r.code != 0 {
		t.Fatalf("in the container as %s: %s: exit %d\nstdout: %s\nstderr: %s", user, strings.Join(argv, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// cgexecEnv makes the test binary a tiny launcher: it moves itself into
// the cgroups listed (colon-separated) and execs its arguments.
const cgexecEnv = "BANGER_E2E_CGEXEC"

func cgexec(dirs string, argv []string) {
	for _, d := range strings.Split(dirs, ":") {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "cgexec:", err)
			os.Exit(125)
		}
	}
	bin, err := exec.LookPath(argv[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "cgexec:", err)
		os.Exit(127)
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, cgexecEnv+"=") {
			env = append(env, kv)
		}
	}
	err = syscall.Exec(bin, argv, env)
	fmt.Fprintln(os.Stderr, "cgexec:", err)
	os.Exit(126)
}
