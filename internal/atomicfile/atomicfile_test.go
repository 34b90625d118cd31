package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteReplacesWholeFileAndLeavesNoTemp(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "sub", "f")
	if err := Write(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Write(p, []byte("two"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil || string(got) != "two" {
		t.Fatalf("read back %q, %v", got, err)
	}
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v, %v", st.Mode(), err)
	}
	ents, err := os.ReadDir(filepath.Dir(p))
	if err != nil || len(ents) != 1 {
		t.Fatalf("directory holds %v (%v), want only f", ents, err)
	}
}

// TestWriteFailureKeepsTheOldFile: the write of the new contents fails
// after half of them reached the disk (a full filesystem, say); the old file
// must still read whole and no temporary file may be left.
func TestWriteFailureKeepsTheOldFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := Write(p, []byte("old contents"), 0o600); err != nil {
		t.Fatal(err)
	}
	errFull := errors.New("no space left")
	orig := writeData
	t.Cleanup(func() { writeData = orig })
	writeData = func(f *os.File, b []byte) (int, error) {
		n, err := f.Write(b[:len(b)/2])
		if err != nil {
			return n, err
		}
		return n, errFull
	}
	err := Write(p, []byte("the new contents"), 0o644)
	if !errors.Is(err, errFull) {
		t.Fatalf("write with a failing writer: %v, want %v", err, errFull)
	}
	if got, err := os.ReadFile(p); err != nil || string(got) != "old contents" {
		t.Fatalf("old file now %q (%v)", got, err)
	}
	if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("old file's mode now %v (%v)", st.Mode(), err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != 1 {
		t.Fatalf("directory holds %v (%v), want only f", ents, err)
	}
}
