package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestWorkspacePrepare: a work tree copied into a running VM becomes the
// default directory of vm exec, and re-syncing picks up changes.
func TestWorkspacePrepare(t *testing.T) {
	t.Parallel()
	defer group(t)()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	repo := filepath.Join(t.TempDir(), "wsdemo")
	if err := os.MkdirAll(filepath.Join(repo, "src"), 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(repo, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("src/lib.txt", "v1\n")
	write("ignored.log", "no\n")
	write(".gitignore", "*.log\n")
	for _, args := range [][]string{{"init", "-q"}, {"add", "."}, {"-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-q", "-m", "init"}} {
		if out, err := timedCommand(cmdTimeout, "git", append([]string{"-C", repo}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v: %s", args, err, out)
		}
	}
	h.must(t, "vm", "create", "--name", "wsp", "--image", "minimal")
	defer h.run("vm", "delete", "wsp")
	h.must(t, "vm", "workspace", "prepare", "wsp", repo)
	if got := h.must(t, "vm", "exec", "wsp", "--", "sh", "-c", "pwd; cat src/lib.txt; ls ignored.log 2>&1 | grep -c 'No such'"); got != "/root/wsdemo\nv1\n1\n" {
		t.Fatalf("exec in workspace = %q", got)
	}
	write("src/lib.txt", "v2\n")
	h.must(t, "vm", "workspace", "prepare", "wsp", repo)
	if got := h.must(t, "vm", "exec", "wsp", "--", "cat", "src/lib.txt"); got != "v2\n" {
		t.Fatalf("after re-sync = %q", got)
	}
	if show := h.must(t, "vm", "show", "wsp", "--json"); !strings.Contains(show, `"workspace": "/root/wsdemo"`) {
		t.Errorf("vm show lacks the workspace: %s", show)
	}
}
