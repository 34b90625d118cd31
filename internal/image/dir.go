package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// ImportDir builds the ext4 image out from the tree at dir. The walk never
// follows symlinks (they are copied as symlinks); owners, modes and device
// numbers come from lstat; files sharing an inode become hardlinks.
// Sockets are skipped. The same path rules as ImportTar apply.
func ImportDir(ctx context.Context, dir, out string, opts BuildOptions) (*Result, error) {
	st, err := os.Lstat(dir)
	if err != nil {
		return nil, fmt.Errorf("open source tree: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("source tree %s: not a directory", dir)
	}
	return withStaging(out, &opts, func(s *stager) (*Result, error) {
		opts.progress("copying rootfs tree")
		if err := stageDir(ctx, s, dir); err != nil {
			return nil, err
		}
		return buildExt4(ctx, s, out, &opts)
	})
}

type inodeKey struct{ dev, ino uint64 }

// walkTree calls fn for every entry under root with its manifest entry
// filled from lstat (Path, Kind, owner, mode, device, symlink target).
// A regular file whose inode was seen before comes as a KindHardlink to
// the first path. Sockets and unknown types are passed with Kind 0.
func walkTree(ctx context.Context, root string, fn func(e *Entry, hostPath string) error) error {
	firstPath := map[inodeKey]string{}
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("walk source tree: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		relOS, err := filepath.Rel(root, p)
		if err != nil {
			return fmt.Errorf("walk source tree: %w", err)
		}
		rel := ""
		if relOS != "." {
			if rel, err = cleanName(filepath.ToSlash(relOS)); err != nil {
				return fmt.Errorf("source entry %q: %w", relOS, err)
			}
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return fmt.Errorf("stat %q: %w", rel, err)
		}
		e := &Entry{
			Path:    rel,
			UID:     st.Uid,
			GID:     st.Gid,
			Mode:    st.Mode & 0o7777,
			ModTime: time.Unix(st.Mtim.Unix()),
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			e.Kind = KindDir
		case unix.S_IFREG:
			e.Kind = KindFile
			e.Size = st.Size
			if st.Nlink > 1 {
				k := inodeKey{uint64(st.Dev), st.Ino}
				if first, ok := firstPath[k]; ok {
					e.Kind, e.Target = KindHardlink, first
				} else {
					firstPath[k] = rel
				}
			}
		case unix.S_IFLNK:
			e.Kind = KindSymlink
			if e.Target, err = os.Readlink(p); err != nil {
				return fmt.Errorf("read symlink %q: %w", rel, err)
			}
		case unix.S_IFCHR:
			e.Kind, e.Major, e.Minor = KindChar, unix.Major(st.Rdev), unix.Minor(st.Rdev)
		case unix.S_IFBLK:
			e.Kind, e.Major, e.Minor = KindBlock, unix.Major(st.Rdev), unix.Minor(st.Rdev)
		case unix.S_IFIFO:
			e.Kind = KindFifo
		}
		return fn(e, p)
	})
}

func stageDir(ctx context.Context, s *stager, root string) error {
	return walkTree(ctx, root, func(e *Entry, hostPath string) error {
		if e.Kind == 0 {
			s.skip(e.Path, 0, "sockets and other special files are not copied")
			return nil
		}
		if e.Kind == KindHardlink && s.wasSkipped(e.Target) {
			s.skip(e.Path, KindHardlink, fmt.Sprintf("hardlink target %q was skipped", e.Target))
			return nil
		}
		var content io.Reader
		if e.Kind == KindFile {
			f, err := os.OpenFile(hostPath, os.O_RDONLY|unix.O_NOFOLLOW, 0)
			if err != nil {
				return fmt.Errorf("open %q: %w", e.Path, err)
			}
			defer f.Close()
			content = f
		}
		if err := s.add(e, content); err != nil {
			return fmt.Errorf("source entry %q: %w", e.Path, err)
		}
		return nil
	})
}

// adopt records an already populated staging tree (debootstrap's output)
// in the manifest as it is, so it goes through the same build and
// manifest pass as an import.
func (s *stager) adopt(ctx context.Context) error {
	return walkTree(ctx, s.root, func(e *Entry, hostPath string) error {
		switch {
		case e.Kind == 0:
			if err := os.Remove(hostPath); err != nil {
				return fmt.Errorf("remove socket %q: %w", e.Path, err)
			}
			s.skip(e.Path, 0, "sockets and other special files are not copied")
			return nil
		case e.Path == "":
			r := s.entries[""]
			r.UID, r.GID, r.Mode, r.ModTime = e.UID, e.GID, e.Mode, e.ModTime
			return nil
		case e.Kind == KindFile:
			sum, err := hashFile(hostPath)
			if err != nil {
				return err
			}
			e.digest = sum
		case e.Kind == KindHardlink:
			t := s.entries[e.Target]
			e.digest = t.digest
			s.links[e.Target]++
		}
		if why := inexpressible(e.Path); why != "" {
			return fmt.Errorf("staged entry %q: %s", e.Path, why)
		}
		// Times are already right in the tree: leave them alone.
		e.ModTime = time.Time{}
		s.entries[e.Path] = e
		return nil
	})
}

func hashFile(p string) (string, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return "", fmt.Errorf("hash %s: %w", p, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
