package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"
)

// OCI whiteout names (image-spec layer.md). A layer entry "dir/.wh.name"
// deletes dir/name from the layers below; "dir/.wh..wh..opq" hides
// everything the layers below put in dir. Other ".wh..wh." names are aufs
// bookkeeping that never belongs in a root filesystem.
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// LayerSource is one OCI or Docker image layer.
type LayerSource struct {
	// Digest names the layer in errors and progress ("sha256:..."). It is
	// not checked against the content: verifying blobs is the caller's job.
	Digest string
	// Open returns the layer's tar stream, plain or gzip, zstd or xz
	// compressed. It is called once, when the layer's turn comes, and the
	// stream is closed before the next layer is opened.
	Open func() (io.ReadCloser, error)
}

// FileLayer is a LayerSource that reads the blob stored at p.
func FileLayer(digest, p string) LayerSource {
	return LayerSource{Digest: digest, Open: func() (io.ReadCloser, error) { return os.Open(p) }}
}

// ImportLayers builds the ext4 image out from image layers, oldest first,
// with OCI semantics: later layers replace what earlier ones put at a path
// (a directory restated keeps its children), whiteouts and opaque
// whiteouts hide what the layers below hold, and the whiteout markers
// themselves never reach the image.
//
// The same path rules as ImportTar apply across layers: absolute names,
// ".." components, any entry (whiteouts included) whose parent is a
// symlink, and hardlinks to anything but a regular file already in the tree
// fail the import with an error naming the layer and the entry; symlinks
// are never followed, not even ones that would resolve inside the rootfs.
// Device nodes and FIFOs are not created but recorded in Result.Skipped:
// a pulled image must not carry device nodes into a guest unvetted.
// Layers are streamed one at a time, never held in memory, and what they
// unpack together is bounded as for ImportTar.
func ImportLayers(ctx context.Context, layers []LayerSource, out string, opts BuildOptions) (*Result, error) {
	if len(layers) == 0 {
		return nil, errors.New("import layers: no layers given")
	}
	for i, l := range layers {
		if l.Open == nil {
			return nil, fmt.Errorf("import layers: layer %s has no Open function", layerName(i, len(layers), l))
		}
	}
	return withStaging(out, &opts, func(s *stager) (*Result, error) {
		// One budget for all layers: the limit is on the image.
		s.budget = newUnpackBudget(&opts, s.root)
		for i, l := range layers {
			name := layerName(i, len(layers), l)
			opts.progress("applying layer %s", name)
			if err := applyLayer(ctx, s, l); err != nil {
				return nil, fmt.Errorf("apply layer %s: %w", name, err)
			}
		}
		return buildExt4(ctx, s, out, &opts)
	})
}

func layerName(i, n int, l LayerSource) string {
	if l.Digest == "" {
		return fmt.Sprintf("%d of %d", i+1, n)
	}
	return fmt.Sprintf("%s (%d of %d)", l.Digest, i+1, n)
}

// layerApplier applies one layer's entries to the stager.
type layerApplier struct {
	s *stager
	// stated holds the paths this layer put in the tree: its own entries
	// and the parent directories they implied. Whiteouts only hide what
	// lower layers put there, so these survive whiteouts of the same
	// layer whatever the order inside the layer.
	stated map[string]bool
	// holds marks every ancestor of a stated path, which a whiteout of
	// the same layer must keep as a directory.
	holds map[string]bool
}

func applyLayer(ctx context.Context, s *stager, l LayerSource) error {
	rc, err := l.Open()
	if err != nil {
		return fmt.Errorf("open layer: %w", err)
	}
	defer rc.Close()
	dr, closeFn, err := decompress(rc)
	if err != nil {
		return err
	}
	defer closeFn()
	a := &layerApplier{s: s, stated: map[string]bool{}, holds: map[string]bool{}}
	tr := tar.NewReader(s.budget.reader(dr))
	// No entries at all is fine: empty layers are common.
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read layer: %w", err)
		}
		if err := s.budget.entry(); err != nil {
			return fmt.Errorf("entry %q: %w", h.Name, err)
		}
		if err := a.apply(h, tr); err != nil {
			return fmt.Errorf("entry %q: %w", h.Name, err)
		}
	}
}

func parentOf(rel string) string {
	if d := path.Dir(rel); d != "." {
		return d
	}
	return ""
}

func (a *layerApplier) apply(h *tar.Header, body io.Reader) error {
	if h.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	rel, err := cleanName(h.Name)
	if err != nil {
		return err
	}
	// Anything below a whiteout-named directory is aufs bookkeeping or
	// junk; staging it would put a whiteout name into the image.
	for p := parentOf(rel); p != ""; p = parentOf(p) {
		if strings.HasPrefix(path.Base(p), whiteoutPrefix) {
			a.s.skip(rel, 0, fmt.Sprintf("inside whiteout-named directory %q", p))
			return nil
		}
	}
	switch base := path.Base(rel); {
	case base == whiteoutOpaque:
		return a.opaque(rel)
	case strings.HasPrefix(base, whiteoutMeta):
		a.s.skip(rel, 0, "aufs whiteout metadata is not part of the image")
		return nil
	case strings.HasPrefix(base, whiteoutPrefix):
		return a.whiteout(rel)
	}
	if rel == "" && h.Typeflag != tar.TypeDir {
		return errors.New("the root must be a directory")
	}
	e, err := tarHeaderEntry(a.s, rel, h, false)
	if err != nil {
		return err
	}
	if e == nil {
		// Skipped (a device node, say): it still replaces what the
		// layers below had at rel, as creating it would have.
		return a.clear(rel)
	}
	for k := range e.Xattrs {
		// Overlayfs keeps its own whiteouts, opaque markers and
		// redirects in these; a guest overlay must not see the build
		// host's.
		if strings.HasPrefix(k, "trusted.overlay.") || strings.HasPrefix(k, "user.overlay.") {
			delete(e.Xattrs, k)
			a.s.skipped = append(a.s.skipped, Skipped{Path: rel, Reason: fmt.Sprintf("extended attribute %q not copied: overlayfs metadata", k)})
		}
	}
	implied := a.missingParents(rel)
	if err := a.s.add(e, body); err != nil {
		return err
	}
	if _, ok := a.s.entries[rel]; !ok {
		return nil // skipped by the stager (an unaddressable name)
	}
	delete(a.s.skippedAt, rel)
	for _, p := range implied {
		a.state(p)
	}
	a.state(rel)
	return nil
}

// missingParents lists the ancestors of rel not yet in the tree, which
// staging rel will create as directories of this layer.
func (a *layerApplier) missingParents(rel string) []string {
	var out []string
	for p := parentOf(rel); p != ""; p = parentOf(p) {
		if _, ok := a.s.entries[p]; ok {
			break // its ancestors exist too
		}
		out = append(out, p)
	}
	return out
}

func (a *layerApplier) state(rel string) {
	a.stated[rel] = true
	for p := parentOf(rel); p != "" && !a.holds[p]; p = parentOf(p) {
		a.holds[p] = true
	}
}

// parentsAreDirs reports whether every ancestor of rel is a directory in
// the tree. A symlinked ancestor is an error, as for any other entry: the
// layer is trying to act through the link.
func (a *layerApplier) parentsAreDirs(rel string) (bool, error) {
	var chain []string
	for p := parentOf(rel); p != ""; p = parentOf(p) {
		chain = append(chain, p)
	}
	for i := len(chain) - 1; i >= 0; i-- {
		e, ok := a.s.entries[chain[i]]
		switch {
		case !ok:
			return false, nil
		case e.Kind == KindSymlink:
			return false, fmt.Errorf("parent %q is a symlink", chain[i])
		case e.Kind != KindDir:
			return false, nil
		}
	}
	return true, nil
}

// clear removes whatever is at rel, for a skipped entry: it replaces what
// the layers below had there with nothing, but still implies its parents,
// as creating it would have.
func (a *layerApplier) clear(rel string) error {
	if _, ok := a.s.underSkipped(rel); ok || inexpressible(rel) != "" {
		return nil
	}
	implied := a.missingParents(rel)
	if err := a.s.ensureParent(rel); err != nil {
		return err
	}
	for _, p := range implied {
		a.state(p)
	}
	if old, ok := a.s.entries[rel]; ok {
		return a.s.remove(old)
	}
	return nil
}

// whiteout applies "dir/.wh.name": dir/name goes, whatever it is, unless
// this layer itself put it there. A whiteout for nothing is fine.
func (a *layerApplier) whiteout(rel string) error {
	name := strings.TrimPrefix(path.Base(rel), whiteoutPrefix)
	if name == "" || name == "." || name == ".." {
		return fmt.Errorf("whiteout names no entry")
	}
	target := name
	if dir := parentOf(rel); dir != "" {
		target = dir + "/" + name
	}
	ok, err := a.parentsAreDirs(target)
	if err != nil || !ok {
		return err
	}
	delete(a.s.skippedAt, target)
	return a.hide(target, true)
}

// opaque applies "dir/.wh..wh..opq": dir is a directory of this layer
// and nothing the layers below put in it stays.
func (a *layerApplier) opaque(rel string) error {
	dir := parentOf(rel)
	if p, ok := a.s.underSkipped(rel); ok {
		a.s.skip(rel, 0, fmt.Sprintf("parent %q was skipped", p))
		return nil
	}
	if why := inexpressible(rel); why != "" {
		a.s.skip(rel, 0, why)
		return nil
	}
	implied := a.missingParents(rel)
	if err := a.s.ensureParent(rel); err != nil {
		return err
	}
	for _, p := range implied {
		a.state(p)
	}
	return a.hide(dir, false)
}

// hide removes root (when self is set) and everything under it that this
// layer did not state. Directories that only hold entries of this layer
// stay, but as the plain directories the layer implied: the lower
// directory's owner and mode are hidden too, so the result does not depend
// on where in the layer the whiteout comes.
func (a *layerApplier) hide(root string, self bool) error {
	if self {
		e, ok := a.s.entries[root]
		if !ok {
			return nil
		}
		if e.Kind != KindDir {
			if a.stated[root] {
				return nil
			}
			return a.s.remove(e)
		}
	}
	var under []*Entry
	prefix := root + "/"
	for p, e := range a.s.entries {
		// An opaque root itself stays; the tree's root always does.
		if (self && p == root) || (p != "" && (root == "" || strings.HasPrefix(p, prefix))) {
			under = append(under, e)
		}
	}
	// Parents first, so a removed directory takes its subtree along.
	sort.Slice(under, func(i, j int) bool { return under[i].Path < under[j].Path })
	for _, e := range under {
		switch {
		case a.s.entries[e.Path] != e:
			// Already gone with a removed parent.
		case a.stated[e.Path]:
		case a.holds[e.Path] && e.Kind == KindDir:
			e.UID, e.GID, e.Mode, e.ModTime, e.Xattrs = 0, 0, 0o755, time.Time{}, nil
			if err := a.s.applyHostMeta(e); err != nil {
				return err
			}
			a.state(e.Path)
		default:
			if err := a.s.remove(e); err != nil {
				return err
			}
		}
	}
	return nil
}
