package image

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCopyDevice(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	data := make([]byte, 5*copyChunk+512) // a partial last chunk
	copy(data[copyChunk+7:], "hello")
	copy(data[len(data)-3:], "end")
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	dst := filepath.Join(dir, "dst")
	if err := CopyDevice(in, dst); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the copy differs from its source")
	}
	var st unix.Stat_t
	if err := unix.Stat(dst, &st); err != nil {
		t.Fatal(err)
	}
	// Two chunks hold data; the zero ones are holes.
	if alloc := st.Blocks * 512; alloc > 3*copyChunk {
		t.Errorf("copy allocates %d bytes, want the zero chunks left as holes", alloc)
	}
	empty, err := os.Create(filepath.Join(dir, "empty"))
	if err != nil {
		t.Fatal(err)
	}
	defer empty.Close()
	if err := CopyDevice(empty, filepath.Join(dir, "out")); err == nil {
		t.Error("an empty source was copied")
	}
	if _, err := os.Stat(filepath.Join(dir, "out")); !os.IsNotExist(err) {
		t.Errorf("a failed copy left its output: %v", err)
	}
}
