package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/test/fakebuild"
)

// The tests in this file run the fake jailer for real: they need root
// (BANGER_TEST_ROOT=1) and a filesystem that allows device nodes.

const nobody = 65534

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 || os.Getenv("BANGER_TEST_ROOT") != "1" {
		t.Skip("needs root and BANGER_TEST_ROOT=1")
	}
}

var (
	buildOnce sync.Once
	buildDir  string
	buildNote string // why the fake firecracker is not the strict build
	buildErr  error
)

// fakes builds both fakes once per test binary, static like in the jail.
// The fake firecracker gets the no-KVM opt-in only on a host without KVM
// (test/fakebuild), and the test log says so.
func fakes(t *testing.T) (jailer, firecracker string) {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "fakes-bin-")
		if buildErr != nil {
			return
		}
		var fcArgs []string
		if fcArgs, buildNote, buildErr = fakebuild.FirecrackerArgs(); buildErr != nil {
			return
		}
		if buildErr = goBuild(filepath.Join(buildDir, "jailer"), "jailer"); buildErr != nil {
			return
		}
		buildErr = goBuild(filepath.Join(buildDir, "firecracker"), "firecracker", fcArgs...)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	if buildNote != "" {
		t.Log(buildNote)
	}
	return filepath.Join(buildDir, "jailer"), filepath.Join(buildDir, "firecracker")
}

// goBuild builds one fake, static, to out.
func goBuild(out, pkg string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	argv := append(append([]string{"build", "-o", out}, args...), "banger/test/fakes/"+pkg)
	cmd := exec.CommandContext(ctx, "go", argv...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, d := range []string{buildDir, guestDir} {
		if d != "" {
			os.RemoveAll(d)
		}
	}
	os.Exit(code)
}

// jailBase returns a fresh base dir on a filesystem without nodev (the
// jail's device nodes are unusable on a nodev mount), removed at the end.
func jailBase(t *testing.T) string {
	t.Helper()
	for _, d := range []string{"/var/tmp", os.TempDir()} {
		var st unix.Statfs_t
		if err := unix.Statfs(d, &st); err != nil || st.Flags&unix.ST_NODEV != 0 {
			continue
		}
		base, err := os.MkdirTemp(d, "fakejail-")
		if err != nil {
			continue
		}
		t.Cleanup(func() {
			assertNoMountsUnder(t, base)
			if err := os.RemoveAll(base); err != nil {
				t.Errorf("remove jail base: %v", err)
			}
		})
		return base
	}
	t.Skip("no filesystem without nodev for the jail in /var/tmp or the temp dir")
	return ""
}

func assertNoMountsUnder(t *testing.T, dir string) {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir) {
			t.Errorf("mount left under the jail base: %s", line)
		}
	}
}

// sidecars lists the PIDs of sidecar processes for a jail id.
func sidecars(id string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) > 3 && args[1] == sidecarArg && args[2] == "--id" && args[3] == id {
			out = append(out, pid)
		}
	}
	return out
}

// processesWithArg lists PIDs whose command line contains arg.
func processesWithArg(arg string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if bytes.Contains(b, []byte(arg)) {
			out = append(out, pid)
		}
	}
	return out
}

func waitFor(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// jailRun is one jailer process.
type jailRun struct {
	t       *testing.T
	id      string
	chroot  string
	cmd     *exec.Cmd
	console *os.File
	done    chan struct{}
	waitErr error
}

func startJailer(t *testing.T, base, id string, extra ...string) *jailRun {
	t.Helper()
	return startJailerFiles(t, base, id, nil, extra...)
}

// startJailerFiles starts a jailer that inherits files as fds 3 and up.
func startJailerFiles(t *testing.T, base, id string, files []*os.File, extra ...string) *jailRun {
	t.Helper()
	return startJailerFiltered(t, base, id, files, nil, extra...)
}

// startJailerFiltered starts a jailer under the seccomp filter, if any.
func startJailerFiltered(t *testing.T, base, id string, files []*os.File, filter []unix.SockFilter, extra ...string) *jailRun {
	t.Helper()
	jailer, fc := fakes(t)
	return startJailerExec(t, jailer, fc, base, id, files, filter, extra...)
}

// startJailerExec starts the jailer with a given firecracker binary.
func startJailerExec(t *testing.T, jailer, fc, base, id string, files []*os.File, filter []unix.SockFilter, extra ...string) *jailRun {
	t.Helper()
	console, err := os.Create(filepath.Join(t.TempDir(), "console.log"))
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--id", id, "--exec-file", fc, "--uid", strconv.Itoa(nobody), "--gid", strconv.Itoa(nobody),
		"--chroot-base-dir", base}, extra...)
	args = append(args, "--", "--api-sock", "/run/firecracker.socket")
	cmd := exec.Command(jailer, args...)
	cmd.Stdout = console
	cmd.Stderr = console
	cmd.ExtraFiles = files
	r := &jailRun{t: t, id: id, chroot: filepath.Join(base, "firecracker", id, "root"), cmd: cmd, console: console, done: make(chan struct{})}
	if err := startFiltered(cmd, filter); err != nil {
		t.Fatal(err)
	}
	go func() {
		r.waitErr = cmd.Wait()
		close(r.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-r.done
		console.Close()
		waitFor(t, "the sidecar of "+id+" to exit", 10*time.Second, func() bool { return len(sidecars(id)) == 0 })
	})
	return r
}

func (r *jailRun) consoleText() string {
	b, _ := os.ReadFile(r.console.Name())
	return string(b)
}

func (r *jailRun) waitSocket() {
	r.t.Helper()
	sock := filepath.Join(r.chroot, "run", "firecracker.socket")
	deadline := time.Now().Add(10 * time.Second)
	for {
		// The socket is there once bound and answers once listening, a
		// moment later: wait for a connection, not the file.
		if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
			c.Close()
			return
		}
		select {
		case <-r.done:
			r.t.Fatalf("jailer exited (%v) before the API socket answered:\n%s", r.waitErr, r.consoleText())
		default:
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("no API socket answering after 10s:\n%s", r.consoleText())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *jailRun) client() *http.Client {
	sock := filepath.Join(r.chroot, "run", "firecracker.socket")
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
}

// api sends one request and returns status and body.
func (r *jailRun) api(method, path, body string) (int, string) {
	r.t.Helper()
	req, err := http.NewRequest(method, "http://localhost"+path, strings.NewReader(body))
	if err != nil {
		r.t.Fatal(err)
	}
	resp, err := r.client().Do(req)
	if err != nil {
		r.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (r *jailRun) mustAPI(method, path, body string) {
	r.t.Helper()
	if code, out := r.api(method, path, body); code != http.StatusNoContent {
		r.t.Fatalf("%s %s = %d %s", method, path, code, out)
	}
}

func statOf(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return &st
}

func TestJailerRoot(t *testing.T) {
	requireRoot(t)
	base := jailBase(t)
	id := fmt.Sprintf("fakejail-%d", os.Getpid())
	var extra []string
	cg := cpusetV1()
	if cg != "" {
		extra = append(extra, "--cgroup", "cpuset.mems="+cg, "--parent-cgroup", "banger-fake-jailer-test")
	}
	// Files the caller leaves open must not reach firecracker.
	marker := filepath.Join(t.TempDir(), "inherited-marker")
	var inherited []*os.File
	for range 2 {
		f, err := os.Create(marker)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		inherited = append(inherited, f)
	}
	r := startJailerFiles(t, base, id, inherited, extra...)
	r.waitSocket()
	pid := r.cmd.Process.Pid
	if cg != "" {
		t.Cleanup(func() { removeCgroupV1("cpuset", "banger-fake-jailer-test", id) })
	}

	// Layout, modes and owners.
	for _, d := range []string{"", "dev", "dev/net", "run"} {
		st := statOf(t, filepath.Join(r.chroot, d))
		if st.Mode&0o7777 != 0o700 || st.Uid != nobody || st.Gid != nobody || st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			t.Errorf("/%s: mode %o owner %d:%d", d, st.Mode, st.Uid, st.Gid)
		}
	}
	for _, d := range []struct {
		path         string
		major, minor uint32
	}{{"dev/net/tun", 10, 200}, {"dev/kvm", 10, 232}, {"dev/urandom", 1, 9}} {
		st := statOf(t, filepath.Join(r.chroot, d.path))
		if st.Mode&syscall.S_IFMT != syscall.S_IFCHR || unix.Major(st.Rdev) != d.major || unix.Minor(st.Rdev) != d.minor ||
			st.Uid != nobody || st.Gid != nobody || st.Mode&0o777 != 0o600 {
			t.Errorf("/%s: mode %o rdev %d:%d owner %d", d.path, st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev), st.Uid)
		}
	}
	if st := statOf(t, filepath.Join(r.chroot, "firecracker")); st.Mode&0o7777 != 0o755 || st.Uid != nobody || st.Nlink != 1 {
		t.Errorf("/firecracker: mode %o owner %d nlink %d", st.Mode, st.Uid, st.Nlink)
	}
	if b, err := os.ReadFile(filepath.Join(r.chroot, "firecracker.pid")); err != nil || string(b) != strconv.Itoa(pid) {
		t.Errorf("pid file = %q, %v; want %d", b, err, pid)
	}

	// Firecracker runs in place of the jailer: same PID, dropped, chrooted.
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, want := range []string{"Uid:\t65534\t65534\t65534\t65534", "Gid:\t65534\t65534\t65534\t65534"} {
		if !strings.Contains(string(status), want) {
			t.Errorf("status lacks %q:\n%s", want, status)
		}
	}
	for _, line := range strings.Split(string(status), "\n") {
		if g, ok := strings.CutPrefix(line, "Groups:"); ok && strings.TrimSpace(g) != "" {
			t.Errorf("supplementary groups left: %q", line)
		}
	}
	rootInfo, err1 := os.Stat(fmt.Sprintf("/proc/%d/root/", pid))
	chrootInfo, err2 := os.Stat(r.chroot)
	if err1 != nil || err2 != nil || !os.SameFile(rootInfo, chrootInfo) {
		t.Errorf("process root is not the chroot: %v %v", err1, err2)
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	if len(args) != 11 || args[0] != "/firecracker" || args[1] != "--id" || args[2] != id || args[3] != "--start-time-us" ||
		args[5] != "--start-time-cpu-us" || args[7] != "--parent-cpu-time-us" || args[9] != "--api-sock" {
		t.Errorf("firecracker argv = %q", args)
	}
	for _, i := range []int{4, 6, 8} {
		if i < len(args) {
			if _, err := strconv.ParseUint(args[i], 10, 64); err != nil {
				t.Errorf("firecracker argv[%d] = %q, want a number", i, args[i])
			}
		}
	}
	// The jailer clears its environment: firecracker gets none.
	if env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid)); err != nil || len(env) != 0 {
		t.Errorf("firecracker environment = %q, %v; want empty", env, err)
	}
	if cg != "" {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		if !strings.Contains(string(b), ":cpuset:/banger-fake-jailer-test/"+id+"\n") {
			t.Errorf("not in the cpuset cgroup:\n%s", b)
		}
	}

	for _, pp := range []int{pid} {
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pp))
		for _, fd := range fds {
			if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pp, fd.Name())); l == marker {
				t.Errorf("firecracker inherited the caller's fd %s", fd.Name())
			}
		}
	}

	// The sidecar runs outside the jail, as root, as firecracker's child.
	sc := sidecars(id)
	if len(sc) != 1 {
		t.Fatalf("sidecars = %v", sc)
	}
	scStatus, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", sc[0]))
	if !strings.Contains(string(scStatus), fmt.Sprintf("PPid:\t%d\n", pid)) || !strings.Contains(string(scStatus), "Uid:\t0\t") {
		t.Errorf("sidecar status:\n%s", scStatus)
	}

	code, body := r.api("GET", "/", "")
	if code != 200 || !strings.Contains(body, `"state":"Not started"`) || !strings.Contains(body, `"id":"`+id+`"`) {
		t.Errorf("GET / = %d %s", code, body)
	}
	// The jailed uid can open what the jail gave it, and only that.
	code, body = r.api("PUT", "/boot-source", `{"kernel_image_path":"/firecracker.pid"}`)
	if code != 204 {
		t.Errorf("PUT /boot-source on a world-readable file = %d %s", code, body)
	}
	code, body = r.api("PUT", "/drives/rootfs", `{"drive_id":"rootfs","path_on_host":"/firecracker.pid","is_root_device":true}`)
	if code != 400 || !strings.Contains(body, "Permission denied (os error 13)") {
		t.Errorf("PUT /drives rw on a root-owned file = %d %s", code, body)
	}

	// Killing firecracker takes the sidecar down and leaves no mount.
	if err := r.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-r.done
	waitFor(t, "the sidecar to exit", 10*time.Second, func() bool { return len(sidecars(id)) == 0 })
	assertNoMountsUnder(t, base)
}

func TestJailerRefusesSymlinkedExec(t *testing.T) {
	requireRoot(t)
	base := jailBase(t)
	id := fmt.Sprintf("fakejail-sym-%d", os.Getpid())
	chroot := filepath.Join(base, "firecracker", id, "root")
	if err := os.MkdirAll(chroot, 0o755); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(base, "precious")
	if err := os.WriteFile(target, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(chroot, "firecracker")); err != nil {
		t.Fatal(err)
	}
	r := startJailer(t, base, id)
	<-r.done
	if r.waitErr == nil || !strings.Contains(r.consoleText(), "symlink") {
		t.Fatalf("jailer = %v, output:\n%s", r.waitErr, r.consoleText())
	}
	if b, _ := os.ReadFile(target); string(b) != "keep me" {
		t.Fatalf("symlink target overwritten: %q", b)
	}
	if sc := sidecars(id); len(sc) != 0 {
		t.Fatalf("sidecar left: %v", sc)
	}
}

// cpusetV1 returns the mems of the root cpuset when the host has a cgroup
// v1 cpuset hierarchy at /sys/fs/cgroup/cpuset, else "".
func cpusetV1() string {
	b, err := os.ReadFile("/sys/fs/cgroup/cpuset/cpuset.mems")
	if err != nil {
		return ""
	}
	var st unix.Statfs_t
	if unix.Statfs("/sys/fs/cgroup/cpuset", &st) != nil || st.Type != unix.CGROUP_SUPER_MAGIC {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func removeCgroupV1(controller, parent, id string) {
	root := filepath.Join("/sys/fs/cgroup", controller)
	_ = os.Remove(filepath.Join(root, parent, id))
	_ = os.Remove(filepath.Join(root, parent))
}
