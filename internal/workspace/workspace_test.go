package workspace

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// These tests drive real git, and run the guest scripts with the host's sh
// and tar: the same argv the agent runs in a guest.

func needGit(t *testing.T) {
	t.Helper()
	for _, bin := range []string{"git", "sh", "tar"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed", bin)
		}
	}
	// Keep the user's and system git configuration out of the tests.
	t.Setenv("GIT_CONFIG_GLOBAL", os.DevNull)
	t.Setenv("GIT_CONFIG_NOSYSTEM", "1")
}

func run(t *testing.T, dir string, argv ...string) string {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v in %s: %v: %s", argv, dir, err, out)
	}
	return string(out)
}

func gitT(t *testing.T, dir string, args ...string) string {
	t.Helper()
	return strings.TrimSpace(run(t, dir, append([]string{"git", "-c", "user.name=T", "-c", "user.email=t@example.com"}, args...)...))
}

func write(t *testing.T, dir, name, body string) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// newRepo makes a repository "proj" on branch main with two commits, a
// tracked file changed but not committed, an untracked file and an ignored
// one. It returns the top directory and the two commits.
func newRepo(t *testing.T) (top, first, second string) {
	t.Helper()
	top = filepath.Join(t.TempDir(), "proj")
	if err := os.Mkdir(top, 0o755); err != nil {
		t.Fatal(err)
	}
	gitT(t, top, "init", "-q", "-b", "main")
	gitT(t, top, "config", "user.name", "Host User")
	gitT(t, top, "config", "user.email", "host@example.com")
	gitT(t, top, "config", "remote.origin.url", "https://example.invalid/secret-token@proj.git")
	write(t, top, ".gitignore", "*.log\n")
	write(t, top, "a.txt", "a1\n")
	write(t, top, "old.txt", "old\n")
	gitT(t, top, "add", ".")
	gitT(t, top, "commit", "-q", "-m", "first")
	first = gitT(t, top, "rev-parse", "HEAD")
	write(t, top, "a.txt", "a2\n")
	write(t, top, "src/b.sh", "#!/bin/sh\necho b\n")
	if err := os.Chmod(filepath.Join(top, "src/b.sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("b.sh", filepath.Join(top, "src/link")); err != nil {
		t.Fatal(err)
	}
	gitT(t, top, "add", ".")
	gitT(t, top, "commit", "-q", "-m", "second")
	second = gitT(t, top, "rev-parse", "HEAD")
	write(t, top, "a.txt", "a3 uncommitted\n")
	write(t, top, "notes.txt", "untracked\n")
	write(t, top, "build.log", "ignored\n")
	return top, first, second
}

func TestPrepareRefusesBadInput(t *testing.T) {
	needGit(t)
	ctx := context.Background()
	top, _, _ := newRepo(t)
	plain := t.TempDir()
	bare := filepath.Join(t.TempDir(), "bare.git")
	gitT(t, filepath.Dir(bare), "init", "-q", "--bare", bare)
	empty := filepath.Join(t.TempDir(), "empty")
	gitT(t, filepath.Dir(empty), "init", "-q", empty)
	sub := filepath.Join(t.TempDir(), "sub")
	gitT(t, filepath.Dir(sub), "init", "-q", sub)
	gitT(t, sub, "update-index", "--add", "--cacheinfo", "160000,"+strings.Repeat("1", 40)+",vendor/lib")
	gitT(t, sub, "commit", "-q", "-m", "gitlink")
	file := filepath.Join(top, "a.txt")

	tests := []struct {
		name string
		path string
		o    Options
		want string
	}{
		{"missing path", filepath.Join(plain, "nope"), Options{}, "no such file"},
		{"a file", file, Options{}, "not a directory"},
		{"not a repository", plain, Options{}, "not a git repository"},
		{"bare", bare, Options{}, "bare repository"},
		{"no commit", empty, Options{}, "has no commit yet"},
		{"submodule", sub, Options{}, "vendor/lib is a submodule"},
		{"from without branch", top, Options{From: "HEAD~1"}, "--from needs --branch"},
		{"from with untracked", top, Options{Branch: "x", From: "HEAD", Untracked: true}, "give one of them"},
		{"bad branch", top, Options{Branch: "a..b"}, "not a valid branch name"},
		{"bad from", top, Options{Branch: "x", From: "no-such-ref"}, `--from "no-such-ref": not a commit`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, err := Prepare(ctx, tc.path, tc.o)
			if err == nil {
				w.Close()
				t.Fatalf("Prepare succeeded; want an error containing %q", tc.want)
			}
			var inv InvalidError
			if !errors.As(err, &inv) {
				t.Errorf("error %v is not an InvalidError", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q lacks %q", err, tc.want)
			}
		})
	}
}

func TestPrepareListsFiles(t *testing.T) {
	needGit(t)
	ctx := context.Background()
	top, first, second := newRepo(t)
	tests := []struct {
		name     string
		o        Options
		base     string
		branch   string
		wantList string
	}{
		{"tracked", Options{}, second, "main", ".gitignore a.txt old.txt src/b.sh src/link"},
		{"untracked", Options{Untracked: true}, second, "main", ".gitignore a.txt notes.txt old.txt src/b.sh src/link"},
		{"branch", Options{Branch: "feature"}, second, "feature", ".gitignore a.txt old.txt src/b.sh src/link"},
		{"from", Options{Branch: "fix", From: "HEAD~1"}, first, "fix", ".gitignore a.txt old.txt"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, err := Prepare(ctx, filepath.Join(top, "src"), tc.o)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			if got := strings.Join(w.Files, " "); got != tc.wantList {
				t.Errorf("files = %q, want %q", got, tc.wantList)
			}
			if w.Base != tc.base || w.Branch != tc.branch || w.Top != top || w.GuestDir() != "/root/proj" {
				t.Errorf("got base %s branch %q top %s dir %s; want %s %q %s /root/proj", w.Base, w.Branch, w.Top, w.GuestDir(), tc.base, tc.branch, top)
			}
		})
	}
}

// unpack prepares the workspace, packs it and unpacks it with SyncArgv
// into guest (a directory standing in for the guest's /root/proj).
func unpack(t *testing.T, top, guest, prevBase string, force bool, o Options) (*Workspace, int, string) {
	t.Helper()
	ctx := context.Background()
	w, err := Prepare(ctx, top, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	var tarball bytes.Buffer
	if err := w.WriteTar(ctx, &tarball); err != nil {
		t.Fatal(err)
	}
	argv := SyncArgv(guest, prevBase, force)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin = &tarball
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	code := 0
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatal(err)
		}
		code = ee.ExitCode()
	}
	return w, code, out.String()
}

// tree lists a directory's files (not .git) with their contents and modes.
func tree(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			if d.Name() == ".git" {
				return filepath.SkipDir
			}
			return nil
		}
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		body := ""
		if st.Mode()&fs.ModeSymlink != 0 {
			body, _ = os.Readlink(p)
			body = "-> " + body
		} else {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			body = string(b)
		}
		lines = append(lines, rel+" "+st.Mode().String()+" "+strings.TrimSpace(body))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func TestTarballGivesTheGuestARepositoryAtTheHostCommit(t *testing.T) {
	needGit(t)
	top, _, second := newRepo(t)
	guest := filepath.Join(t.TempDir(), "proj")
	w, code, out := unpack(t, top, guest, "", false, Options{})
	if code != 0 {
		t.Fatalf("sync exited %d: %s", code, out)
	}
	if got := gitT(t, guest, "rev-parse", "HEAD"); got != second {
		t.Errorf("guest HEAD = %s, want the host's %s", got, second)
	}
	if got := gitT(t, guest, "symbolic-ref", "--short", "HEAD"); got != "main" {
		t.Errorf("guest branch = %q, want main", got)
	}
	// The host's uncommitted change shows as one in the guest too.
	if got := gitT(t, guest, "status", "--porcelain"); got != "M a.txt" {
		t.Errorf("guest status = %q, want only a.txt modified", got)
	}
	if got := strings.TrimSpace(run(t, guest, "git", "config", "user.email")); got != "host@example.com" {
		t.Errorf("guest user.email = %q", got)
	}
	cfg, err := os.ReadFile(filepath.Join(guest, ".git", "config"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(cfg), "secret-token") || strings.Contains(string(cfg), "remote") {
		t.Errorf("the host's remotes leaked into the guest config:\n%s", cfg)
	}
	if _, err := os.Stat(filepath.Join(guest, "build.log")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the ignored build.log was copied (stat: %v)", err)
	}
	if want := tree(t, top); strings.Contains(want, "notes.txt") {
		// The host tree has the untracked and ignored files; the guest
		// has exactly the tracked ones, as in the work tree.
		var keep []string
		for _, l := range strings.Split(want, "\n") {
			if !strings.HasPrefix(l, "notes.txt ") && !strings.HasPrefix(l, "build.log ") {
				keep = append(keep, l)
			}
		}
		if got := tree(t, guest); got != strings.Join(keep, "\n") {
			t.Errorf("guest tree:\n%s\nwant:\n%s", got, strings.Join(keep, "\n"))
		}
	}
	if len(w.Files) != 5 {
		t.Errorf("files = %v", w.Files)
	}
}

func TestBranchFromCopiesTheCommitTree(t *testing.T) {
	needGit(t)
	top, first, _ := newRepo(t)
	guest := filepath.Join(t.TempDir(), "proj")
	if _, code, out := unpack(t, top, guest, "", false, Options{Branch: "fix", From: first}); code != 0 {
		t.Fatalf("sync exited %d: %s", code, out)
	}
	if got := gitT(t, guest, "rev-parse", "fix"); got != first {
		t.Errorf("guest branch fix at %s, want %s", got, first)
	}
	if got := gitT(t, guest, "symbolic-ref", "--short", "HEAD"); got != "fix" {
		t.Errorf("guest HEAD on %q, want fix", got)
	}
	if got := gitT(t, guest, "status", "--porcelain"); got != "" {
		t.Errorf("guest status = %q, want clean", got)
	}
	if got, want := tree(t, guest), ".gitignore -rw-r--r-- *.log\na.txt -rw-r--r-- a1\nold.txt -rw-r--r-- old"; got != want {
		t.Errorf("guest tree:\n%s\nwant:\n%s", got, want)
	}
}

// snapshot captures everything export must leave alone in the guest repo.
func snapshot(t *testing.T, guest string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(gitT(t, guest, "rev-parse", "HEAD") + "\n")
	b.WriteString(gitT(t, guest, "status", "--porcelain", "--untracked-files=all") + "\n")
	b.WriteString(tree(t, guest) + "\n")
	err := filepath.WalkDir(filepath.Join(guest, ".git"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(guest, p)
			fmt.Fprintf(&b, "%s %x\n", rel, sha256.Sum256(data))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func export(t *testing.T, guest, base string) (int, string, string) {
	t.Helper()
	argv := ExportArgv(guest, base)
	cmd := exec.Command(argv[0], argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatal(err)
		}
		return ee.ExitCode(), stdout.String(), stderr.String()
	}
	return 0, stdout.String(), stderr.String()
}

func TestExportRoundTrip(t *testing.T) {
	needGit(t)
	top, _, second := newRepo(t)
	// Start from a clean host so the patch holds only what the guest did.
	gitT(t, top, "checkout", "--", "a.txt")
	guest := filepath.Join(t.TempDir(), "proj")
	if _, code, out := unpack(t, top, guest, "", false, Options{}); code != 0 {
		t.Fatalf("sync exited %d: %s", code, out)
	}
	// In the guest: one commit, one uncommitted change, one untracked file,
	// one ignored file, a deletion and a new executable.
	write(t, guest, "a.txt", "committed in guest\n")
	gitT(t, guest, "commit", "-q", "-am", "guest change")
	write(t, guest, "src/b.sh", "#!/bin/sh\necho changed\n")
	write(t, guest, "new/untracked.txt", "new file\n")
	write(t, guest, "run.sh", "#!/bin/sh\n")
	if err := os.Chmod(filepath.Join(guest, "run.sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, guest, "out.log", "ignored\n")
	if err := os.Remove(filepath.Join(guest, "old.txt")); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, guest)

	code, patch, stderr := export(t, guest, second)
	if code != 0 {
		t.Fatalf("export exited %d: %s", code, stderr)
	}
	if after := snapshot(t, guest); after != before {
		t.Errorf("export changed the guest repository")
	}
	if strings.Contains(patch, "out.log") {
		t.Errorf("the patch carries an ignored file:\n%s", patch)
	}
	// The patch applies to the host at the base commit and gives the
	// guest's tree (ignored files aside).
	pf := filepath.Join(t.TempDir(), "ws.patch")
	if err := os.WriteFile(pf, []byte(patch), 0o644); err != nil {
		t.Fatal(err)
	}
	gitT(t, top, "apply", "--check", pf)
	gitT(t, top, "apply", pf)
	if err := os.Remove(filepath.Join(guest, "out.log")); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"notes.txt", "build.log"} { // the host's own untracked and ignored files
		if err := os.Remove(filepath.Join(top, f)); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := tree(t, top), tree(t, guest); got != want {
		t.Errorf("host after apply:\n%s\nguest:\n%s", got, want)
	}

	// Against the guest's own HEAD: the uncommitted work only.
	if code, patch, stderr := export(t, guest, gitT(t, guest, "rev-parse", "HEAD")); code != 0 || !strings.Contains(patch, "src/b.sh") || strings.Contains(patch, "committed in guest") {
		t.Errorf("export against the guest HEAD: exit %d, patch %q, stderr %q", code, patch, stderr)
	}
}

func TestExportRefusals(t *testing.T) {
	needGit(t)
	top, first, _ := newRepo(t)
	guest := filepath.Join(t.TempDir(), "proj")
	if _, code, out := unpack(t, top, guest, "", false, Options{}); code != 0 {
		t.Fatalf("sync exited %d: %s", code, out)
	}
	// first is older than the copied commit, so the shallow guest repo
	// does not have it.
	code, _, stderr := export(t, guest, first)
	err := ExportError("vm1", guest, first, code, stderr)
	if err == nil || !strings.Contains(err.Error(), "is not in the guest repository") {
		t.Errorf("export against a missing base: exit %d, error %v", code, err)
	}
	plain := t.TempDir()
	code, _, stderr = export(t, plain, first)
	if err := ExportError("vm1", plain, first, code, stderr); err == nil || !strings.Contains(err.Error(), "not a git repository") {
		t.Errorf("export from a plain directory: exit %d, error %v", code, err)
	}
}

func TestResyncProtectsGuestCommits(t *testing.T) {
	needGit(t)
	top, _, second := newRepo(t)
	guest := filepath.Join(t.TempDir(), "proj")
	if _, code, out := unpack(t, top, guest, "", false, Options{}); code != 0 {
		t.Fatalf("sync exited %d: %s", code, out)
	}
	// An unchanged guest re-syncs freely.
	if _, code, out := unpack(t, top, guest, second, false, Options{}); code != 0 {
		t.Fatalf("re-sync of an unchanged guest exited %d: %s", code, out)
	}
	write(t, guest, "a.txt", "guest work\n")
	gitT(t, guest, "commit", "-q", "-am", "guest work")
	guestHead := gitT(t, guest, "rev-parse", "HEAD")
	_, code, out := unpack(t, top, guest, second, false, Options{})
	err := SyncError("vm1", "/root/proj", second, code, out)
	if err == nil || !strings.Contains(err.Error(), guestHead[:12]) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("re-sync over a guest commit: exit %d, error %v", code, err)
	}
	if got := gitT(t, guest, "rev-parse", "HEAD"); got != guestHead {
		t.Errorf("the refused re-sync moved the guest HEAD to %s", got)
	}
	if _, code, out := unpack(t, top, guest, second, true, Options{}); code != 0 {
		t.Fatalf("forced re-sync exited %d: %s", code, out)
	}
	if got := gitT(t, guest, "rev-parse", "HEAD"); got != second {
		t.Errorf("after a forced re-sync the guest HEAD is %s, want %s", got, second)
	}
}
