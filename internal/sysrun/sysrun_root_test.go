package sysrun_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"banger/internal/api"
	"banger/internal/execx"
	"banger/internal/installmeta"
	"banger/internal/netdev/netdevtest"
	"banger/internal/paths"
	"banger/internal/sysrun"
	"banger/internal/testutil"
)

// testOwner is the system account the root test runs bangerd as. It is
// created when missing and left in place (its home is re-pointed at each
// run's temporary directory).
const testOwner = "banger-test"

// TestSystemRunEndToEnd builds the binaries, runs `banger system run` as
// root for a test owner with the helper in a network namespace the test
// creates, uses the CLI as the owner against the supervised bangerd, then
// stops the supervisor with SIGTERM and checks that nothing it started is
// left running.
func TestSystemRunEndToEnd(t *testing.T) {
	testutil.RequireRoot(t)
	netdevtest.GuardHostNamespace(t)

	base, err := os.MkdirTemp("", "bsr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil { // the owner must traverse it
		t.Fatal(err)
	}
	bin := buildBinaries(t, filepath.Join(base, "bin"))
	t.Cleanup(func() { assertNoProcessesFrom(t, bin) })

	home := filepath.Join(base, "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	owner := ensureOwner(t, home)
	if err := os.Chown(home, int(owner.UID), int(owner.GID)); err != nil {
		t.Fatal(err)
	}
	writeOwnerConfig(t, home, owner)
	ownerEnv := sysrun.OwnerEnv(owner, "", "", "")
	runtimeDir := paths.ForUser(home, int(owner.UID), ownerEnv).RuntimeDir
	t.Cleanup(func() { os.RemoveAll(runtimeDir) })

	meta := filepath.Join(base, "install.toml")
	sock := filepath.Join(base, "h", "helper.sock")
	args := []string{"system", "run", "--owner", testOwner, "--install-meta", meta,
		"--helper-socket", sock, "--state-dir", filepath.Join(base, "hs"), "--netns", newNetns(t)}

	// Not root: refused before anything starts.
	out, code := runAsOwner(t, owner, home, filepath.Join(bin, "banger"), args...)
	if code == 0 || !strings.Contains(out, "banger: bad_request: banger system run must run as root") {
		t.Errorf("system run as the owner: exit %d, output %q", code, out)
	}

	sup := startSupervisor(t, filepath.Join(bin, "banger"), args...)
	if !strings.Contains(sup.up, "for owner "+testOwner) || !strings.Contains(sup.up, "sudo -u "+testOwner) {
		t.Errorf("up line = %q", sup.up)
	}

	// The metadata names the owner and is root-owned 0644.
	m, err := installmeta.ReadTrusted(meta)
	if err != nil {
		t.Fatal(err)
	}
	if m.OwnerUser != testOwner || m.OwnerUID != int(owner.UID) || m.OwnerGID != int(owner.GID) || m.OwnerHome != home || m.InstalledAt.IsZero() {
		t.Errorf("install metadata = %+v", m)
	}
	if fi, err := os.Stat(meta); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("install metadata mode: %v %v", fi, err)
	}

	// The CLI, as the owner, reaches the supervised bangerd; BANGER_DAEMON
	// points nowhere, so it cannot have started a daemon of its own.
	out, code = runAsOwner(t, owner, home, filepath.Join(bin, "banger"), "version")
	if code != 0 || !strings.Contains(out, "\nbangerd ") {
		t.Errorf("banger version as the owner: exit %d, output %q", code, out)
	}
	out, code = runAsOwner(t, owner, home, filepath.Join(bin, "banger"), "doctor", "--json")
	var d api.Doctor
	if code != 0 || json.Unmarshal([]byte(out), &d) != nil || len(d.Checks) == 0 {
		t.Errorf("banger doctor --json as the owner: exit %d, output %q", code, out)
	}

	// A second supervisor for the same owner refuses to start another bangerd.
	second := exec.Command(filepath.Join(bin, "banger"), args...)
	secondOut, err := second.CombinedOutput()
	if err == nil || !strings.Contains(string(secondOut), "banger: conflict: a bangerd for "+testOwner+" already answers") {
		t.Errorf("second supervisor: %v, output %q", err, secondOut)
	}

	code = sup.stop(t)
	if code != 0 {
		t.Errorf("supervisor exit status %d after SIGTERM; stderr:\n%s", code, sup.stderr())
	}
	for _, want := range []string{"stopping bangerd, then the helper", "helper: "} {
		if !strings.Contains(sup.stderr(), want) {
			t.Errorf("supervisor stderr lacks %q:\n%s", want, sup.stderr())
		}
	}
	if _, err := os.Lstat(sock); err == nil {
		t.Errorf("helper socket %s left behind", sock)
	}
	assertNoProcessesFrom(t, bin)
	t.Logf("up line: %s\nsupervisor stderr:\n%s", sup.up, sup.stderr())

	// When bangerd dies, the supervisor restarts it, names the cause, and
	// leaves the helper running; a clean stop then stops both.
	sup = startSupervisor(t, filepath.Join(bin, "banger"), args...)
	var helperPID, daemonPID int
	if _, err := fmt.Sscanf(sup.up[strings.Index(sup.up, "(pid "):], "(pid %d,", &helperPID); err != nil {
		t.Fatalf("parse helper pid from %q: %v", sup.up, err)
	}
	if _, err := fmt.Sscanf(sup.up[strings.LastIndex(sup.up, "(pid "):], "(pid %d,", &daemonPID); err != nil {
		t.Fatalf("parse bangerd pid from %q: %v", sup.up, err)
	}
	if err := syscall.Kill(daemonPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	restarted := false
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if strings.Contains(sup.stderr(), "bangerd restarted (pid ") {
			restarted = true
			break
		}
		select {
		case err := <-sup.done:
			t.Fatalf("supervisor exited (%v) after bangerd died instead of restarting it:\n%s", err, sup.stderr())
		default:
		}
	}
	if !restarted {
		t.Fatalf("no restart of bangerd logged 30s after it was killed:\n%s", sup.stderr())
	}
	if !strings.Contains(sup.stderr(), fmt.Sprintf("bangerd (pid %d) exited unexpectedly (signal: killed)", daemonPID)) {
		t.Errorf("supervisor stderr does not name bangerd's death:\n%s", sup.stderr())
	}
	if err := syscall.Kill(helperPID, 0); err != nil {
		t.Errorf("helper (pid %d) stopped when bangerd died: %v", helperPID, err)
	}
	out, code = runAsOwner(t, owner, home, filepath.Join(bin, "banger"), "version")
	if code != 0 || !strings.Contains(out, "\nbangerd ") {
		t.Errorf("banger version as the owner after the restart: exit %d, output %q", code, out)
	}
	if code := sup.stop(t); code != 0 {
		t.Errorf("supervisor exit status %d after SIGTERM; stderr:\n%s", code, sup.stderr())
	}
	if err := syscall.Kill(helperPID, 0); err == nil {
		t.Errorf("helper (pid %d) still running after the supervisor stopped", helperPID)
	}
	assertNoProcessesFrom(t, bin)
}

// buildBinaries builds the four banger binaries into dir.
func buildBinaries(t *testing.T, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go tool not found: %v", err)
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	r := &execx.Runner{Env: []string{"CGO_ENABLED=0"}, Dir: root}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	if _, err := r.Run(ctx, gobin, "build", "-o", dir+"/", "./cmd/banger", "./cmd/bangerd", "./cmd/banger-helper", "./cmd/banger-agent"); err != nil {
		t.Fatalf("build binaries: %v", err)
	}
	return dir
}

// ensureOwner creates the test owner (a system account) when missing, or
// points its home at home when it exists.
func ensureOwner(t *testing.T, home string) sysrun.Owner {
	t.Helper()
	ctx := t.Context()
	if _, err := user.Lookup(testOwner); err != nil {
		useradd, lerr := execx.LookPath("useradd")
		if lerr != nil {
			t.Skipf("cannot create %s: %v", testOwner, lerr)
		}
		if _, err := execx.Default.Run(ctx, useradd, "--system", "--no-create-home", "--home-dir", home,
			"--shell", "/usr/sbin/nologin", testOwner); err != nil {
			t.Fatalf("create test owner: %v", err)
		}
	} else {
		usermod, lerr := execx.LookPath("usermod")
		if lerr != nil {
			t.Skipf("cannot update %s: %v", testOwner, lerr)
		}
		if _, err := execx.Default.Run(ctx, usermod, "--home", home, testOwner); err != nil {
			t.Fatalf("point the test owner's home at %s: %v", home, err)
		}
	}
	o, err := sysrun.LookupOwner(testOwner)
	if err != nil {
		t.Fatal(err)
	}
	if o.Home != home {
		t.Fatalf("test owner home = %s, want %s", o.Home, home)
	}
	return o
}

// runAsOwner runs bin as the owner with a minimal environment and returns
// its combined output and exit status.
func runAsOwner(t *testing.T, o sysrun.Owner, home, bin string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = home
	cmd.Env = append(sysrun.EnvList(sysrun.OwnerEnv(o, os.Getenv("PATH"), "", "")), "BANGER_DAEMON=/nonexistent/bangerd")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: o.UID, Gid: o.GID, Groups: o.Groups}}
	out, err := cmd.CombinedOutput()
	if err == nil {
		return string(out), 0
	}
	code := execx.ExitCode(err)
	if code < 0 {
		t.Fatalf("run %s %v as the owner: %v", bin, args, err)
	}
	return string(out), code
}

// supervisor is a running `banger system run`.
type supervisor struct {
	cmd  *exec.Cmd
	up   string
	mu   sync.Mutex
	errb bytes.Buffer
	done chan error
}

func (s *supervisor) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.errb.Write(p)
}

func (s *supervisor) stderr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.errb.String()
}

// startSupervisor starts bin args as root and waits for its "up" line.
func startSupervisor(t *testing.T, bin string, args ...string) *supervisor {
	t.Helper()
	s := &supervisor{done: make(chan error, 1)}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Stderr = s
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		_, _ = io.Copy(io.Discard, stdout)
		s.done <- s.cmd.Wait()
	}()
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			_ = s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.done:
			case <-time.After(30 * time.Second):
				_ = s.cmd.Process.Kill()
			}
		}
	})
	timeout := time.After(60 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("supervisor exited before it was up; stderr:\n%s", s.stderr())
			}
			if strings.HasPrefix(l, "banger system: up:") {
				s.up = l
				return s
			}
		case <-timeout:
			t.Fatalf("supervisor not up within 60s; stderr:\n%s", s.stderr())
		}
	}
}

// stop sends SIGTERM and returns the exit status.
func (s *supervisor) stop(t *testing.T) int {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-s.done:
		if err == nil {
			return 0
		}
		return execx.ExitCode(err)
	case <-time.After(45 * time.Second):
		t.Fatalf("supervisor did not exit within 45s of SIGTERM; stderr:\n%s", s.stderr())
		return -1
	}
}

// assertNoProcessesFrom fails t if any process runs an executable from dir.
func assertNoProcessesFrom(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil {
			continue
		}
		if strings.HasPrefix(exe, dir+"/") {
			t.Errorf("leaked process %d running %s", pid, exe)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// newNetns creates a network namespace without moving the test into it and
// returns a path naming it (valid while the handle is open) for --netns.
func newNetns(t *testing.T) string {
	t.Helper()
	errc := make(chan error, 1)
	var ns netns.NsHandle
	go func() {
		runtime.LockOSThread() // never unlocked: the thread is discarded
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if ns, err = netns.New(); err != nil {
			errc <- err
			return
		}
		errc <- netns.Set(orig)
	}()
	if err := <-errc; err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(ns))
}

// writeOwnerConfig gives the owner's bangerd a DNS port of its own, so a
// banger already running on this host (with the default port) does not
// stop the test's from starting.
func writeOwnerConfig(t *testing.T, home string, owner sysrun.Owner) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	dir := filepath.Join(home, ".config", "banger")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("[network]\ndns_listen = \"127.0.0.1:%d\"\n", port)
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(home, ".config"), dir, filepath.Join(dir, "config.toml")} {
		if err := os.Chown(p, int(owner.UID), int(owner.GID)); err != nil {
			t.Fatal(err)
		}
	}
}
