package image

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
	"testing"
)

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func TestImportDir(t *testing.T) {
	needTools(t)
	src := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "etc"), 0o755))
	must(os.MkdirAll(filepath.Join(src, "bin"), 0o755))
	must(os.WriteFile(filepath.Join(src, "etc", "motd"), []byte("hi\n"), 0o644))
	must(os.WriteFile(filepath.Join(src, "bin", "tool"), []byte("tool"), 0o755))
	must(unix.Chmod(filepath.Join(src, "bin", "tool"), 0o4755))
	must(os.Link(filepath.Join(src, "bin", "tool"), filepath.Join(src, "bin", "tool2")))
	must(os.Symlink("/etc/motd", filepath.Join(src, "motd")))
	// A symlink to a directory outside: copied as a link, never followed.
	outside := t.TempDir()
	must(os.WriteFile(filepath.Join(outside, "secret"), []byte("x"), 0o600))
	must(os.Symlink(outside, filepath.Join(src, "out")))
	must(syscall.Mkfifo(filepath.Join(src, "fifo"), 0o640))
	must(os.Chmod(src, 0o755))

	img := filepath.Join(t.TempDir(), "dir.ext4")
	res, err := ImportDir(ctxT(t), src, img, BuildOptions{})
	if err != nil {
		t.Fatalf("ImportDir: %v", err)
	}
	requireClean(t, img)
	uid, gid := uint32(os.Getuid()), uint32(os.Getgid())
	if got := statInode(t, img, "/bin/tool"); got.Mode != 0o4755 || got.Links != 2 || got.UID != uid || got.GID != gid {
		t.Errorf("/bin/tool: %+v", got)
	}
	if got := statInode(t, img, "/out"); got.Type != "symlink" || got.LinkTarget != outside {
		t.Errorf("/out: %+v", got)
	}
	if got := statInode(t, img, "/fifo"); got.Type != "FIFO" || got.Mode != 0o640 {
		t.Errorf("/fifo: %+v", got)
	}
	want := Counts{Dirs: 3, Files: 2, Symlinks: 2, Hardlinks: 1, Fifos: 1}
	if res.Entries != want {
		t.Errorf("counts %+v, want %+v", res.Entries, want)
	}
}

func TestImportDirNotADir(t *testing.T) {
	f := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ImportDir(ctxT(t), f, f+".ext4", BuildOptions{}); err == nil || !contains(err.Error(), "not a directory") {
		t.Fatalf("err = %v", err)
	}
}
