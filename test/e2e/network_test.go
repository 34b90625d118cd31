package e2e

import (
	"bufio"
	"context"
	"errors"
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

	"github.com/miekg/dns"
	"github.com/vishvananda/netns"

	"banger/internal/netdev/netdevtest"
)

// TestNetwork runs the privilege split for real: `banger system run` starts
// the root helper and a bangerd dropped to a normal owner, inside a network
// namespace this test creates, so the bridge, taps, firewall and every
// packet stay inside it. The CLI runs as the owner. No NAT is enabled.
func TestNetwork(t *testing.T) {
	defer group(t)()
	if os.Geteuid() != 0 || os.Getenv("BANGER_E2E_NETWORK") != "1" {
		t.Skip("set BANGER_E2E_NETWORK=1 and run as root (make test does)")
	}
	sp := startSplit(t, true)
	ns, mustAs, owner := sp.ns, sp.mustAs, sp.owner
	sp.ensureKernel(t)

	// The allocated address shows up in the guest.
	addrOut := mustAs("vm", "run", "--rm", "--image", "minimal", "--", "ip", "-4", "addr", "show", "eth0")
	if !strings.Contains(addrOut, "inet 172.16.0.") {
		t.Fatalf("guest eth0 = %q, want an address in 172.16.0.0/24", addrOut)
	}

	// A server in one VM.
	mustAs("vm", "create", "--name", "web", "--image", "minimal")
	defer sp.run("vm", "delete", "web")
	mustAs("vm", "exec", "web", "--", "sh", "-c", "echo hello-web > /root/index.html; httpd -p 8080 -h /root")

	// DNS answers NAME.vm on its dns_listen (inside the namespace).
	var webIP string
	ns.do(t, func() {
		c := &dns.Client{Timeout: 3 * time.Second}
		m := new(dns.Msg)
		m.SetQuestion("web.vm.", dns.TypeA)
		r, _, err := c.Exchange(m, sp.dnsAddr)
		if err != nil {
			t.Fatalf("dns query: %v", err)
		}
		if len(r.Answer) != 1 {
			t.Fatalf("dns answer = %v", r)
		}
		webIP = r.Answer[0].(*dns.A).A.String()
	})

	// The same answer from dig, as a user would ask.
	if dig, err := exec.LookPath("dig"); err == nil {
		_, port, _ := net.SplitHostPort(sp.dnsAddr)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", ns.name, dig, "@127.0.0.1", "-p", port, "+short", "web.vm").CombinedOutput()
		cancel()
		if err != nil || strings.TrimSpace(string(out)) != webIP {
			t.Errorf("dig web.vm = %q, %v; want %s", out, err, webIP)
		}
	} else {
		t.Log("dig not installed; checked with the Go resolver only")
	}

	// Reachable from the host at that address...
	ns.do(t, func() {
		body, err := httpGet(net.JoinHostPort(webIP, "8080"))
		if err != nil || body != "hello-web\n" {
			t.Fatalf("host -> web.vm: %q, %v", body, err)
		}
	})
	// ...and from a second VM by name.
	if got := mustAs("vm", "run", "--rm", "--image", "minimal", "--", "wget", "-qO-", "http://web.vm:8080/index.html"); got != "hello-web\n" {
		t.Fatalf("vm -> web.vm = %q", got)
	}

	// vm forward makes it reachable on 127.0.0.1.
	fwd := ownerCmd(ns.name, owner, "vm", "forward", "web", "127.0.0.1:18080:8080")
	fstderr, _ := fwd.StderrPipe()
	if err := fwd.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := bufio.NewReader(fstderr).ReadString('\n'); err != nil {
		t.Fatalf("vm forward: %v", err)
	}
	ns.do(t, func() {
		body, err := httpGet("127.0.0.1:18080")
		if err != nil || body != "hello-web\n" {
			t.Errorf("forwarded: %q, %v", body, err)
		}
	})
	_ = fwd.Process.Signal(syscall.SIGINT)
	_ = fwd.Wait()

	// After delete, no tap is left in the namespace.
	mustAs("vm", "delete", "web")
	leaks, err := netdevtest.LeaksIn(ns.path)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leaks {
		if strings.Contains(l, "tap-fc") {
			t.Errorf("leaked after delete: %s", l)
		}
	}
}

// procsFrom lists processes whose executable lives in dir.
func procsFrom(dir string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink("/proc/" + e.Name() + "/exe")
		if err == nil && strings.HasPrefix(exe, dir+"/") {
			pids = append(pids, pid)
		}
	}
	return pids
}

// ownerBin holds the owner's copies of the binaries.
var ownerBin string

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dst, mode); err != nil {
		t.Fatal(err)
	}
}

// split is a running privilege split: `banger system run` with the root
// helper acting in a test namespace and bangerd dropped to a normal owner.
type split struct {
	ns     *testNetns
	owner  *user.User
	deb    string // kernel package the owner can read
	run    func(args ...string) result
	mustAs func(args ...string) string

	dnsAddr string // the owner's bangerd's dns_listen (127.0.0.1:PORT)

	supArgs []string
	inNetns bool
	sup     *exec.Cmd
	supLog  syncLog
}

// syncLog collects a child's stderr for failure reports.
type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startSupervisor runs `banger system run` (the helper and the owner's
// bangerd) and waits until it says it is up.
func (sp *split) startSupervisor(t *testing.T) {
	t.Helper()
	var sup *exec.Cmd
	if sp.inNetns {
		sup = exec.Command("ip", append([]string{"netns", "exec", sp.ns.name}, sp.supArgs...)...)
	} else {
		sup = exec.Command(sp.supArgs[0], append(sp.supArgs[1:], "--netns", sp.ns.path)...)
	}
	sup.Env = append(os.Environ(), "NO_COLOR=1")
	out, err := sup.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	sup.Stderr = &sp.supLog
	if err := sup.Start(); err != nil {
		t.Fatal(err)
	}
	sp.sup = sup
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(out).ReadString('\n')
		if err == nil && line == "" {
			err = io.EOF
		}
		ready <- err
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("system run: %v\n%s", err, sp.supLog.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("system run not up after 60s:\n%s", sp.supLog.String())
	}
}

// stopSupervisor stops `banger system run` (VMs keep running).
func (sp *split) stopSupervisor(t *testing.T) {
	t.Helper()
	if sp.sup == nil {
		return
	}
	_ = sp.sup.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- sp.sup.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = sp.sup.Process.Kill()
		t.Errorf("banger system run did not stop on SIGTERM")
	}
	sp.sup = nil
}

// restart stops and starts the helper and bangerd again, as an upgrade or
// a unit restart would.
func (sp *split) restart(t *testing.T) {
	t.Helper()
	sp.stopSupervisor(t)
	sp.startSupervisor(t)
}

// ensureKernel imports the default kernel for the owner once.
func (sp *split) ensureKernel(t *testing.T) {
	t.Helper()
	if sp.run("kernel", "show", "default").code != 0 {
		sp.mustAs("kernel", "import-deb", sp.deb, "--name", "default")
	}
}

// startSplit starts the split. With inNetns the whole system (helper,
// bangerd, VMs) runs inside the namespace; otherwise only the helper's
// network ops go there (--netns) and bangerd runs in the host namespace,
// so that the helper itself can reach the package mirror (debootstrap).
func startSplit(t *testing.T, inNetns bool, supArgs ...string) *split {
	t.Helper()
	ns := newNetns(t)
	owner := ensureOwner(t, filepath.Join(h.root, "owner"))
	// The owner's bangerd keeps its runtime dir in /tmp (no XDG_RUNTIME_DIR).
	t.Cleanup(func() { _ = os.RemoveAll("/tmp/banger-" + owner.Uid) })
	sock := filepath.Join(h.root, "h", "helper.sock")
	// The owner cannot be assumed to reach the build tree or root's cache:
	// give it its own copies.
	ownerBin = filepath.Join(h.root, "ownerbin")
	for _, b := range []string{"banger", "bangerd", "banger-helper", "banger-agent"} {
		copyFile(t, filepath.Join(h.bin, b), filepath.Join(ownerBin, b), 0o755)
	}
	deb := filepath.Join(h.root, "kernel.deb")
	copyFile(t, os.Getenv("BANGER_E2E_KERNEL_DEB"), deb, 0o644)

	// The owner's bangerd gets its own DNS port: outside the namespace the
	// default one may be a running banger's. Outside it, the bridge gets a
	// subnet no address of the host has, so the gateway DNS listener
	// cannot land on another banger's bridge address.
	dnsAddr := freeDNSAddr(t)
	appendOwnerConfig(t, fmt.Sprintf("\n[network]\ndns_listen = %q\n", dnsAddr))
	args := []string{filepath.Join(ownerBin, "banger"), "system", "run",
		"--owner", owner.Username, "--install-meta", filepath.Join(h.root, "install.toml"),
		"--helper-socket", sock, "--state-dir", filepath.Join(h.root, "hs")}
	if !inNetns {
		args = append(args, "--subnet", freeSubnet(t))
	}
	// Jailed VMMs run as uids of a range no other banger on the host uses
	// (the default is a running install's).
	args = append(args, "--vmm-uid-base", strconv.Itoa(testVMMUIDBase()))
	args = append(args, supArgs...)
	sp := &split{ns: ns, owner: owner, deb: deb, supArgs: args, inNetns: inNetns, dnsAddr: dnsAddr}
	t.Cleanup(func() {
		sp.stopSupervisor(t)
		// No helper or bangerd of this run is left.
		if pids := procsFrom(ownerBin); len(pids) > 0 {
			t.Errorf("processes still running from %s: %v", ownerBin, pids)
		}
		// With no VM left running, stopping banger leaves no bridge, tap
		// or nftables table in the namespace.
		leaks, err := netdevtest.LeaksIn(ns.path)
		if err != nil {
			t.Error(err)
		}
		if len(leaks) > 0 {
			t.Errorf("left in the namespace after system run stopped: %v", leaks)
		}
		if t.Failed() {
			t.Logf("system run log:\n%s", sp.supLog.String())
		}
	})
	sp.startSupervisor(t)

	nsName := ""
	if inNetns {
		nsName = ns.name
	}
	sp.run = func(args ...string) result { return ownerRun(nsName, owner, args...) }
	sp.mustAs = func(args ...string) string {
		t.Helper()
		r := sp.run(args...)
		if r.code != 0 {
			t.Fatalf("banger %s as %s: exit %d: %s", strings.Join(args, " "), owner.Username, r.code, r.stderr)
		}
		return r.stdout
	}
	return sp
}

func httpGet(hostport string) (string, error) {
	c, err := net.DialTimeout("tcp", hostport, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
	b, err := io.ReadAll(c)
	if err != nil {
		return "", err
	}
	_, body, _ := strings.Cut(string(b), "\r\n\r\n")
	return body, nil
}

type testNetns struct {
	name, path string
	handle     netns.NsHandle
}

// newNetns creates a named namespace with lo up and deletes it (after
// checking it holds no banger leftovers) when the test ends.
func newNetns(t *testing.T) *testNetns {
	t.Helper()
	name := "bge-" + strconv.Itoa(os.Getpid())
	if out, err := timedCommand(cmdTimeout, "ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	n := &testNetns{name: name, path: "/run/netns/" + name}
	h, err := netns.GetFromPath(n.path)
	if err != nil {
		t.Fatal(err)
	}
	n.handle = h
	if out, err := timedCommand(cmdTimeout, "ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	t.Cleanup(func() {
		n.handle.Close()
		if out, err := timedCommand(cmdTimeout, "ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del: %v: %s", err, out)
		}
	})
	return n
}

// do runs fn on a thread inside the namespace.
func (n *testNetns) do(t *testing.T, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		// The thread is not unlocked: if restoring failed it must die with
		// the goroutine rather than serve others in the wrong namespace.
		orig, err := netns.Get()
		if err != nil {
			t.Errorf("get netns: %v", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(n.handle); err != nil {
			t.Errorf("enter netns: %v", err)
			return
		}
		defer func() {
			if netns.Set(orig) == nil {
				runtime.UnlockOSThread()
			}
		}()
		fn()
	}()
	<-done
}

// ensureOwner makes (or reuses) the unprivileged owner account with its
// home at home.
func ensureOwner(t *testing.T, home string) *user.User {
	t.Helper()
	const name = "banger-e2e"
	if _, err := user.Lookup(name); err != nil {
		if out, err := timedCommand(cmdTimeout, "useradd", "--system", "--shell", "/bin/sh", "--home-dir", home, name).CombinedOutput(); err != nil {
			t.Fatalf("useradd: %v: %s", err, out)
		}
	} else if out, err := timedCommand(cmdTimeout, "usermod", "--home", home, name).CombinedOutput(); err != nil {
		t.Fatalf("usermod: %v: %s", err, out)
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.MkdirAll(home, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(home, uid, gid); err != nil {
		t.Fatal(err)
	}
	// The test root and the binaries must be reachable by the owner.
	for _, d := range []string{h.root} {
		_ = os.Chmod(d, 0o755)
	}
	return u
}

// ownerCmd runs the CLI as the owner, inside netns ns unless ns is "".
func ownerCmd(ns string, u *user.User, args ...string) *exec.Cmd {
	argv := append([]string{"setpriv", "--reuid=" + u.Uid, "--regid=" + u.Gid, "--init-groups",
		"env", "-i", "HOME=" + u.HomeDir, "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "NO_COLOR=1",
		"BANGER_HELPER_SOCKET=" + filepath.Join(h.root, "h", "helper.sock"),
		filepath.Join(ownerBin, "banger")}, args...)
	if ns != "" {
		argv = append([]string{"ip", "netns", "exec", ns}, argv...)
	}
	return exec.CommandContext(context.Background(), argv[0], argv[1:]...)
}

func ownerRun(ns string, u *user.User, args ...string) result {
	cmd := ownerCmd(ns, u, args...)
	var so, se strings.Builder
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
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
