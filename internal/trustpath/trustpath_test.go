package trustpath

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestBinary: the caller's own files stand in for root's (trusted), so the
// check of each property runs without root.
func TestBinary(t *testing.T) {
	dir := t.TempDir()
	me := os.Getuid()
	for _, tc := range []struct {
		name   string
		mode   os.FileMode
		unsafe bool
	}{
		{"plain", 0o755, false},
		{"setuid", 0o755 | os.ModeSetuid, true},
		{"setgid", 0o755 | os.ModeSetgid, true},
		{"group writable", 0o775, true},
		{"world writable", 0o757, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name)
			if err := os.WriteFile(p, []byte("#!/bin/true\n"), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, tc.mode); err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(p)
			if err != nil || fi.Mode() != tc.mode {
				t.Fatalf("mode %v, want %v (%v)", fi.Mode(), tc.mode, err)
			}
			err = Binary(p, me)
			if got := errors.Is(err, ErrUnsafe); got != tc.unsafe {
				t.Fatalf("Binary(%s): %v, want unsafe=%v", tc.name, err, tc.unsafe)
			}
			if !tc.unsafe && err != nil {
				t.Fatal(err)
			}
		})
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(filepath.Join(dir, "plain"), link); err != nil {
		t.Fatal(err)
	}
	if err := Binary(link, me); !errors.Is(err, ErrUnsafe) {
		t.Errorf("a symlink: %v, want refused", err)
	}
}
