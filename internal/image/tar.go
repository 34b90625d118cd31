package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// ImportTar builds the ext4 image out from a rootfs tarball read from r
// (plain, gzip, zstd or xz; detected from the first bytes). Owners, modes
// and device numbers come from the headers. Absolute names, ".."
// components, writes under a symlink and hardlinks to anything but an
// earlier regular file fail the whole import with an error naming the
// entry; nothing is ever written outside the staging tree. What it unpacks
// is bounded (BuildOptions.MaxUnpacked and MaxEntries, see limits.go): a
// decompression bomb fails with an *UnpackLimitError and leaves nothing.
func ImportTar(ctx context.Context, r io.Reader, out string, opts BuildOptions) (*Result, error) {
	dr, closeFn, err := decompress(r)
	if err != nil {
		return nil, err
	}
	defer closeFn()
	return withStaging(out, &opts, func(s *stager) (*Result, error) {
		s.budget = newUnpackBudget(&opts, s.root)
		opts.progress("unpacking rootfs archive")
		if err := stageTar(ctx, s, tar.NewReader(s.budget.reader(dr))); err != nil {
			return nil, err
		}
		return buildExt4(ctx, s, out, &opts)
	})
}

// decompress wraps r according to its magic bytes.
func decompress(r io.Reader) (io.Reader, func(), error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, err := br.Peek(6)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, fmt.Errorf("read archive header: %w", err)
	}
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("open gzip stream: %w", err)
		}
		return zr, func() { zr.Close() }, nil
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("open zstd stream: %w", err)
		}
		return zr, zr.Close, nil
	case bytes.HasPrefix(magic, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}):
		xr, err := xz.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("open xz stream: %w", err)
		}
		return xr, func() {}, nil
	}
	return br, func() {}, nil
}

func stageTar(ctx context.Context, s *stager, tr *tar.Reader) error {
	seen := false
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		seen = true
		if err := s.budget.entry(); err != nil {
			return fmt.Errorf("archive entry %q: %w", h.Name, err)
		}
		if err := stageTarEntry(s, h, tr); err != nil {
			return fmt.Errorf("archive entry %q: %w", h.Name, err)
		}
	}
	if !seen {
		return fmt.Errorf("read archive: no entries (not a tar archive?)")
	}
	return nil
}

func stageTarEntry(s *stager, h *tar.Header, body io.Reader) error {
	rel, err := cleanName(h.Name)
	if err != nil {
		return err
	}
	e, err := tarHeaderEntry(s, rel, h, true)
	if err != nil || e == nil {
		return err
	}
	return s.add(e, body)
}

// tarHeaderEntry turns header h for path rel into a manifest entry. A nil
// entry with no error means h was left out (and recorded as skipped, unless
// it carries nothing, like a global header). Device nodes and FIFOs are
// skipped unless nodes is set.
func tarHeaderEntry(s *stager, rel string, h *tar.Header, nodes bool) (*Entry, error) {
	if h.Uid < 0 || h.Gid < 0 || int64(h.Uid) > 1<<32-1 || int64(h.Gid) > 1<<32-1 {
		return nil, fmt.Errorf("owner %d:%d out of range", h.Uid, h.Gid)
	}
	e := &Entry{
		Path:    rel,
		UID:     uint32(h.Uid),
		GID:     uint32(h.Gid),
		Mode:    uint32(h.Mode) & 0o7777,
		ModTime: h.ModTime,
	}
	switch h.Typeflag {
	case tar.TypeDir:
		e.Kind = KindDir
	case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // old archives still use '\x00'
		e.Kind = KindFile
	case tar.TypeSymlink:
		e.Kind = KindSymlink
		e.Target = h.Linkname
		if h.Linkname == "" {
			return nil, fmt.Errorf("symlink with an empty target")
		}
	case tar.TypeLink:
		e.Kind = KindHardlink
		t, err := cleanName(h.Linkname)
		if err != nil {
			return nil, fmt.Errorf("hardlink target %q: %w", h.Linkname, err)
		}
		if t == rel {
			return nil, fmt.Errorf("hardlink to itself")
		}
		e.Target = t
		if _, skipped := s.underSkipped(t + "/x"); skipped || s.wasSkipped(t) {
			s.skip(rel, KindHardlink, fmt.Sprintf("hardlink target %q was skipped", t))
			return nil, nil
		}
	case tar.TypeChar:
		e.Kind = KindChar
	case tar.TypeBlock:
		e.Kind = KindBlock
	case tar.TypeFifo:
		e.Kind = KindFifo
	case tar.TypeXGlobalHeader:
		return nil, nil
	default:
		s.skip(rel, 0, fmt.Sprintf("unsupported tar entry type %q", h.Typeflag))
		return nil, nil
	}
	if e.Kind.isNode() && !nodes {
		s.skip(rel, e.Kind, fmt.Sprintf("%s node not created: device nodes and FIFOs from image layers are not trusted", e.Kind))
		return nil, nil
	}
	if e.Kind == KindChar || e.Kind == KindBlock {
		if h.Devmajor < 0 || h.Devminor < 0 || h.Devmajor > 1<<12-1 || h.Devminor > 1<<20-1 {
			return nil, fmt.Errorf("device number %d:%d out of range", h.Devmajor, h.Devminor)
		}
		e.Major, e.Minor = uint32(h.Devmajor), uint32(h.Devminor)
	}
	for k, v := range h.PAXRecords {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			continue
		}
		if why := badXattr(name); why != "" || e.Kind == KindHardlink {
			if why == "" {
				why = "set on the hardlink's target instead"
			}
			s.skipped = append(s.skipped, Skipped{Path: rel, Reason: fmt.Sprintf("extended attribute %q not copied: %s", name, why)})
			continue
		}
		if e.Xattrs == nil {
			e.Xattrs = map[string][]byte{}
		}
		e.Xattrs[name] = []byte(v)
	}
	return e, nil
}

func (s *stager) wasSkipped(rel string) bool { return s.skippedAt[rel] }

// badXattr says why an extended attribute cannot be carried into the
// image, or "". POSIX ACLs (system.*) would need translating to ext4's
// on-disk format, which debugfs does not do for us.
func badXattr(name string) string {
	switch {
	case strings.ContainsAny(name, "\x00\n\r\" \t"):
		return "name has characters debugfs cannot pass"
	case strings.HasPrefix(name, "user."), strings.HasPrefix(name, "security."), strings.HasPrefix(name, "trusted."):
		return ""
	}
	return "only user., security. and trusted. attributes are supported"
}
