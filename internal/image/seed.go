package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/execx"
)

// WorkSeedFile is the name of an image's work seed, stored beside its ext4
// file: an uncompressed tar of the image's /root, which every work disk of
// the image's VMs starts from (the guest mounts its work disk over /root).
const WorkSeedFile = "work-seed.tar"

// MaxWorkSeedSize bounds a work seed (the tar, headers included). A /root
// holding more (a package cache, say) gets no seed, rather than every VM's
// creation copying it.
const MaxWorkSeedSize = 256 << 20

// maxSeedEntries bounds the paths of a seed: each one's metadata is held in
// memory while capturing, and a huge count is as slow as a huge size.
const maxSeedEntries = 100_000

// maxSeedDepth bounds how deep below /root a seed goes: every level costs
// one debugfs run, and a crafted image could nest thousands.
const maxSeedDepth = 64

// Errors CaptureWorkSeed wraps when the image's /root cannot become a seed,
// however often it is tried. Other errors (a missing tool, a full disk)
// may pass.
var (
	ErrWorkSeedTooLarge   = errors.New("work seed too large")
	ErrWorkSeedUnreadable = errors.New("image /root unreadable")
)

// SeedResult describes a captured work seed.
type SeedResult struct {
	Path    string // the tar
	Size    int64  // its size in bytes
	Entries Counts // /root itself counts as a directory
	Skipped []Skipped
}

// i_flags bits and the root directory's inode (linux/ext4.h).
const (
	extentsFL    = 0x80000
	inlineDataFL = 0x10000000
	rootIno      = 2
)

// seedNode is one path of the image's /root. Its metadata comes from the
// image's inode, never from a host copy of it.
type seedNode struct {
	rel      string // below /root, slash-separated; "" is /root itself
	ino      uint32
	mode     uint32 // i_mode: type and permission bits
	uid, gid uint32
	size     int64
	mtime    int64
	first    string // an earlier path of this regular file's inode: a hardlink to it
	target   string // symlink target
	dumped   bool   // a slow symlink: only a dump reads its target
}

func (n *seedNode) kind() uint32 { return n.mode & unix.S_IFMT }

func (n *seedNode) show() string { return path.Join("/root", n.rel) }

// lsRecord is one line of debugfs's "ls -p".
type lsRecord struct {
	ino      uint32
	mode     uint32
	uid, gid uint32
	name     string
	size     int64
}

// inodeInfo is what the seed takes from an inode's raw dump.
type inodeInfo struct {
	mtime   int64
	flags   uint32
	blocks  uint32
	fileACL uint32
	iblock  [60]byte
}

// CaptureWorkSeed writes the work seed of the ext4 image img to out: a tar
// of /root's contents with their owners, modes, mtimes (to the second),
// symlinks and hardlinks, and /root itself as "./". Device nodes, FIFOs,
// sockets and names debugfs cannot address are left out and listed in
// Skipped. An image without a /root directory gets an empty seed.
//
// It needs neither root nor a mount, so it works for every image however it
// was made: debugfs lists directories and dumps files by inode number, so no
// name from the image is ever resolved, on the image or on the host, and
// every file lands under a name chosen here, in a private directory under
// workDir (default: out's directory). Directories linked twice (a crafted
// image could loop) and duplicate names are skipped. Above MaxWorkSeedSize
// it fails with ErrWorkSeedTooLarge before copying anything; a filesystem
// debugfs cannot read cleanly fails with ErrWorkSeedUnreadable. out
// appears complete or not at all.
func CaptureWorkSeed(ctx context.Context, img, out, workDir string) (*SeedResult, error) {
	debugfs, err := execx.LookPath("debugfs")
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(img); err != nil {
		return nil, fmt.Errorf("capture work seed: %w", err)
	}
	if workDir == "" {
		workDir = filepath.Dir(out)
	}
	c := &seedCapture{debugfs: debugfs, img: img}
	if err := c.list(ctx); err != nil {
		return nil, err
	}
	if err := c.readInodes(ctx); err != nil {
		return nil, err
	}
	dumpDir, err := os.MkdirTemp(workDir, ".work-seed-")
	if err != nil {
		return nil, fmt.Errorf("create work seed dir: %w", err)
	}
	defer os.RemoveAll(dumpDir)
	if err := c.dump(ctx, dumpDir); err != nil {
		return nil, err
	}
	c.dropBadTargets()
	return c.write(out, dumpDir)
}

type seedCapture struct {
	debugfs, img string
	nodes        []*seedNode // nodes[0] is /root; parents come before children
	skipped      []Skipped
	estimate     int64 // tar bytes so far
}

func (c *seedCapture) skip(p, format string, args ...any) {
	c.skipped = append(c.skipped, Skipped{Path: p, Reason: fmt.Sprintf(format, args...)})
}

func unreadable(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrWorkSeedUnreadable, fmt.Sprintf(format, args...))
}

func (c *seedCapture) tooLarge() error {
	return fmt.Errorf("%w: /root holds about %d MiB in %d entries, above the limit of %d MiB or %d entries",
		ErrWorkSeedTooLarge, c.estimate>>20, len(c.nodes), MaxWorkSeedSize>>20, maxSeedEntries)
}

// list walks /root breadth first, one debugfs run per level.
func (c *seedCapture) list(ctx context.Context) error {
	top, err := c.ls(ctx, []uint32{rootIno})
	if err != nil {
		return err
	}
	var root *seedNode
	for _, r := range top[0] {
		if r.name == "root" {
			root = &seedNode{ino: r.ino, mode: r.mode, uid: r.uid, gid: r.gid}
			break
		}
	}
	switch {
	case root == nil:
		root = &seedNode{mode: unix.S_IFDIR | 0o700}
	case root.kind() != unix.S_IFDIR:
		c.skip("/root", "not a directory (i_mode %o): the seed is empty", root.mode)
		root = &seedNode{mode: unix.S_IFDIR | 0o700}
	case root.ino == rootIno:
		c.skip("/root", "a link to / (a crafted filesystem): the seed is empty")
		root = &seedNode{mode: unix.S_IFDIR | 0o700}
	}
	c.nodes = []*seedNode{root}
	c.estimate = 2 * 512 // the root's header and the end-of-archive blocks
	if root.ino == 0 {
		return nil
	}
	seenDir := map[uint32]bool{rootIno: true, root.ino: true}
	sized := map[uint32]bool{}
	level := []*seedNode{root}
	for depth := 1; len(level) > 0; depth++ {
		if depth > maxSeedDepth {
			for _, d := range level {
				c.skip(d.show(), "contents not copied: more than %d levels below /root", maxSeedDepth)
			}
			break
		}
		inos := make([]uint32, len(level))
		for i, d := range level {
			inos[i] = d.ino
		}
		lists, err := c.ls(ctx, inos)
		if err != nil {
			return err
		}
		var next []*seedNode
		for i, d := range level {
			names := map[string]bool{}
			for _, r := range lists[i] {
				if r.name == "." || r.name == ".." {
					continue
				}
				n := &seedNode{rel: path.Join(d.rel, r.name), ino: r.ino, mode: r.mode, uid: r.uid, gid: r.gid, size: r.size}
				if names[r.name] {
					c.skip(n.show(), "duplicate name in its directory (a damaged or crafted filesystem)")
					continue
				}
				names[r.name] = true
				if why := inexpressible(n.rel); why != "" {
					c.skip(n.show(), "%s", why)
					continue
				}
				if n.rel == "lost+found" && n.kind() != unix.S_IFDIR {
					c.skip(n.show(), "the work disk's own lost+found directory has this name")
					continue
				}
				switch n.kind() {
				case unix.S_IFDIR:
					if seenDir[n.ino] {
						c.skip(n.show(), "directory linked more than once (a damaged or crafted filesystem)")
						continue
					}
					seenDir[n.ino] = true
					next = append(next, n)
				case unix.S_IFREG:
					if !sized[n.ino] {
						sized[n.ino] = true
						c.estimate += (n.size + 511) &^ 511
					}
				case unix.S_IFLNK:
					if n.size <= 0 || n.size > 4095 {
						c.skip(n.show(), "symlink target of %d bytes", n.size)
						continue
					}
				default:
					c.skip(n.show(), "device nodes, FIFOs and sockets are not copied")
					continue
				}
				c.nodes = append(c.nodes, n)
				// A header, and a PAX header before it for long names
				// and link targets.
				c.estimate += 512
				if len(n.rel) > 99 || n.kind() == unix.S_IFLNK && n.size > 99 {
					c.estimate += 1024
				}
			}
		}
		if len(c.nodes) > maxSeedEntries || c.estimate > MaxWorkSeedSize {
			return c.tooLarge()
		}
		level = next
	}
	c.order()
	return nil
}

// order puts the nodes in depth-first order, as tar itself writes (so
// that extracting the seed with tar restores directory mtimes too), and
// makes every later path of a regular file's inode a hardlink to the
// first.
func (c *seedCapture) order() {
	rest := c.nodes[1:]
	sort.Slice(rest, func(i, j int) bool {
		a, b := strings.Split(rest[i].rel, "/"), strings.Split(rest[j].rel, "/")
		for k := 0; k < len(a) && k < len(b); k++ {
			if a[k] != b[k] {
				return a[k] < b[k]
			}
		}
		return len(a) < len(b)
	})
	firstPath := map[uint32]string{}
	for _, n := range rest {
		if n.kind() != unix.S_IFREG {
			continue
		}
		if f, ok := firstPath[n.ino]; ok {
			n.first = f
		} else {
			firstPath[n.ino] = n.rel
		}
	}
}

// ls lists the directories inos in one debugfs run.
func (c *seedCapture) ls(ctx context.Context, inos []uint32) ([][]lsRecord, error) {
	var script bytes.Buffer
	for _, ino := range inos {
		fmt.Fprintf(&script, "ls -p <%d>\n", ino)
	}
	var lists [][]lsRecord
	problems, err := debugfsBatch(ctx, c.debugfs, c.img, &script, false, func(r *bufio.Reader) error {
		var perr error
		lists, perr = parseLs(r, inos, 2*maxSeedEntries)
		return perr
	})
	if err != nil {
		return nil, fmt.Errorf("list /root of the image: %w", err)
	}
	if len(problems) > 0 {
		return nil, unreadable("%s", summarize(problems))
	}
	return lists, nil
}

// parseLs reads the output of "ls -p <ino>" for each of inos, in order:
// the echoed command, then one "/ino/mode/uid/gid/name/size/" record a
// line. It reads byte by byte rather than by line, since a name may hold
// a line break but never a slash, and it fails on anything else rather
// than guess. limit bounds the records it keeps.
func parseLs(r *bufio.Reader, inos []uint32, limit int) ([][]lsRecord, error) {
	out := make([][]lsRecord, len(inos))
	cur, total := -1, 0
	for {
		c, err := r.ReadByte()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read debugfs output: %w", err)
		}
		switch c {
		case '\n':
		case 'd':
			line, err := r.ReadString('\n')
			if err != nil || cur+1 >= len(inos) || line != fmt.Sprintf("ebugfs: ls -p <%d>\n", inos[cur+1]) {
				return nil, unreadable("unexpected debugfs output %q", "d"+line)
			}
			cur++
		case '/':
			if cur < 0 {
				return nil, unreadable("debugfs listed entries before any command")
			}
			rec, err := parseLsRecord(r)
			if err != nil {
				return nil, err
			}
			if total++; total > limit {
				return nil, fmt.Errorf("%w: /root holds more than %d entries", ErrWorkSeedTooLarge, maxSeedEntries)
			}
			out[cur] = append(out[cur], rec)
		default:
			return nil, unreadable("unexpected debugfs output byte %q", c)
		}
	}
	if cur != len(inos)-1 {
		return nil, unreadable("debugfs answered %d of %d directory listings", cur+1, len(inos))
	}
	return out, nil
}

// parseLsRecord reads one record after its leading slash. The format is
// debugfs's: "%u/%06o/%d/%d/%s/" then the size (empty for directories)
// and "/\n". Owners print as signed ints.
func parseLsRecord(r *bufio.Reader) (lsRecord, error) {
	var f [6]string
	for i := range f {
		s, err := r.ReadString('/')
		if err != nil {
			return lsRecord{}, unreadable("truncated debugfs listing")
		}
		f[i] = s[:len(s)-1]
	}
	if c, err := r.ReadByte(); err != nil || c != '\n' {
		return lsRecord{}, unreadable("debugfs listing record %q does not end its line", strings.Join(f[:], "/"))
	}
	bad := func(what string) (lsRecord, error) {
		return lsRecord{}, unreadable("debugfs listing record %q: bad %s", strings.Join(f[:], "/"), what)
	}
	ino, err := strconv.ParseUint(f[0], 10, 32)
	if err != nil || ino == 0 {
		return bad("inode number")
	}
	mode, err := strconv.ParseUint(f[1], 8, 16)
	if err != nil {
		return bad("mode")
	}
	var ids [2]uint32
	for i, s := range f[2:4] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < -(1<<31) || v > 1<<32-1 {
			return bad("owner")
		}
		ids[i] = uint32(v) // the same 32 bits whether debugfs printed them signed or not
	}
	name := f[4]
	if name == "" || len(name) > 255 {
		return bad("name")
	}
	var size int64
	if f[5] != "" {
		if size, err = strconv.ParseInt(f[5], 10, 64); err != nil || size < 0 {
			return bad("size")
		}
	}
	return lsRecord{ino: uint32(ino), mode: uint32(mode), uid: ids[0], gid: ids[1], name: name, size: size}, nil
}

// readInodes takes each inode's mtime, and a short symlink's target, from
// its raw dump (hex, so no name or target in it can pose as output).
func (c *seedCapture) readInodes(ctx context.Context) error {
	var inos []uint32
	seen := map[uint32]bool{}
	for _, n := range c.nodes {
		if n.ino != 0 && n.first == "" && !seen[n.ino] {
			seen[n.ino] = true
			inos = append(inos, n.ino)
		}
	}
	if len(inos) == 0 {
		return nil
	}
	var script bytes.Buffer
	for _, ino := range inos {
		fmt.Fprintf(&script, "inode_dump <%d>\n", ino)
	}
	info := make(map[uint32]inodeInfo, len(inos))
	problems, err := debugfsBatch(ctx, c.debugfs, c.img, &script, false, func(r *bufio.Reader) error {
		return parseInodeDumps(r, inos, func(ino uint32, raw []byte) {
			info[ino] = decodeInode(raw)
		})
	})
	if err != nil {
		return fmt.Errorf("read /root inodes of the image: %w", err)
	}
	if len(problems) > 0 {
		return unreadable("%s", summarize(problems))
	}
	for _, n := range c.nodes {
		if n.first != "" || n.ino == 0 {
			continue
		}
		in, ok := info[n.ino]
		if !ok {
			return unreadable("no inode dump for %s", n.show())
		}
		n.mtime = in.mtime
		if n.kind() != unix.S_IFLNK {
			continue
		}
		// A fast symlink keeps its target in i_block (inline data too, for
		// the first 60 bytes); a slow one in a data block, which only a
		// dump reads. Blocks without an xattr block to account for them
		// mean data, even without the extents flag (old ext2 symlinks).
		slow := n.size >= int64(len(in.iblock)) || in.flags&extentsFL != 0 ||
			(in.blocks != 0 && in.fileACL == 0 && in.flags&inlineDataFL == 0)
		if slow {
			n.dumped = true
			continue
		}
		n.target = string(in.iblock[:n.size])
	}
	return nil
}

// parseInodeDumps reads the output of "inode_dump <ino>" for each of inos:
// the echoed command, then do_byte_hexdump's lines ("%04o  " offset, eight
// groups of four hex digits, an ASCII column), where "*" stands for lines
// repeating the one before, and a blank line. Only the first 256 bytes of
// each inode are kept.
func parseInodeDumps(r *bufio.Reader, inos []uint32, fn func(ino uint32, raw []byte)) error {
	const keep = 256
	cur := -1
	var raw []byte
	var last []byte
	lastOff, star, open := -16, false, false
	fill := func(to int) {
		for off := lastOff + 16; off < to && off < keep; off += 16 {
			copy(raw[off:], last)
		}
	}
	finish := func() {
		if star {
			fill(keep)
		}
		fn(inos[cur], raw)
		open = false
	}
	for {
		line, err := r.ReadString('\n')
		if errors.Is(err, io.EOF) && line == "" {
			break
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read debugfs output: %w", err)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case strings.HasPrefix(line, "debugfs: "):
			if open {
				finish()
			}
			if cur+1 >= len(inos) || line != fmt.Sprintf("debugfs: inode_dump <%d>", inos[cur+1]) {
				return unreadable("unexpected debugfs output %q", line)
			}
			cur++
			raw, last = make([]byte, keep), make([]byte, 16)
			lastOff, star, open = -16, false, true
		case !open:
			if line != "" {
				return unreadable("unexpected debugfs output %q", line)
			}
		case line == "":
			finish()
		case line == "*":
			star = true
		default:
			off, data, ok := hexdumpLine(line)
			if !ok || off <= lastOff {
				return unreadable("unexpected debugfs inode dump line %q", line)
			}
			if star {
				fill(off)
				star = false
			}
			if off < keep {
				copy(raw[off:], data)
			}
			last, lastOff = data, off
		}
	}
	if open {
		finish()
	}
	if cur != len(inos)-1 {
		return unreadable("debugfs answered %d of %d inode dumps", cur+1, len(inos))
	}
	return nil
}

// hexdumpLine decodes one full line of do_byte_hexdump.
func hexdumpLine(line string) (int, []byte, bool) {
	offs, rest, ok := strings.Cut(line, "  ")
	if !ok || len(rest) < 39 {
		return 0, nil, false
	}
	off, err := strconv.ParseUint(offs, 8, 31)
	if err != nil || off%16 != 0 {
		return 0, nil, false
	}
	data, err := hex.DecodeString(strings.ReplaceAll(rest[:39], " ", ""))
	if err != nil || len(data) != 16 {
		return 0, nil, false
	}
	return int(off), data, true
}

// decodeInode reads struct ext4_inode fields from raw (little endian).
func decodeInode(raw []byte) inodeInfo {
	le32 := func(off int) uint32 { return binary.LittleEndian.Uint32(raw[off:]) }
	in := inodeInfo{
		mtime:   int64(int32(le32(0x10))),
		blocks:  le32(0x1c),
		flags:   le32(0x20),
		fileACL: le32(0x68),
	}
	copy(in.iblock[:], raw[0x28:0x28+60])
	// i_mtime_extra (at 0x88, present when i_extra_isize reaches past it)
	// carries two epoch bits that move the 32-bit seconds past 2038.
	if binary.LittleEndian.Uint16(raw[0x80:]) >= 0x8c-0x80 {
		in.mtime += int64(le32(0x88)&3) << 32
	}
	return in
}

// dump copies every regular file's content, and each long symlink's
// target, to dumpDir/<inode number> in one debugfs run.
func (c *seedCapture) dump(ctx context.Context, dumpDir string) error {
	if strings.ContainsAny(dumpDir, "\n\r") {
		return fmt.Errorf("work seed dir %q: a line break cannot pass to debugfs", dumpDir)
	}
	var script bytes.Buffer
	seen := map[uint32]bool{}
	for _, n := range c.nodes {
		if ((n.kind() == unix.S_IFREG && n.first == "") || n.dumped) && !seen[n.ino] {
			seen[n.ino] = true
			fmt.Fprintf(&script, "dump <%d> %s\n", n.ino, quote(filepath.Join(dumpDir, strconv.FormatUint(uint64(n.ino), 10))))
		}
	}
	if script.Len() == 0 {
		return nil
	}
	problems, err := debugfsBatch(ctx, c.debugfs, c.img, &script, false, nil)
	if err != nil {
		return fmt.Errorf("copy /root out of the image: %w", err)
	}
	if len(problems) > 0 {
		return fmt.Errorf("copy /root out of the image: debugfs: %s", summarize(problems))
	}
	for _, n := range c.nodes {
		if !n.dumped {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dumpDir, strconv.FormatUint(uint64(n.ino), 10)))
		if err != nil {
			return fmt.Errorf("read symlink target of %s: %w", n.show(), err)
		}
		if int64(len(b)) != n.size {
			return unreadable("symlink %s: %d bytes of target, inode says %d", n.show(), len(b), n.size)
		}
		n.target = string(b)
	}
	return nil
}

// dropBadTargets leaves out symlinks whose target no path could hold
// (nothing hangs below a symlink, so removing one orphans nothing).
func (c *seedCapture) dropBadTargets() {
	kept := c.nodes[:0]
	for _, n := range c.nodes {
		if n.kind() == unix.S_IFLNK && strings.ContainsRune(n.target, 0) {
			c.skip(n.show(), "symlink target holds a NUL byte")
			continue
		}
		kept = append(kept, n)
	}
	c.nodes = kept
}

// write assembles the tar next to out and renames it into place.
func (c *seedCapture) write(out, dumpDir string) (res *SeedResult, err error) {
	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-")
	if err != nil {
		return nil, fmt.Errorf("create work seed: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	cw := &cappedWriter{w: bufio.NewWriterSize(f, 256<<10), left: MaxWorkSeedSize}
	tw := tar.NewWriter(cw)
	res = &SeedResult{Path: out, Skipped: c.skipped}
	for _, n := range c.nodes {
		if err := c.writeNode(tw, n, dumpDir, &res.Entries); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("write work seed: %w", err)
	}
	if err := cw.w.Flush(); err != nil {
		return nil, fmt.Errorf("write work seed: %w", err)
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("sync work seed: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("close work seed: %w", err)
	}
	if err := os.Rename(f.Name(), out); err != nil {
		return nil, fmt.Errorf("move work seed into place: %w", err)
	}
	if d, err := os.Open(filepath.Dir(out)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	res.Size = MaxWorkSeedSize - cw.left
	return res, nil
}

func (c *seedCapture) writeNode(tw *tar.Writer, n *seedNode, dumpDir string, counts *Counts) error {
	h := &tar.Header{
		Name:    n.rel,
		Mode:    int64(n.mode & 0o7777),
		Uid:     int(n.uid),
		Gid:     int(n.gid),
		ModTime: time.Unix(n.mtime, 0),
	}
	var body *os.File
	switch {
	case n.kind() == unix.S_IFDIR:
		h.Typeflag = tar.TypeDir
		h.Name += "/"
		if n.rel == "" {
			h.Name = "./"
		}
		counts.Dirs++
	case n.kind() == unix.S_IFLNK:
		h.Typeflag, h.Linkname = tar.TypeSymlink, n.target
		counts.Symlinks++
	case n.first != "":
		h.Typeflag, h.Linkname = tar.TypeLink, n.first
		counts.Hardlinks++
	default:
		h.Typeflag, h.Size = tar.TypeReg, n.size
		var err error
		body, err = os.OpenFile(filepath.Join(dumpDir, strconv.FormatUint(uint64(n.ino), 10)), os.O_RDONLY|unix.O_NOFOLLOW, 0)
		if err != nil {
			return fmt.Errorf("open copy of %s: %w", n.show(), err)
		}
		defer body.Close()
		st, err := body.Stat()
		if err != nil {
			return fmt.Errorf("stat copy of %s: %w", n.show(), err)
		}
		if st.Size() != n.size {
			return unreadable("%s: %d bytes copied, inode says %d", n.show(), st.Size(), n.size)
		}
		counts.Files++
	}
	if err := tw.WriteHeader(h); err != nil {
		return fmt.Errorf("write work seed entry %s: %w", n.show(), err)
	}
	if body != nil {
		if _, err := io.Copy(tw, body); err != nil {
			return fmt.Errorf("write work seed entry %s: %w", n.show(), err)
		}
	}
	return nil
}

// cappedWriter fails once more than left bytes went through: the estimate
// made before copying should stop a big seed first, this makes sure.
type cappedWriter struct {
	w    *bufio.Writer
	left int64
}

func (c *cappedWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > c.left {
		return 0, fmt.Errorf("%w: more than %d MiB", ErrWorkSeedTooLarge, MaxWorkSeedSize>>20)
	}
	c.left -= int64(len(p))
	return c.w.Write(p)
}
