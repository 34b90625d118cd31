package image

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"banger/internal/execx"
	"banger/internal/mountinfo"
)

// DefaultLabel is the ext4 label of images banger builds.
const DefaultLabel = "banger-root"

// headroom is free space added on top of the content estimate, so a fresh
// VM can install a few things before anyone resizes its disk.
const headroom = 64 << 20

// BuildOptions tune an image build. The zero value is usable.
type BuildOptions struct {
	// WorkDir holds the staging tree while building (the daemon's state
	// dir). It is created if missing; the staging tree is removed after.
	// Empty means the directory of the output file.
	WorkDir string
	// Label is the ext4 volume label (at most 16 bytes); default DefaultLabel.
	Label string
	// Size is the ext4 size in bytes; 0 sizes it from the content.
	Size int64
	// Progress, when set, receives one line per phase.
	Progress func(string)
	// Mirror is the Debian mirror for BuildDebootstrap.
	Mirror string
	// Busybox is the static busybox BuildMinimal copies; empty means the
	// one on PATH.
	Busybox string
	// Hostname is written to /etc/hostname by the built-in builders;
	// default "banger".
	Hostname string
	// MaxUnpacked and MaxEntries bound what a tar or OCI import may
	// unpack (0: DefaultMaxUnpacked, DefaultMaxEntries); an import never
	// unpacks more than half the free space where it is staged either.
	MaxUnpacked int64
	MaxEntries  int
	// lazyInit leaves the inode tables and the journal for the guest
	// kernel to initialise, and skips the digest: a work disk is
	// multi-GiB, mostly holes, and must be ready in well under a second.
	lazyInit bool
}

func (o *BuildOptions) progress(format string, args ...any) {
	if o.Progress != nil {
		o.Progress(fmt.Sprintf(format, args...))
	}
}

func (o *BuildOptions) label() (string, error) {
	l := o.Label
	if l == "" {
		l = DefaultLabel
	}
	if len(l) > 16 || strings.ContainsAny(l, "\x00\n") {
		return "", fmt.Errorf("ext4 label %q: must be at most 16 bytes", l)
	}
	return l, nil
}

func (o *BuildOptions) hostname() string {
	if o.Hostname != "" {
		return o.Hostname
	}
	return "banger"
}

// withStaging creates a private staging directory for out, runs fn with a
// stager on it, and always removes the tree afterwards.
func withStaging(out string, opts *BuildOptions, fn func(*stager) (*Result, error)) (*Result, error) {
	work := opts.WorkDir
	if work == "" {
		work = filepath.Dir(out)
	}
	if err := os.MkdirAll(work, 0o700); err != nil {
		return nil, fmt.Errorf("create work dir: %w", err)
	}
	dir, err := os.MkdirTemp(work, ".image-staging-")
	if err != nil {
		return nil, fmt.Errorf("create staging dir: %w", err)
	}
	defer removeStaging(dir)
	return fn(newStager(dir))
}

// removeStaging deletes a staging tree, first making every directory in it
// writable again (a staged 0555 directory would otherwise stop RemoveAll).
func removeStaging(dir string) {
	// A failed debootstrap can leave proc or sys mounted in the tree;
	// RemoveAll must never descend into a live mount.
	if err := unmountUnder(dir); err != nil {
		return
	}
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
	_ = os.RemoveAll(dir)
}

// estimateSize sizes an image from its manifest: every file rounded up to
// 4 KiB blocks, a block per directory and long symlink, an inode each,
// times 1.3 for metadata and slack, plus fixed headroom.
func estimateSize(s *stager) int64 {
	size := contentSize(s) + headroom
	return (size + (1<<20 - 1)) &^ (1<<20 - 1)
}

// contentSize is estimateSize without the headroom.
func contentSize(s *stager) int64 {
	const blk = 4096
	var n int64
	for _, e := range s.entries {
		n += 256
		switch e.Kind {
		case KindFile:
			n += (e.Size + blk - 1) / blk * blk
		case KindDir:
			n += blk
		case KindSymlink:
			if len(e.Target) >= 60 {
				n += blk
			}
		}
	}
	return n * 13 / 10
}

// inodesFor returns a -N value when mkfs's default inode ratio would not
// leave room for the entries plus as many again for the guest, else 0.
func inodesFor(size int64, entries int) int64 {
	ratio := int64(16384)
	if size < 512<<20 {
		ratio = 4096 // mke2fs.conf's "small" type
	}
	want := int64(entries)*2 + 1024
	if size/ratio >= want {
		return 0
	}
	return want
}

// buildExt4 turns a finished staging tree into out: mkfs.ext4 -d, the
// manifest pass, then an atomic rename. A failure leaves no out behind.
func buildExt4(ctx context.Context, s *stager, out string, opts *BuildOptions) (*Result, error) {
	label, err := opts.label()
	if err != nil {
		return nil, err
	}
	mkfs, err := execx.LookPath("mkfs.ext4")
	if err != nil {
		return nil, err
	}
	debugfs, err := execx.LookPath("debugfs")
	if err != nil {
		return nil, err
	}
	if err := s.finishTimes(); err != nil {
		return nil, err
	}
	size := opts.Size
	if size == 0 {
		size = estimateSize(s)
	} else if need := contentSize(s); need > size {
		return nil, fmt.Errorf("ext4 size %d MiB: the content needs about %d MiB", size>>20, need>>20)
	}
	size = (size + 4095) &^ 4095
	if size < 8<<20 {
		return nil, fmt.Errorf("image size %d bytes: must be at least 8 MiB", size)
	}

	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-")
	if err != nil {
		return nil, fmt.Errorf("create image file: %w", err)
	}
	tmpName := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			_ = os.Remove(tmpName)
		}
	}()
	if err := tmp.Truncate(size); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("size image file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("close image file: %w", err)
	}

	opts.progress("creating %d MiB ext4 filesystem", size>>20)
	// The positional size is in 1 KiB units unless suffixed: say "k".
	ext := "root_owner=0:0"
	if opts.lazyInit {
		ext = "lazy_itable_init=1,lazy_journal_init=1," + ext
	}
	args := []string{"-q", "-F", "-b", "4096", "-d", s.root, "-E", ext, "-L", label}
	if n := inodesFor(size, len(s.entries)); n > 0 {
		args = append(args, "-N", strconv.FormatInt(n, 10))
	}
	args = append(args, tmpName, strconv.FormatInt(size/1024, 10)+"k")
	if _, err := execx.Default.Run(ctx, mkfs, args...); err != nil {
		return nil, fmt.Errorf("make ext4 filesystem: %w", err)
	}

	// Extended attribute values go to debugfs as files (ea_set -f), so
	// binary values need no quoting.
	valueDir, err := os.MkdirTemp(filepath.Dir(s.root), ".xattr-")
	if err != nil {
		return nil, fmt.Errorf("create xattr dir: %w", err)
	}
	defer os.RemoveAll(valueDir)
	script, err := s.debugfsScript(valueDir)
	if err != nil {
		return nil, err
	}
	if script.Len() > 0 {
		opts.progress("fixing ownership, modes and device nodes")
		if err := runDebugfs(ctx, debugfs, tmpName, script); err != nil {
			return nil, err
		}
	}

	var sum string
	if !opts.lazyInit {
		if sum, err = fileSHA256(tmpName); err != nil {
			return nil, err
		}
	}
	if err := syncFile(tmpName); err != nil {
		return nil, err
	}
	if err := os.Rename(tmpName, out); err != nil {
		return nil, fmt.Errorf("move image into place: %w", err)
	}
	ok = true
	return &Result{
		Path:           out,
		Size:           size,
		SHA256:         sum,
		ManifestDigest: s.manifestDigest(),
		Entries:        s.counts(),
		Skipped:        s.skipped,
	}, nil
}

// quote renders p for debugfs's parser: inside "...", a doubled quote is
// a literal quote. Names with line breaks never get here (inexpressible).
func quote(p string) string {
	return `"` + strings.ReplaceAll(p, `"`, `""`) + `"`
}

// debugfsScript lists the commands that make the filesystem match the
// manifest. mkfs -d already copied what the staging tree could hold
// (and as root that includes owners), so only differences are emitted.
// Nodes are created first with mknod, which links into the current
// directory, hence the cd.
func (s *stager) debugfsScript(valueDir string) (*bytes.Buffer, error) {
	var b bytes.Buffer
	nval := 0
	for _, e := range s.sorted() {
		p := "/" + e.Path
		var haveUID, haveGID, haveMode uint32
		var st unix.Stat_t
		exists := unix.Lstat(s.host(e.Path), &st) == nil
		if exists {
			haveUID, haveGID, haveMode = st.Uid, st.Gid, st.Mode
		}
		if e.Kind.isNode() {
			wantRdev := unix.Mkdev(e.Major, e.Minor)
			if !exists || st.Mode&unix.S_IFMT != e.Kind.typeBits() || (e.Kind != KindFifo && st.Rdev != wantRdev) {
				if exists {
					return nil, fmt.Errorf("staged %q does not match its manifest entry", e.Path)
				}
				fmt.Fprintf(&b, "cd %s\n", quote("/"+path.Dir(e.Path)))
				switch e.Kind {
				case KindFifo:
					fmt.Fprintf(&b, "mknod %s p\n", quote(path.Base(e.Path)))
				case KindChar:
					fmt.Fprintf(&b, "mknod %s c %d %d\n", quote(path.Base(e.Path)), e.Major, e.Minor)
				case KindBlock:
					fmt.Fprintf(&b, "mknod %s b %d %d\n", quote(path.Base(e.Path)), e.Major, e.Minor)
				}
				haveUID, haveGID, haveMode = ^uint32(0), ^uint32(0), 0
			}
		} else if !exists {
			return nil, fmt.Errorf("staged %q is missing", e.Path)
		}
		wantMode := e.Kind.typeBits() | e.Mode&0o7777
		// The root's owner and mode are not taken from the staging dir
		// by every mke2fs version: always set them.
		root := e.Path == ""
		if root || haveUID != e.UID {
			fmt.Fprintf(&b, "set_inode_field %s uid %d\n", quote(p), e.UID)
		}
		if root || haveGID != e.GID {
			fmt.Fprintf(&b, "set_inode_field %s gid %d\n", quote(p), e.GID)
		}
		if root || haveMode != wantMode {
			fmt.Fprintf(&b, "set_inode_field %s mode 0%o\n", quote(p), wantMode)
		}
		names := make([]string, 0, len(e.Xattrs))
		for k := range e.Xattrs {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			nval++
			vf := filepath.Join(valueDir, strconv.Itoa(nval))
			if err := os.WriteFile(vf, e.Xattrs[k], 0o600); err != nil {
				return nil, fmt.Errorf("write xattr value: %w", err)
			}
			fmt.Fprintf(&b, "ea_set -f %s %s %s\n", quote(vf), quote(p), k)
		}
	}
	return &b, nil
}

// runDebugfs feeds script to one debugfs -w run.
func runDebugfs(ctx context.Context, debugfs, img string, script *bytes.Buffer) error {
	problems, err := debugfsBatch(ctx, debugfs, img, script, true, nil)
	if err != nil {
		return fmt.Errorf("run debugfs on image: %w", err)
	}
	if len(problems) > 0 {
		return fmt.Errorf("fix up image with debugfs: %s", summarize(problems))
	}
	return nil
}

// debugfsBatch feeds script to one debugfs run on img (-w when write) and
// hands its stdout to parse (nil: discarded). debugfs exits 0 even when a
// command fails, so it also returns every stderr line beyond the banner:
// the caller decides what they mean. A parse error stops debugfs.
func debugfsBatch(parent context.Context, debugfs, img string, script io.Reader, write bool, parse func(*bufio.Reader) error) ([]string, error) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	args := []string{"-f", "-", img}
	if write {
		args = append([]string{"-w"}, args...)
	}
	cmd := execx.Default.Command(ctx, debugfs, args...)
	cmd.Stdin = script
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("start debugfs: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start debugfs: %w", err)
	}
	var perr error
	if parse != nil {
		if perr = parse(bufio.NewReaderSize(stdout, 64<<10)); perr != nil {
			cancel()
		}
	}
	_, _ = io.Copy(io.Discard, stdout)
	werr := cmd.Wait()
	// A caller that gave up killed debugfs, which cut its output short:
	// say so, not that the image is unreadable.
	if err := parent.Err(); err != nil {
		return nil, fmt.Errorf("run debugfs: %w", err)
	}
	if perr != nil {
		return nil, perr
	}
	if werr != nil {
		return nil, fmt.Errorf("%w: %s", werr, strings.TrimSpace(stderr.String()))
	}
	var problems []string
	sc := bufio.NewScanner(&stderr)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "debugfs ") {
			continue
		}
		problems = append(problems, line)
	}
	return problems, nil
}

// summarize joins debugfs complaints, at most ten of them.
func summarize(problems []string) string {
	if len(problems) > 10 {
		problems = append(problems[:10:10], fmt.Sprintf("... and %d more", len(problems)-10))
	}
	return strings.Join(problems, "; ")
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", fmt.Errorf("hash image: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash image: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func syncFile(p string) error {
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("sync %s: %w", filepath.Base(p), err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", filepath.Base(p), err)
	}
	return nil
}

// unmountUnder detaches every mount point below dir, deepest first. It
// fails if a mount cannot be detached (only root can), so the caller
// leaves the tree alone.
func unmountUnder(dir string) error {
	points, err := mountinfo.Below(filepath.Clean(dir))
	if err != nil {
		return err
	}
	for _, mp := range points {
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount %s: %w", mp, err)
		}
	}
	return nil
}
