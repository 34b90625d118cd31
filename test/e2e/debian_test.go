package e2e

import (
	"crypto/sha256"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"sort"
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
		"cat /proc/1/comm; . /etc/os-release; echo $VERSION_CODENAME; git --version; for c in make gcc curl; do command -v $c; done; id -u; "+
			"stat -c 'seed %n %U:%G %a' /root/.bashrc /root/.profile; findmnt -no LABEL /root")
	// /root is the work disk, built from the image's own /root (its work
	// seed): Debian's dotfiles are there, root's, with their modes.
	for _, want := range []string{"systemd\n", "bookworm\n", "git version", "/usr/bin/make", "/usr/bin/gcc", "/usr/bin/curl", "\n0\n",
		"seed /root/.bashrc root:root 644\n", "seed /root/.profile root:root 644\n", "banger-work\n"} {
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
	testWorkspaceExport(t, sp, repo)
}

// testWorkspaceExport: work done in a guest branch (a commit, an
// uncommitted change, an untracked file, an ignored one) comes back as a
// patch that git apply accepts on the host, giving the guest's tree; the
// export leaves the guest repository as it was. Re-syncing over guest
// commits is refused unless forced, and --from starts a branch elsewhere.
func testWorkspaceExport(t *testing.T, sp *split, repo string) {
	const vm = "wsx"
	sp.mustAs("vm", "run", "-d", "--name", vm, "--image", "debian-bookworm", "--branch", "guest-work", repo)
	defer sp.run("vm", "delete", vm)
	work := `set -e
git rev-parse --abbrev-ref HEAD
echo changed > src/lib.txt
git -c user.name=g -c user.email=g@example.com commit -q -am 'guest commit'
echo 'extra:' >> Makefile
echo new > added.txt
echo junk > build.log
git status --porcelain`
	if got := sp.mustAs("vm", "exec", vm, "--", "sh", "-c", work); got != "guest-work\n M Makefile\n?? added.txt\n" {
		t.Fatalf("guest work printed %q", got)
	}
	patch := filepath.Join(sp.owner.HomeDir, "ws.patch")
	// The guest changed the Makefile: the summary on stderr says so
	// before anyone applies the patch.
	if r := sp.run("vm", "workspace", "export", vm, "-o", patch); r.code != 0 || !strings.Contains(r.stderr, "Makefile (make runs its recipes)") {
		t.Errorf("export: exit %d, stderr %q; want the Makefile named in the summary", r.code, r.stderr)
	}
	if got := sp.mustAs("vm", "exec", vm, "--", "git", "status", "--porcelain"); got != " M Makefile\n?? added.txt\n" {
		t.Errorf("guest status after export = %q: export changed the guest repository", got)
	}
	if err := os.Remove(filepath.Join(repo, "notes.txt")); err != nil { // the host's own untracked file
		t.Fatal(err)
	}
	ownerGit(t, sp.owner, repo, "apply", "--check", patch)
	ownerGit(t, sp.owner, repo, "apply", patch)
	guest := sp.mustAs("vm", "exec", vm, "--", "sh", "-c", "git ls-files -z -co --exclude-standard | xargs -0 sha256sum")
	if got, want := sumLines(guest), hostSums(t, sp.owner, repo); got != want {
		t.Errorf("host tree after git apply:\n%s\nguest tree:\n%s", want, got)
	}

	// A guest symlink that leaves the repository: the export is refused,
	// naming it, and writes nothing.
	sp.mustAs("vm", "exec", vm, "--", "ln", "-s", "/etc/shadow", "leak")
	leaked := filepath.Join(sp.owner.HomeDir, "leak.patch")
	if r := sp.run("vm", "workspace", "export", vm, "-o", leaked); r.code == 0 || !strings.Contains(r.stderr, `"leak"`) {
		t.Errorf("export of a symlink to /etc/shadow: exit %d, stderr %q; want a refusal naming it", r.code, r.stderr)
	}
	if _, err := os.Lstat(leaked); !os.IsNotExist(err) {
		t.Errorf("a refused export wrote %s (%v)", leaked, err)
	}
	sp.mustAs("vm", "exec", vm, "--", "rm", "leak")

	r := sp.run("vm", "workspace", "prepare", vm, repo)
	if r.code == 0 || !strings.Contains(r.stderr, "--force") {
		t.Errorf("re-sync over a guest commit: exit %d, stderr %q; want a refusal naming --force", r.code, r.stderr)
	}
	// Forced, the repository and the tracked files are replaced; a file
	// only the guest has is left alone.
	sp.mustAs("vm", "workspace", "prepare", vm, repo, "--force", "--branch", "b2", "--from", "HEAD")
	if got := sp.mustAs("vm", "exec", vm, "--", "sh", "-c", "git rev-parse --abbrev-ref HEAD; cat src/lib.txt; git status --porcelain"); got != "b2\nlib-ok\n?? added.txt\n" {
		t.Errorf("after prepare --branch b2 --from HEAD: %q", got)
	}
}

// ownerGit runs git as the owner (root's git refuses a repository another
// user owns).
func ownerGit(t *testing.T, owner *user.User, repo string, args ...string) string {
	t.Helper()
	out, err := timedCommand(cmdTimeout, "runuser", append([]string{"-u", owner.Username, "--", "git", "-C", repo}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("git %v as %s: %v: %s", args, owner.Username, err, out)
	}
	return string(out)
}

// hostSums lists the repository's tracked and untracked, not-ignored files
// as sha256sum would.
func hostSums(t *testing.T, owner *user.User, repo string) string {
	t.Helper()
	var b strings.Builder
	for _, f := range strings.Split(ownerGit(t, owner, repo, "ls-files", "-z", "-co", "--exclude-standard"), "\x00") {
		if f == "" {
			continue
		}
		data, err := os.ReadFile(filepath.Join(repo, f))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%x  %s\n", sha256.Sum256(data), f)
	}
	return sumLines(b.String())
}

// sumLines sorts sha256sum output so listings compare whatever the order.
func sumLines(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	sort.Strings(lines)
	return strings.Join(lines, "\n")
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
		if out, err := timedCommand(cmdTimeout, "git", append([]string{"-C", repo}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v: %s", args, err, out)
		}
	}
	if out, err := timedCommand(cmdTimeout, "chown", "-R", owner.Uid+":"+owner.Gid, repo).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v: %s", err, out)
	}
	return repo
}
