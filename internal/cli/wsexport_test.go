package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// bigPatch writes a valid patch of about n bytes to w in 32 KiB writes, as
// exec frames arrive, calling after(written) after each write.
func bigPatch(w io.Writer, n int, after func(int)) error {
	head := "diff --git a/big.txt b/big.txt\nnew file mode 100644\nindex 0000000..1111111\n--- /dev/null\n+++ b/big.txt\n"
	line := "+" + strings.Repeat("x", 1023) + "\n"
	lines := n / len(line)
	body := head + fmt.Sprintf("@@ -0,0 +1,%d @@\n", lines) + strings.Repeat(line, lines)
	written := 0
	for p := []byte(body); len(p) > 0; {
		k := min(len(p), 32<<10)
		if _, err := w.Write(p[:k]); err != nil {
			return err
		}
		written += k
		p = p[k:]
		after(written)
	}
	return nil
}

// TestWriteExportStreams: the patch reaches its file as it arrives; the CLI
// holds none of it in memory, however large.
func TestWriteExportStreams(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "ws.patch")
	onDisk := func() int64 {
		ms, _ := filepath.Glob(filepath.Join(dir, ".banger-export-*"))
		if len(ms) != 1 {
			t.Fatalf("temporary patch files: %v", ms)
		}
		st, err := os.Stat(ms[0])
		if err != nil {
			t.Fatal(err)
		}
		return st.Size()
	}
	var lag int64
	_, err := writeExport("export", out, io.Discard, io.Discard, 1<<30, func(stdout io.Writer, _ *guestOutput) error {
		return bigPatch(stdout, 64<<20, func(written int) {
			lag = max(lag, int64(written)-onDisk())
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	// Everything written has reached the file by the time Write returns.
	if lag > 0 {
		t.Errorf("up to %d bytes of the patch were held before reaching the file", lag)
	}
	if st, err := os.Stat(out); err != nil || st.Size() < 63<<20 {
		t.Errorf("output: %v, %v", st, err)
	}
}

func TestWriteExportRefused(t *testing.T) {
	for _, toStdout := range []bool{false, true} {
		t.Run(fmt.Sprintf("stdout=%v", toStdout), func(t *testing.T) {
			dir := t.TempDir()
			t.Setenv("TMPDIR", dir)
			out := filepath.Join(dir, "ws.patch")
			if err := os.WriteFile(out, []byte("the user's old patch\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			target := out
			if toStdout {
				target = "-"
			}
			var stdout, diag bytes.Buffer
			_, err := writeExport("export from vm", target, &stdout, &diag, 1<<30, func(w io.Writer, _ *guestOutput) error {
				if err := bigPatch(w, 1<<20, func(int) {}); err != nil {
					return err
				}
				_, _ = io.WriteString(w, "diff --git a/.git/hooks/pre-commit b/.git/hooks/pre-commit\nnew file mode 100755\n")
				return nil
			})
			if err == nil || !strings.Contains(err.Error(), `".git/hooks/pre-commit"`) || !strings.Contains(err.Error(), "nothing was written") {
				t.Fatalf("writeExport = %v, want a refusal naming .git/hooks/pre-commit", err)
			}
			if b, _ := os.ReadFile(out); string(b) != "the user's old patch\n" {
				t.Errorf("output file changed to %d bytes", len(b))
			}
			if stdout.Len() != 0 || diag.Len() != 0 {
				t.Errorf("wrote %d bytes to stdout and %q to stderr", stdout.Len(), diag.String())
			}
			if ms, _ := filepath.Glob(filepath.Join(dir, ".banger-export-*")); len(ms) != 0 {
				t.Errorf("left behind: %v", ms)
			}
		})
	}
}

func TestWriteExportReport(t *testing.T) {
	patch := "diff --git a/run.sh b/run.sh\nnew file mode 100755\nindex 0000000..1111111\n" +
		"diff --git \"a/.vscode/tasks.json\" \"b/.vscode/tasks.json\"\nnew file mode 100644\nindex 0000000..1111111\n" +
		"diff --git \"a/x\\033]0;owned\\007.sh\" \"b/x\\033]0;owned\\007.sh\"\nnew file mode 100755\nindex 0000000..1111111\n"
	var stdout, diag bytes.Buffer
	rep, err := writeExport("export", "-", &stdout, &diag, 1<<30, func(w io.Writer, _ *guestOutput) error {
		_, err := io.WriteString(w, patch)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if stdout.String() != patch {
		t.Errorf("stdout %q, want the patch", stdout.String())
	}
	d := diag.String()
	for _, want := range []string{"makes 2 file(s) executable", "  run.sh\n", ".vscode/tasks.json (VS Code tasks"} {
		if !strings.Contains(d, want) {
			t.Errorf("summary %q does not say %q", d, want)
		}
	}
	if strings.ContainsAny(d, "\033\007") {
		t.Errorf("summary carries the guest's control characters: %q", d)
	}
	if len(rep.Executable) != 2 || len(rep.AutoRun) != 1 {
		t.Errorf("report %+v", rep)
	}
}

// TestWriteExportBounds: the guest's stderr is kept only up to a bound, and
// a patch past --max-size is refused with nothing written.
func TestWriteExportBounds(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "ws.patch")
	var kept int
	_, err := writeExport("export", out, io.Discard, io.Discard, 1<<30, func(_ io.Writer, stderr *guestOutput) error {
		chunk := bytes.Repeat([]byte("e"), 64<<10)
		for range 160 { // 10 MiB
			_, _ = stderr.Write(chunk)
		}
		kept = stderr.buf.Len()
		return errors.New("exited 1")
	})
	if err == nil || kept > maxGuestMessage {
		t.Errorf("err %v; %d bytes of stderr kept, want at most %d", err, kept, maxGuestMessage)
	}
	_, err = writeExport("export", out, io.Discard, io.Discard, 1<<20, func(w io.Writer, _ *guestOutput) error {
		return bigPatch(w, 4<<20, func(int) {})
	})
	if err == nil || !strings.Contains(err.Error(), "larger than 1M") {
		t.Errorf("a 4 MiB patch with --max-size 1M: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
}
