package image

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func allocated(t *testing.T, p string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func TestCloneFileSparse(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	const size = 64 << 20
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	// Data at the start, the middle and the very end; holes between.
	for _, off := range []int64{0, 32 << 20, size - 4096} {
		if _, err := f.WriteAt(bytes.Repeat([]byte{0xab}, 4096), off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	if allocated(t, src) > 1<<20 {
		t.Skip("this filesystem does not keep holes")
	}
	dst := filepath.Join(dir, "dst")
	if err := CloneFile(src, dst); err != nil {
		t.Fatalf("CloneFile: %v", err)
	}
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(dst)
	if !bytes.Equal(a, b) {
		t.Fatal("clone content differs")
	}
	if got := allocated(t, dst); got > 1<<20 {
		t.Errorf("clone allocates %d bytes, want it sparse", got)
	}
	// A trailing hole must survive too.
	src2 := filepath.Join(dir, "tail")
	if err := os.WriteFile(src2, []byte("head"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(src2, 8<<20); err != nil {
		t.Fatal(err)
	}
	if err := CloneFile(src2, src2+".clone"); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(src2 + ".clone"); st.Size() != 8<<20 {
		t.Errorf("clone size %d", st.Size())
	}
}

func TestSparseCopyFallback(t *testing.T) {
	dir := t.TempDir()
	src, err := os.Create(filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.WriteAt([]byte("data"), 10<<20); err != nil {
		t.Fatal(err)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	in, _ := os.Open(filepath.Join(dir, "s"))
	defer in.Close()
	out, _ := os.Create(filepath.Join(dir, "d"))
	if err := sparseCopy(out, in, 10<<20+4); err != nil {
		t.Fatal(err)
	}
	out.Close()
	b, _ := os.ReadFile(filepath.Join(dir, "d"))
	if len(b) != 10<<20+4 || string(b[10<<20:]) != "data" {
		t.Fatalf("bad copy, len %d", len(b))
	}
	if allocated(t, filepath.Join(dir, "d")) > 1<<20 {
		t.Error("fallback copy is not sparse")
	}
}

func TestCloneFileErrors(t *testing.T) {
	dir := t.TempDir()
	if err := CloneFile(filepath.Join(dir, "missing"), filepath.Join(dir, "dst")); err == nil {
		t.Fatal("want an error for a missing source")
	}
	if err := CloneFile(dir, filepath.Join(dir, "dst")); err == nil {
		t.Fatal("want an error for a directory source")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
}

func TestMakeWorkDisk(t *testing.T) {
	needTools(t)
	p := filepath.Join(t.TempDir(), "work.ext4")
	start := time.Now()
	if err := MakeWorkDisk(ctxT(t), p, 8<<30); err != nil {
		t.Fatalf("MakeWorkDisk: %v", err)
	}
	t.Logf("8 GiB work disk in %s, %d MiB allocated", time.Since(start).Round(time.Millisecond), allocated(t, p)>>20)
	st, err := os.Stat(p)
	if err != nil || st.Size() != 8<<30 {
		t.Fatalf("work disk size: %v %v", st, err)
	}
	requireClean(t, p)
	if got := statInode(t, p, "/"); got.UID != 0 || got.Mode != 0o700 {
		t.Errorf("work disk root: %+v", got)
	}
	if err := MakeWorkDisk(ctxT(t), p+"2", 1024); err == nil {
		t.Error("want an error for a tiny disk")
	}
}
