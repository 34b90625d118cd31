// Package trustpath owns the one rule for paths that root acts on: a path
// is trusted when no user but root could have put something else there.
// The root helper enforces it before running a binary; bangerd applies the
// same check ahead of time to say why a setup cannot work. Every check
// uses Lstat, so a symlink is seen and refused rather than followed.
package trustpath

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// ErrUnsafe marks a path that is not root's alone (a symlink, a file or
// directory another user owns or may write).
var ErrUnsafe = errors.New("refused")

// Binary checks a binary root will run: a clean absolute path to a
// regular file (not a symlink), owned by root (or trusted, for tests),
// executable, neither setuid nor setgid (root never needs the bit, and a
// pinned setuid binary is one more way up for whoever runs it next), not
// writable by group or others, in directories that are
// likewise root's all the way up (a root-owned sticky directory such as
// /tmp is accepted: no one else can replace root's entries in it).
func Binary(path string, trusted int) error {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return fmt.Errorf("binary %q: want a clean absolute path", path)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("check binary: %w", err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return fmt.Errorf("binary %s is a symlink; give the path it resolves to: %w", path, ErrUnsafe)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("binary %s is not a regular file (%v): %w", path, fi.Mode().Type(), ErrUnsafe)
	}
	if fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid) != 0 {
		return fmt.Errorf("binary %s is setuid or setgid (mode %v): root runs no such binary for banger: %w", path, fi.Mode(), ErrUnsafe)
	}
	if err := ownedBy(path, fi, trusted); err != nil {
		return err
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("binary %s is writable by group or others (mode %v): %w", path, fi.Mode().Perm(), ErrUnsafe)
	}
	if fi.Mode().Perm()&0o100 == 0 {
		return fmt.Errorf("binary %s is not executable (mode %v)", path, fi.Mode().Perm())
	}
	if err := DirChain(filepath.Dir(path), trusted); err != nil {
		return fmt.Errorf("binary %s: %w", path, err)
	}
	return nil
}

// DirChain checks dir and every directory above it: real directories, owned
// by root (or trusted), not writable by group or others unless root-owned
// and sticky.
func DirChain(dir string, trusted int) error {
	p := "/"
	for _, c := range append([]string{""}, strings.Split(strings.TrimPrefix(dir, "/"), "/")...) {
		p = filepath.Join(p, c)
		fi, err := os.Lstat(p)
		if err != nil {
			return fmt.Errorf("check %s: %w", p, err)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return fmt.Errorf("%s is a symlink; give the path it resolves to: %w", p, ErrUnsafe)
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory: %w", p, ErrUnsafe)
		}
		if err := ownedBy(p, fi, trusted); err != nil {
			return err
		}
		perm := fi.Mode().Perm()
		if perm&0o022 != 0 && (fi.Mode()&fs.ModeSticky == 0 || Owner(fi) != 0) {
			return fmt.Errorf("%s is writable by group or others (mode %v): %w", p, perm, ErrUnsafe)
		}
	}
	return nil
}

// Owner is the uid owning fi, or -1.
func Owner(fi fs.FileInfo) int {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid)
	}
	return -1
}

func ownedBy(p string, fi fs.FileInfo, trusted int) error {
	if uid := Owner(fi); uid != 0 && uid != trusted {
		return fmt.Errorf("%s is owned by uid %d, not root: %w", p, uid, ErrUnsafe)
	}
	return nil
}
