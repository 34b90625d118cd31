package image

import (
	"fmt"
	"io"

	"golang.org/x/sys/unix"

	"banger/internal/sizes"
)

// Limits on what one tar or OCI import may unpack. An archive's size says
// nothing about what it expands to (a few KiB of gzip can hold gigabytes
// of zeros, and a sparse entry of a few bytes terabytes of holes), so two
// things are counted as the import goes, each against the same limit: the
// decompressed tar stream (headers, data, padding, and the data of entries
// that are skipped rather than staged), and the file data written into
// staging (where a sparse entry's holes become real zeros). The import
// fails as soon as either passes the limit.
const (
	// DefaultMaxUnpacked bounds an import's unpacked size: far beyond any
	// development rootfs, well short of filling a state disk.
	DefaultMaxUnpacked = 64 << 30
	// DefaultMaxEntries bounds an import's entries (files, directories,
	// links, whiteouts): each costs an inode and manifest memory, however
	// little data it has.
	DefaultMaxEntries = 4 << 20
)

// UnpackLimitError is an import that unpacks past its size or entry limit.
type UnpackLimitError struct {
	What  string // "expands past 64G" or "has more than 4194304 entries"
	Limit string // which limit, and how to change it
}

func (e *UnpackLimitError) Error() string { return e.What + ", " + e.Limit }

// unpackBudget counts what an import has read and staged against its
// limits. One budget covers every layer of an image, so the limits hold for
// the total.
type unpackBudget struct {
	maxBytes   int64
	maxEntries int
	why        string // where maxBytes comes from, for the error
	read       int64  // decompressed tar stream bytes, across layers
	written    int64  // file data staged, across layers
	entries    int
}

// newUnpackBudget applies opts' limits (defaults for zero), and never more
// than half the free space of the staging file system: the ext4 file is
// written beside the staging tree and needs about as much again.
func newUnpackBudget(opts *BuildOptions, stagingDir string) *unpackBudget {
	b := &unpackBudget{maxBytes: opts.MaxUnpacked, maxEntries: opts.MaxEntries, why: "the limit on an import's unpacked size (image_max_unpacked in the config)"}
	if b.maxBytes <= 0 {
		b.maxBytes = DefaultMaxUnpacked
	}
	if b.maxEntries <= 0 {
		b.maxEntries = DefaultMaxEntries
	}
	var st unix.Statfs_t
	if err := unix.Statfs(stagingDir, &st); err == nil {
		if half := int64(st.Bavail) * st.Bsize / 2; half < b.maxBytes {
			b.maxBytes = half
			b.why = "half the free space where images are built"
		}
	}
	return b
}

// entry counts one archive entry.
func (b *unpackBudget) entry() error {
	if b == nil {
		return nil
	}
	b.entries++
	if b.entries > b.maxEntries {
		return &UnpackLimitError{What: fmt.Sprintf("has more than %d entries", b.maxEntries), Limit: "the limit on an import's entries"}
	}
	return nil
}

func (b *unpackBudget) exceeded() error {
	return &UnpackLimitError{What: "expands past " + sizes.Format(b.maxBytes), Limit: b.why}
}

// reader bounds the decompressed tar stream r.
func (b *unpackBudget) reader(r io.Reader) io.Reader {
	if b == nil {
		return r
	}
	return &budgetReader{b: b, n: &b.read, r: r}
}

// fileReader bounds a staged file's content r.
func (b *unpackBudget) fileReader(r io.Reader) io.Reader {
	if b == nil {
		return r
	}
	return &budgetReader{b: b, n: &b.written, r: r}
}

// budgetReader counts what it reads into *n; reading a byte past the limit
// fails with the limit error instead of returning it.
type budgetReader struct {
	b *unpackBudget
	n *int64
	r io.Reader
}

func (br *budgetReader) Read(p []byte) (int, error) {
	left := br.b.maxBytes - *br.n
	if left <= 0 {
		// Only fail if there is really more: content that ends exactly
		// at the limit is fine.
		var one [1]byte
		if n, err := br.r.Read(one[:]); n == 0 {
			return 0, err
		}
		return 0, br.b.exceeded()
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	n, err := br.r.Read(p)
	*br.n += int64(n)
	return n, err
}
