package e2e

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSSH: the minimal image has no sshd, yet the system ssh, scp and sftp
// work against it on the very first connection with strict host key
// checking, and a VM re-created under the same name needs no prompt.
func TestSSH(t *testing.T) {
	t.Parallel()
	defer group(t)()
	for _, tool := range []string{"ssh", "scp", "sftp"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (openssh-client)", tool)
		}
	}
	cfg := filepath.Join(h.root, "config", "banger", "ssh_config")
	sshArgs := func(args ...string) []string {
		return append([]string{"-F", cfg, "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"}, args...)
	}
	run := func(tool string, args ...string) (string, error) {
		cmd := timedCommand(cmdTimeout, tool, sshArgs(args...)...)
		cmd.Env = h.env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	h.must(t, "vm", "create", "--name", "sshbox", "--image", "minimal")
	defer h.run("vm", "delete", "sshbox")
	if out, err := run("ssh", "sshbox.vm", "echo first; uname -r"); err != nil || !strings.HasPrefix(out, "first\n") {
		t.Fatalf("first ssh: %q, %v", out, err)
	}
	// The exit status comes back.
	var ee *exec.ExitError
	if _, err := run("ssh", "sshbox.vm", "exit 3"); !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Errorf("ssh 'exit 3' = %v, want exit status 3", err)
	}

	src := filepath.Join(t.TempDir(), "src.txt")
	if err := os.WriteFile(src, []byte("round trip\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := run("scp", src, "sshbox.vm:/root/copied.txt"); err != nil {
		t.Fatalf("scp up: %q, %v", out, err)
	}
	back := filepath.Join(t.TempDir(), "back.txt")
	if out, err := run("scp", "sshbox.vm:/root/copied.txt", back); err != nil {
		t.Fatalf("scp down: %q, %v", out, err)
	}
	if b, _ := os.ReadFile(back); string(b) != "round trip\n" {
		t.Fatalf("scp round trip = %q", b)
	}
	batch := filepath.Join(t.TempDir(), "batch")
	if err := os.WriteFile(batch, []byte("ls /root\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := run("sftp", "-b", batch, "sshbox.vm"); err != nil || !strings.Contains(out, "copied.txt") {
		t.Fatalf("sftp ls: %q, %v", out, err)
	}

	// ssh -L to a guest port.
	h.must(t, "vm", "exec", "sshbox", "--", "sh", "-c", "echo via-ssh-L > /root/index.html; httpd -p 8081 -h /root")
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(probe.Addr().(*net.TCPAddr).Port)
	probe.Close()
	fwd := exec.Command("ssh", sshArgs("-N", "-L", "127.0.0.1:"+port+":127.0.0.1:8081", "-o", "ExitOnForwardFailure=yes", "sshbox.vm")...)
	fwd.Env = h.env
	if err := fwd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = fwd.Process.Kill(); _ = fwd.Wait() }()
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", "127.0.0.1:"+port); err == nil {
			c.Close()
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if body, err := httpGet("127.0.0.1:" + port); err != nil || body != "via-ssh-L\n" {
		t.Fatalf("through ssh -L: %q, %v", body, err)
	}

	// Re-created under the same name: a new host key, still no prompt.
	h.must(t, "vm", "delete", "sshbox")
	h.must(t, "vm", "create", "--name", "sshbox", "--image", "minimal")
	if out, err := run("ssh", "sshbox.vm", "true"); err != nil {
		t.Fatalf("ssh after re-create: %q, %v", out, err)
	}
}

// TestSSHConfigInstall: --install twice leaves one Include, --uninstall
// restores ~/.ssh/config byte for byte, and plain ssh then reads banger's
// config through the Include.
func TestSSHConfigInstall(t *testing.T) {
	defer group(t)()
	path := filepath.Join(h.root, "home", ".ssh", "config")
	orig := "# mine\nHost example\n  User me\n"
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(orig), 0o600); err != nil {
		t.Fatal(err)
	}
	h.must(t, "ssh-config", "--install")
	h.must(t, "ssh-config", "--install")
	got, _ := os.ReadFile(path)
	include := "Include " + filepath.Join(h.root, "config", "banger", "ssh_config")
	if strings.Count(string(got), include) != 1 || !strings.HasSuffix(string(got), orig) {
		t.Fatalf("after two installs:\n%s", got)
	}
	h.must(t, "ssh-config", "--uninstall")
	if got, _ := os.ReadFile(path); string(got) != orig {
		t.Fatalf("after uninstall:\n%q\nwant\n%q", got, orig)
	}
}
