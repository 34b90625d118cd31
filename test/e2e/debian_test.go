package e2e

import (
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
)

// TestDebianImage builds the Debian dev image the way a normal owner does:
// bangerd (the owner) asks the root helper, which runs debootstrap and hands
// the image back as an fd. Then it boots it: systemd is PID 1 and the agent
// runs as a service under it. The helper's network ops act in a test
// namespace; the helper itself needs the Debian mirror, so this runs only
// with BANGER_E2E_DEBOOTSTRAP=1 as root (make test sets it when root).
func TestDebianImage(t *testing.T) {
	defer group(t)()
	if os.Geteuid() != 0 || os.Getenv("BANGER_E2E_DEBOOTSTRAP") != "1" {
		t.Skip("set BANGER_E2E_DEBOOTSTRAP=1 and run as root (needs the Debian mirror)")
	}
	sp := startSplit(t, false)
	sp.ensureKernel(t)
	sp.mustAs("image", "build", "--debootstrap", "bookworm", "--name", "debian-bookworm")
	defer sp.run("image", "delete", "debian-bookworm")
	out := sp.mustAs("vm", "run", "--rm", "--image", "debian-bookworm", "--", "sh", "-c",
		"cat /proc/1/comm; . /etc/os-release; echo $VERSION_CODENAME; git --version; for c in make gcc curl; do command -v $c; done; id -u")
	for _, want := range []string{"systemd\n", "bookworm\n", "git version", "/usr/bin/make", "/usr/bin/gcc", "/usr/bin/curl", "\n0\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("guest output %q lacks %q", out, want)
		}
	}

	// A workspace: `vm run --rm ./repo -- make check` exits with make's
	// status; --dry-run lists exactly the tracked files (plus untracked
	// ones with the flag, never ignored ones).
	repo := makeRepo(t, sp.owner)
	if got := sp.mustAs("vm", "run", "--dry-run", repo); got != ".gitignore\nMakefile\nsrc/lib.txt\n" {
		t.Errorf("dry run = %q", got)
	}
	if got := sp.mustAs("vm", "run", "--dry-run", "--include-untracked", repo); got != ".gitignore\nMakefile\nnotes.txt\nsrc/lib.txt\n" {
		t.Errorf("dry run with untracked = %q", got)
	}
	if r := sp.run("vm", "run", "--rm", "--image", "debian-bookworm", repo, "--", "make", "check"); r.code != 0 || !strings.Contains(r.stdout, "lib-ok") {
		t.Errorf("make check: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if r := sp.run("vm", "run", "--rm", "--image", "debian-bookworm", repo, "--", "make", "check", "FAIL=1"); r.code != 2 {
		t.Errorf("failing make check: exit %d (want make's 2), stderr %q", r.code, r.stderr)
	}
}

// makeRepo creates a small git repository in the owner's home, owned by
// the owner: tracked files, an untracked one and an ignored one.
func makeRepo(t *testing.T, owner *user.User) string {
	t.Helper()
	repo := filepath.Join(owner.HomeDir, "demo")
	files := map[string]string{
		"Makefile":    "check:\n\tcat src/lib.txt\n\ttest -z \"$(FAIL)\"\n",
		"src/lib.txt": "lib-ok\n",
		".gitignore":  "*.log\n",
		"notes.txt":   "untracked\n",
		"debug.log":   "ignored\n",
	}
	for name, body := range files {
		p := filepath.Join(repo, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{
		{"init", "-q"},
		{"add", "Makefile", "src/lib.txt", ".gitignore"},
		{"-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-q", "-m", "init"},
	} {
		if out, err := exec.Command("git", append([]string{"-C", repo}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v: %s", args, err, out)
		}
	}
	if out, err := exec.Command("chown", "-R", owner.Uid+":"+owner.Gid, repo).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v: %s", err, out)
	}
	return repo
}
