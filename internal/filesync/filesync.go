// Package filesync resolves the [[file_sync]] entries of the owner's config
// into the files to copy into a guest. Sources are locked to the owner's
// home: a host path must resolve inside it, and a symlink inside a synced
// directory that points outside that directory is skipped with a warning,
// so nothing outside the home is ever read.
package filesync

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Entry is one [[file_sync]] table.
type Entry struct {
	Host  string `toml:"host"`
	Guest string `toml:"guest"`
	Mode  string `toml:"mode"` // octal, e.g. "0600"; files only
}

// File is one file to write in the guest.
type File struct {
	Guest string
	Mode  uint32
	Data  []byte
}

// maxFile bounds one synced file: file_sync is for dotfiles and keys, not
// bulk data.
const maxFile = 16 << 20

// Validate checks an entry's shape without touching the filesystem.
func (e Entry) Validate() error {
	if e.Host == "" || e.Guest == "" {
		return fmt.Errorf("file_sync: host and guest are both required (got host %q, guest %q)", e.Host, e.Guest)
	}
	for _, p := range []string{e.Host, e.Guest} {
		if strings.HasPrefix(p, "~") && !strings.HasPrefix(p, "~/") {
			return fmt.Errorf("file_sync %q: ~user paths are not supported", p)
		}
		if !strings.HasPrefix(p, "~/") && !filepath.IsAbs(p) {
			return fmt.Errorf("file_sync %q: want an absolute or ~/ path", p)
		}
		for _, part := range strings.Split(p, "/") {
			if part == ".." {
				return fmt.Errorf("file_sync %q: .. is not allowed", p)
			}
		}
	}
	if !strings.HasPrefix(e.Guest, "~/") && !strings.HasPrefix(e.Guest, "/root/") {
		return fmt.Errorf("file_sync guest %q: must be under ~/ or /root/", e.Guest)
	}
	if e.Mode != "" {
		if _, err := parseMode(e.Mode); err != nil {
			return err
		}
	}
	return nil
}

func parseMode(s string) (uint32, error) {
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil || m > 0o7777 {
		return 0, fmt.Errorf("file_sync mode %q: want an octal mode such as 0600", s)
	}
	return uint32(m), nil
}

// Resolve turns e into files, with the owner's home at home. Warnings (a
// missing host path, a skipped symlink) do not fail the sync.
func Resolve(e Entry, home string) ([]File, []string, error) {
	if err := e.Validate(); err != nil {
		return nil, nil, err
	}
	home, err := filepath.EvalSymlinks(home)
	if err != nil {
		return nil, nil, fmt.Errorf("resolve home: %w", err)
	}
	host := expand(e.Host, home)
	guest := e.Guest
	if strings.HasPrefix(guest, "~/") {
		guest = "/root/" + strings.TrimPrefix(guest, "~/")
	}
	resolved, err := filepath.EvalSymlinks(host)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, []string{fmt.Sprintf("file_sync: %s does not exist; skipped", e.Host)}, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("file_sync %s: %w", e.Host, err)
	}
	if !within(resolved, home) {
		return nil, nil, fmt.Errorf("file_sync %s: resolves to %s, outside your home %s", e.Host, resolved, home)
	}
	st, err := os.Stat(resolved)
	if err != nil {
		return nil, nil, fmt.Errorf("file_sync %s: %w", e.Host, err)
	}
	if !st.IsDir() {
		mode := uint32(0o600)
		if e.Mode != "" {
			mode, _ = parseMode(e.Mode)
		}
		data, err := readNoFollow(resolved)
		if err != nil {
			return nil, nil, fmt.Errorf("file_sync %s: %w", e.Host, err)
		}
		return []File{{Guest: guest, Mode: mode, Data: data}}, nil, nil
	}
	var files []File
	var warnings []string
	err = filepath.WalkDir(resolved, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(resolved, p)
		target := filepath.Join(guest, rel)
		switch {
		case d.IsDir():
			return nil
		case d.Type()&fs.ModeSymlink != 0:
			// Follow a symlink only if it stays inside the synced tree.
			dest, err := filepath.EvalSymlinks(p)
			if err != nil || !within(dest, resolved) {
				warnings = append(warnings, fmt.Sprintf("file_sync: %s points outside %s; skipped", p, e.Host))
				return nil
			}
			dst, err := os.Stat(dest)
			if err != nil || !dst.Mode().IsRegular() {
				warnings = append(warnings, fmt.Sprintf("file_sync: %s is not a regular file; skipped", p))
				return nil
			}
			data, err := readNoFollow(dest)
			if err != nil {
				return err
			}
			files = append(files, File{Guest: target, Mode: uint32(dst.Mode().Perm()), Data: data})
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			data, err := readNoFollow(p)
			if err != nil {
				return err
			}
			files = append(files, File{Guest: target, Mode: uint32(info.Mode().Perm()), Data: data})
		default:
			warnings = append(warnings, fmt.Sprintf("file_sync: %s is not a regular file; skipped", p))
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("file_sync %s: %w", e.Host, err)
	}
	return files, warnings, nil
}

func expand(p, home string) string {
	if strings.HasPrefix(p, "~/") {
		return filepath.Join(home, strings.TrimPrefix(p, "~/"))
	}
	return p
}

// within reports whether p is dir or below it (both already resolved).
func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../") && !filepath.IsAbs(rel)
}

// readNoFollow reads a regular file without following a final symlink, so
// a swap between the check and the read cannot redirect it.
func readNoFollow(p string) ([]byte, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", p, err)
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", p)
	}
	if st.Size() > maxFile {
		return nil, fmt.Errorf("%s is larger than %d bytes", p, maxFile)
	}
	buf := make([]byte, st.Size())
	if _, err := f.ReadAt(buf, 0); err != nil && st.Size() > 0 {
		return nil, err
	}
	return buf, nil
}
