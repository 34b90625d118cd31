package image

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Kind is the type of a manifest entry.
type Kind uint8

// Entry kinds. Hardlink entries share the inode of an earlier regular file.
const (
	KindDir Kind = iota + 1
	KindFile
	KindSymlink
	KindHardlink
	KindChar
	KindBlock
	KindFifo
)

func (k Kind) String() string {
	switch k {
	case KindDir:
		return "dir"
	case KindFile:
		return "file"
	case KindSymlink:
		return "symlink"
	case KindHardlink:
		return "hardlink"
	case KindChar:
		return "char"
	case KindBlock:
		return "block"
	case KindFifo:
		return "fifo"
	}
	return "unknown"
}

// typeBits is the S_IF* part of i_mode. debugfs's "mode" field is the
// whole i_mode, so a bare permission value would turn an inode into a
// typeless one and corrupt the filesystem.
func (k Kind) typeBits() uint32 {
	switch k {
	case KindDir:
		return unix.S_IFDIR
	case KindFile, KindHardlink:
		return unix.S_IFREG
	case KindSymlink:
		return unix.S_IFLNK
	case KindChar:
		return unix.S_IFCHR
	case KindBlock:
		return unix.S_IFBLK
	case KindFifo:
		return unix.S_IFIFO
	}
	return 0
}

func (k Kind) isNode() bool { return k == KindChar || k == KindBlock || k == KindFifo }

// Entry is what one path of the image should be, whatever the staging tree
// could hold. Path is relative and slash-separated; "" is the root.
type Entry struct {
	Path         string
	Kind         Kind
	UID, GID     uint32
	Mode         uint32 // permission bits including setuid, setgid and sticky
	Major, Minor uint32
	Target       string // symlink target, or the path a hardlink points to
	Size         int64
	ModTime      time.Time
	Xattrs       map[string][]byte
	digest       string // sha256 of file content, for the content manifest
}

// Counts says how many entries of each kind an image holds.
type Counts struct {
	Dirs, Files, Symlinks, Hardlinks, Devices, Fifos int
}

// Skipped is an entry that was left out of the image, and why.
type Skipped struct {
	Path   string
	Reason string
}

// Result describes a built image.
type Result struct {
	Path   string // the ext4 file
	Size   int64  // its apparent size in bytes
	SHA256 string // hex digest of the ext4 file
	// ManifestDigest is a hex sha256 over the sorted content manifest
	// (paths, types, owners, modes, devices, link targets, file contents).
	// Two builds from the same inputs have the same ManifestDigest even
	// though mkfs makes every ext4 file differ (UUIDs, timestamps).
	ManifestDigest string
	Entries        Counts
	Skipped        []Skipped
}

// stager builds a staging tree plus the manifest of what it should be.
// Invariant: every parent of a staged path is a KindDir entry that the
// stager itself created as a real directory, so nothing it writes can
// leave root.
type stager struct {
	root        string
	entries     map[string]*Entry
	skipped     []Skipped
	skippedDirs map[string]bool
	skippedAt   map[string]bool
	// links counts the hardlinks to each regular file entry, so removing
	// a file only looks for links to re-home when it has some.
	links  map[string]int
	asRoot bool // can chown in staging, which keeps the debugfs pass small
	// budget, when set, bounds what a tar or OCI import unpacks (see
	// limits.go).
	budget *unpackBudget
}

// noChown makes a root process stage like a non-root one, so tests run
// as root still cover the debugfs owner pass.
var noChown = false

func newStager(root string) *stager {
	s := &stager{
		root:        root,
		entries:     map[string]*Entry{},
		skippedDirs: map[string]bool{},
		skippedAt:   map[string]bool{},
		links:       map[string]int{},
		asRoot:      os.Geteuid() == 0 && !noChown,
	}
	s.entries[""] = &Entry{Path: "", Kind: KindDir, Mode: 0o755}
	return s
}

func (s *stager) host(rel string) string {
	if rel == "" {
		return s.root
	}
	return filepath.Join(s.root, filepath.FromSlash(rel))
}

// cleanName turns an archive or walk name into a manifest path. It rejects
// absolute names and any ".." component rather than cleaning them away:
// an archive that tries either is hostile or broken.
func cleanName(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("empty name")
	}
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("absolute path")
	}
	var parts []string
	for _, c := range strings.Split(name, "/") {
		switch c {
		case "", ".":
			continue
		case "..":
			return "", fmt.Errorf("path has a .. component")
		}
		parts = append(parts, c)
	}
	return strings.Join(parts, "/"), nil
}

// inexpressible says why debugfs could not address rel, or "". debugfs
// reads its script a line at a time and quotes with "..." (a doubled quote
// is a literal one), so only line breaks and overlong lines are out of reach.
func inexpressible(rel string) string {
	if strings.ContainsAny(rel, "\n\r") {
		return "name contains a line break, which debugfs cannot address"
	}
	if strings.ContainsRune(rel, 0) {
		return "name contains a NUL byte"
	}
	if len(rel) > 3500 {
		return "path is too long for a debugfs command line"
	}
	return ""
}

// skip records e as left out. Skipping a directory skips what is under it.
func (s *stager) skip(rel string, k Kind, reason string) {
	s.skipped = append(s.skipped, Skipped{Path: rel, Reason: reason})
	s.skippedAt[rel] = true
	if k == KindDir {
		s.skippedDirs[rel] = true
	}
}

// underSkipped reports whether an ancestor of rel was skipped.
func (s *stager) underSkipped(rel string) (string, bool) {
	for p := path.Dir(rel); p != "." && p != "/"; p = path.Dir(p) {
		if s.skippedDirs[p] {
			return p, true
		}
	}
	return "", false
}

// ensureParent makes sure every ancestor of rel is a staged directory,
// creating missing ones (archives often omit directory entries) as
// root-owned 0755. An ancestor that is a symlink or any other non-directory
// is an error: writing through it could land outside the tree.
func (s *stager) ensureParent(rel string) error {
	dir := path.Dir(rel)
	if dir == "." {
		return nil
	}
	if err := s.ensureParent(dir); err != nil {
		return err
	}
	if e, ok := s.entries[dir]; ok {
		if e.Kind == KindSymlink {
			return fmt.Errorf("parent %q is a symlink", dir)
		}
		if e.Kind != KindDir {
			return fmt.Errorf("parent %q is a %s, not a directory", dir, e.Kind)
		}
		return nil
	}
	return s.create(&Entry{Path: dir, Kind: KindDir, Mode: 0o755}, nil)
}

// checkHostParent is a second line of defence under the manifest check:
// the real parent in staging must be a directory, not a symlink.
func (s *stager) checkHostParent(rel string) error {
	p := s.host(path.Dir(rel))
	if path.Dir(rel) == "." {
		p = s.root
	}
	st, err := os.Lstat(p)
	if err != nil {
		return fmt.Errorf("check parent: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("parent %q in staging is not a directory", path.Dir(rel))
	}
	return nil
}

// add stages e (content is read for regular files). It enforces the path
// rules; a violation is returned as an error that fails the import.
func (s *stager) add(e *Entry, content io.Reader) error {
	if e.Path == "" {
		if e.Kind != KindDir {
			return fmt.Errorf("the root must be a directory, not a %s", e.Kind)
		}
		r := s.entries[""]
		r.UID, r.GID, r.Mode, r.ModTime = e.UID, e.GID, e.Mode, e.ModTime
		return nil
	}
	if p, ok := s.underSkipped(e.Path); ok {
		s.skip(e.Path, e.Kind, fmt.Sprintf("parent %q was skipped", p))
		return nil
	}
	if why := inexpressible(e.Path); why != "" {
		s.skip(e.Path, e.Kind, why)
		return nil
	}
	if err := s.ensureParent(e.Path); err != nil {
		return err
	}
	if old, ok := s.entries[e.Path]; ok {
		if old.Kind == KindDir && e.Kind == KindDir {
			old.UID, old.GID, old.Mode, old.ModTime, old.Xattrs = e.UID, e.GID, e.Mode, e.ModTime, e.Xattrs
			return s.applyHostMeta(old)
		}
		// A later entry replaces an earlier one, as extracting would.
		if err := s.remove(old); err != nil {
			return err
		}
	}
	return s.create(e, content)
}

// remove deletes old, and everything under it if it is a directory, from
// staging and the manifest.
func (s *stager) remove(old *Entry) error {
	if err := os.RemoveAll(s.host(old.Path)); err != nil {
		return fmt.Errorf("remove %q: %w", old.Path, err)
	}
	gone := []*Entry{old}
	delete(s.entries, old.Path)
	if old.Kind == KindDir {
		prefix := old.Path + "/"
		for p, e := range s.entries {
			if strings.HasPrefix(p, prefix) {
				gone = append(gone, e)
				delete(s.entries, p)
			}
		}
	}
	s.relink(gone)
	return nil
}

// relink keeps the manifest true to staging after gone were removed. A
// removed regular file's inode lives on under its remaining hardlinks, with
// the content it had: the first remaining link becomes the regular file
// (taking over the xattrs, which the manifest keeps on the file entry
// only) and the others point at it.
func (s *stager) relink(gone []*Entry) {
	for _, g := range gone {
		if g.Kind == KindHardlink {
			if s.links[g.Target]--; s.links[g.Target] <= 0 {
				delete(s.links, g.Target)
			}
		}
	}
	for _, g := range gone {
		if g.Kind != KindFile || s.links[g.Path] == 0 {
			continue
		}
		delete(s.links, g.Path)
		var names []string
		for p, e := range s.entries {
			if e.Kind == KindHardlink && e.Target == g.Path {
				names = append(names, p)
			}
		}
		if len(names) == 0 {
			continue
		}
		sort.Strings(names)
		first := s.entries[names[0]]
		first.Kind, first.Target, first.Xattrs, first.ModTime = KindFile, "", g.Xattrs, g.ModTime
		for _, n := range names[1:] {
			s.entries[n].Target = first.Path
		}
		if len(names) > 1 {
			s.links[first.Path] = len(names) - 1
		}
	}
}

func (s *stager) create(e *Entry, content io.Reader) error {
	if err := s.checkHostParent(e.Path); err != nil {
		return err
	}
	hp := s.host(e.Path)
	switch e.Kind {
	case KindDir:
		if err := os.Mkdir(hp, 0o700); err != nil {
			return fmt.Errorf("create directory %q: %w", e.Path, err)
		}
	case KindFile:
		f, err := os.OpenFile(hp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			return fmt.Errorf("create file %q: %w", e.Path, err)
		}
		h := sha256.New()
		var n int64
		if content != nil {
			n, err = io.Copy(io.MultiWriter(f, h), s.budget.fileReader(content))
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("write file %q: %w", e.Path, err)
		}
		e.Size = n
		e.digest = hex.EncodeToString(h.Sum(nil))
	case KindSymlink:
		// The target is stored verbatim and never resolved on the host.
		if err := os.Symlink(e.Target, hp); err != nil {
			return fmt.Errorf("create symlink %q: %w", e.Path, err)
		}
	case KindHardlink:
		t, ok := s.entries[e.Target]
		if !ok || (t.Kind != KindFile && t.Kind != KindHardlink) {
			return fmt.Errorf("hardlink %q: target %q is not an earlier regular file", e.Path, e.Target)
		}
		if err := os.Link(s.host(e.Target), hp); err != nil {
			return fmt.Errorf("create hardlink %q: %w", e.Path, err)
		}
		// One inode: the link carries its target's metadata.
		if t.Kind == KindHardlink {
			e.Target = t.Target
		}
		s.links[e.Target]++
		e.UID, e.GID, e.Mode, e.ModTime, e.Size, e.digest = t.UID, t.GID, t.Mode, t.ModTime, t.Size, t.digest
	case KindChar, KindBlock, KindFifo:
		// Created by debugfs: a non-root stager cannot mknod.
	default:
		return fmt.Errorf("entry %q: unsupported kind %d", e.Path, e.Kind)
	}
	s.entries[e.Path] = e
	if e.Kind == KindHardlink {
		return nil
	}
	return s.applyHostMeta(e)
}

// applyHostMeta gives the staged object as much of its final metadata as
// this process may set, so the debugfs pass only has to fix the rest. The
// owner always keeps read (and search) access so mkfs can copy it.
func (s *stager) applyHostMeta(e *Entry) error {
	if e.Kind.isNode() || e.Kind == KindHardlink {
		return nil
	}
	hp := s.host(e.Path)
	if e.Kind != KindSymlink {
		perm := e.Mode & 0o777
		if e.Kind == KindDir {
			perm |= 0o700
		} else {
			perm |= 0o600
		}
		if err := os.Chmod(hp, os.FileMode(perm)); err != nil {
			return fmt.Errorf("chmod %q: %w", e.Path, err)
		}
	}
	if s.asRoot {
		if err := os.Lchown(hp, int(e.UID), int(e.GID)); err != nil {
			return fmt.Errorf("chown %q: %w", e.Path, err)
		}
	}
	return nil
}

// finishTimes sets modification times last, because creating children
// would bump a directory's mtime again.
func (s *stager) finishTimes() error {
	for _, e := range s.entries {
		if e.ModTime.IsZero() || e.Kind.isNode() {
			continue
		}
		ts := []unix.Timespec{unix.NsecToTimespec(e.ModTime.UnixNano()), unix.NsecToTimespec(e.ModTime.UnixNano())}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, s.host(e.Path), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("set times on %q: %w", e.Path, err)
		}
	}
	return nil
}

func (s *stager) sorted() []*Entry {
	out := make([]*Entry, 0, len(s.entries))
	for _, e := range s.entries {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

func (s *stager) counts() Counts {
	var c Counts
	for _, e := range s.entries {
		switch e.Kind {
		case KindDir:
			c.Dirs++
		case KindFile:
			c.Files++
		case KindSymlink:
			c.Symlinks++
		case KindHardlink:
			c.Hardlinks++
		case KindChar, KindBlock:
			c.Devices++
		case KindFifo:
			c.Fifos++
		}
	}
	return c
}

// manifestDigest hashes the content manifest; mtimes are left out so that
// rebuilding the same inputs later gives the same digest.
func (s *stager) manifestDigest() string {
	h := sha256.New()
	for _, e := range s.sorted() {
		fmt.Fprintf(h, "%q %s %d %d %o %d %d %q %d %s\n",
			"/"+e.Path, e.Kind, e.UID, e.GID, e.Mode, e.Major, e.Minor, e.Target, e.Size, e.digest)
		keys := make([]string, 0, len(e.Xattrs))
		for k := range e.Xattrs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(h, "  %q=%x\n", k, e.Xattrs[k])
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}
