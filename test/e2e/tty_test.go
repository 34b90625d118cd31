package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestInteractiveSSH drives interactive sessions under a real terminal
// (tmux): `vm ssh NAME`, and `vm run --rm` without a command, which opens an
// SSH session and deletes the VM when it ends.
func TestInteractiveSSH(t *testing.T) {
	t.Parallel()
	defer group(t)()
	for _, tool := range []string{"tmux", "ssh"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	h.must(t, "vm", "create", "--name", "ttybox", "--image", "minimal")
	defer h.run("vm", "delete", "ttybox")

	envPrefix := ""
	for _, kv := range h.env {
		for _, k := range []string{"HOME=", "XDG_CONFIG_HOME=", "XDG_STATE_HOME=", "XDG_CACHE_HOME=", "XDG_RUNTIME_DIR="} {
			if strings.HasPrefix(kv, k) {
				envPrefix += kv + " "
			}
		}
	}
	banger := filepath.Join(h.bin, "banger")
	sock := filepath.Join(h.root, "tmux.sock")
	tmux := func(args ...string) string {
		out, err := timedCommand(cmdTimeout, "tmux", append([]string{"-S", sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v: %s", args, err, out)
		}
		return string(out)
	}
	defer func() { _ = timedCommand(cmdTimeout, "tmux", "-S", sock, "kill-server").Run() }()
	waitFor := func(session, want string) string {
		t.Helper()
		var screen string
		for i := 0; i < 300; i++ {
			screen = tmux("capture-pane", "-p", "-t", session)
			if strings.Contains(screen, want) {
				return screen
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("%s: %q never appeared; screen:\n%s", session, want, screen)
		return ""
	}

	// vm ssh under a terminal: the product of 6*7 proves the shell ran it.
	tmux("new-session", "-d", "-s", "ssh", "-x", "120", "-y", "30", "env "+envPrefix+banger+" vm ssh ttybox")
	waitFor("ssh", "#")
	tmux("send-keys", "-t", "ssh", "stty size; echo tty-ok-$((6*7))", "Enter")
	screen := waitFor("ssh", "tty-ok-42")
	if !strings.Contains(screen, "30 120") {
		t.Errorf("guest terminal size is not the pane's 30x120:\n%s", screen)
	}
	tmux("send-keys", "-t", "ssh", "exit", "Enter")

	// vm run --rm without a command: an SSH session, then the VM is gone.
	tmux("new-session", "-d", "-s", "run", "-x", "100", "-y", "30", "env "+envPrefix+banger+" vm run --rm --name ttyrun --image minimal; echo run-exit=$?; sleep 60")
	waitFor("run", "#")
	tmux("send-keys", "-t", "run", "hostname; exit 5", "Enter")
	screen = waitFor("run", "run-exit=")
	if !strings.Contains(screen, "ttyrun") || !strings.Contains(screen, "run-exit=5") {
		t.Errorf("vm run session:\n%s", screen)
	}
	if _, ok := h.vms(t)["ttyrun"]; ok {
		t.Error("vm run --rm left its VM")
	}
}
