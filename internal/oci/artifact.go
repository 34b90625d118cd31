package oci

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"
)

// Media types of banger's own artifacts (docs/artifacts.md). The config
// media type is also the manifest's artifactType: it says what the artifact
// is, the layer media types say what each part is.
const (
	KernelConfigType      = "application/vnd.banger.kernel.config.v1+json"
	KernelVmlinuxType     = "application/vnd.banger.kernel.vmlinux.v1"
	KernelModulesCpioType = "application/vnd.banger.kernel.modules-cpio.v1"
	KernelInitrdType      = "application/vnd.banger.kernel.initrd.v1"
	KernelModulesTreeType = "application/vnd.banger.kernel.modules.v1.tar+gzip"

	ImageConfigType = "application/vnd.banger.image.config.v1+json"
	ImageRootfsType = "application/vnd.banger.image.rootfs.v1.ext4+zstd"
)

// maxArtifactConfig bounds the config blob read into memory: a banger
// config is a few hundred bytes, a registry must not make us hold more.
const maxArtifactConfig = 1 << 20

// titleAnnotation names a layer's file, so generic tools (oras pull) can
// save the parts under useful names. banger itself goes by media type.
const titleAnnotation = "org.opencontainers.image.title"

// Part is a file to push as one layer of an artifact, stored as is: the
// layer digest is the sha256 of the file.
type Part struct {
	MediaType string
	Path      string
	Title     string // optional file name for generic tools
}

// ConfigPart describes a part in an artifact's config: SHA256 (hex) and
// Size are of the part's content once any transport compression of its
// layer (+zstd) is undone, i.e. of the file the puller ends up with.
type ConfigPart struct {
	MediaType string `json:"media_type"`
	SHA256    string `json:"sha256"`
	Size      int64  `json:"size"`
}

// ImageConfig is the config of an image bundle (ImageConfigType). Parts
// has the rootfs part: its SHA256 is the ext4's, which is banger's image ID.
type ImageConfig struct {
	Parts []ConfigPart `json:"parts"`
	// Kernel optionally names the kernel artifact (a registry reference)
	// the image is meant to boot with.
	Kernel string `json:"kernel,omitempty"`
}

// Artifact is a pulled banger artifact: its raw config and its cached parts
// in manifest order.
type Artifact struct {
	Ref          string // the reference as resolved
	Digest       string // manifest digest
	ConfigType   string
	Config       []byte
	ConfigDigest string // the config blob's digest (cached beside the parts)
	Parts        []Layer
}

// ArtifactTypeError is a manifest that is not the kind of artifact asked
// for (an image bundle where a kernel was wanted, a container image...).
type ArtifactTypeError struct {
	Ref       string
	Got, Want string
}

func (e ArtifactTypeError) Error() string {
	return fmt.Sprintf("%s is a %q artifact, not %q", e.Ref, e.Got, e.Want)
}

// PushArtifact pushes parts, in order, with config (of media type
// configType) as one OCI manifest to ref and returns the manifest digest.
// Nothing in the manifest depends on time or paths, so pushing the same
// files and config twice gives the same digest. Progress is reported per
// part; a part the registry already has is reported as Cached.
func (c *Cache) PushArtifact(ctx context.Context, ref, configType string, config []byte, parts []Part, progress func(Transfer)) (string, error) {
	r, err := c.parseRef(ref)
	if err != nil {
		return "", err
	}
	if configType == "" || !json.Valid(config) {
		return "", fmt.Errorf("push %s: config must be JSON with a media type", r.Name())
	}
	img, tracker, err := newArtifactImage(configType, config, parts, progress)
	if err != nil {
		return "", fmt.Errorf("push %s: %w", r.Name(), err)
	}
	opts, err := c.options(ctx, "")
	if err != nil {
		return "", err
	}
	if err := remote.Write(r, img, opts...); err != nil {
		return "", fmt.Errorf("push %s: %w", r.Name(), err)
	}
	tracker.finish()
	d, err := img.Digest()
	if err != nil {
		return "", fmt.Errorf("push %s: %w", r.Name(), err)
	}
	return d.String(), nil
}

// artifactImage is the v1.Image core of an artifact to push: a manifest
// built here (with our config media type and artifactType, which
// mutate cannot express) over file-backed layers.
type artifactImage struct {
	manifest []byte
	config   []byte
	layers   map[v1.Hash]*fileLayer
}

func newArtifactImage(configType string, config []byte, parts []Part, progress func(Transfer)) (v1.Image, *pushTracker, error) {
	t := &pushTracker{progress: progress, parts: make([]Transfer, len(parts))}
	ai := &artifactImage{config: config, layers: map[v1.Hash]*fileLayer{}}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  configType,
		Config: v1.Descriptor{
			MediaType: types.MediaType(configType),
			Size:      int64(len(config)),
			Digest:    v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sha256.Sum256(config))},
		},
		Layers: []v1.Descriptor{},
	}
	for i, p := range parts {
		if p.MediaType == "" {
			return nil, nil, fmt.Errorf("part %s: no media type", p.Path)
		}
		h, size, err := hashFile(p.Path)
		if err != nil {
			return nil, nil, fmt.Errorf("hash part: %w", err)
		}
		t.parts[i] = Transfer{Digest: h.String(), Index: i + 1, Count: len(parts), Total: size}
		d := v1.Descriptor{MediaType: types.MediaType(p.MediaType), Size: size, Digest: h}
		if p.Title != "" {
			d.Annotations = map[string]string{titleAnnotation: p.Title}
		}
		m.Layers = append(m.Layers, d)
		if _, dup := ai.layers[h]; !dup {
			ai.layers[h] = &fileLayer{path: p.Path, mt: d.MediaType, hash: h, size: size, tracker: t, index: i}
		}
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, nil, err
	}
	ai.manifest = raw
	img, err := partial.CompressedToImage(ai)
	return img, t, err
}

func (a *artifactImage) RawConfigFile() ([]byte, error)      { return a.config, nil }
func (a *artifactImage) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }
func (a *artifactImage) RawManifest() ([]byte, error)        { return a.manifest, nil }

func (a *artifactImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if l, ok := a.layers[h]; ok {
		return l, nil
	}
	return nil, fmt.Errorf("no part with digest %s", h)
}

func hashFile(p string) (v1.Hash, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return v1.Hash{}, 0, err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return v1.Hash{}, 0, err
	} else if !st.Mode().IsRegular() {
		return v1.Hash{}, 0, fmt.Errorf("%s: not a regular file", p)
	}
	return v1.SHA256(f)
}

// fileLayer is a part pushed byte for byte. It implements DiffID and
// Uncompressed itself so that nothing in go-containerregistry tries to
// gunzip a raw vmlinux.
type fileLayer struct {
	path    string
	mt      types.MediaType
	hash    v1.Hash
	size    int64
	tracker *pushTracker
	index   int
}

func (l *fileLayer) Digest() (v1.Hash, error)            { return l.hash, nil }
func (l *fileLayer) DiffID() (v1.Hash, error)            { return l.hash, nil }
func (l *fileLayer) Size() (int64, error)                { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error) { return l.mt, nil }
func (l *fileLayer) Uncompressed() (io.ReadCloser, error) {
	return l.Compressed()
}

func (l *fileLayer) Compressed() (io.ReadCloser, error) {
	f, err := os.Open(l.path)
	if err != nil {
		return nil, err
	}
	l.tracker.opened(l.index)
	pw := &progressWriter{report: func(n int64) { l.tracker.report(l.index, n) }}
	return struct {
		io.Reader
		io.Closer
	}{io.TeeReader(f, pw), f}, nil
}

// pushTracker turns the concurrent uploads of remote.Write into per-part
// Transfer events, delivered one at a time.
type pushTracker struct {
	mu       sync.Mutex
	progress func(Transfer)
	parts    []Transfer
	uploaded []bool
}

func (t *pushTracker) opened(i int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.uploaded == nil {
		t.uploaded = make([]bool, len(t.parts))
	}
	t.uploaded[i] = true
}

func (t *pushTracker) report(i int, n int64) {
	if t.progress == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	tr := t.parts[i]
	tr.Done = n
	t.progress(tr)
}

// finish reports every part as complete: uploaded, or already in the
// registry (never opened, so Cached). Parts sharing a digest share the
// first one's upload.
func (t *pushTracker) finish() {
	if t.progress == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	sent := map[string]bool{}
	for i, tr := range t.parts {
		tr.Done = tr.Total
		tr.Cached = sent[tr.Digest] || t.uploaded == nil || !t.uploaded[i]
		sent[tr.Digest] = true
		t.progress(tr)
	}
}

// PullArtifact resolves ref, refuses it unless its config media type (and
// artifactType, when set) is wantConfigType, and makes sure the config and
// every part are in the cache, verified like Pull's layers. Pulls of the
// same reference at the same time share one download.
func (c *Cache) PullArtifact(ctx context.Context, ref, wantConfigType string, progress func(Transfer)) (*Artifact, error) {
	v, err := c.once(ctx, "artifact\x00"+ref+"\x00"+wantConfigType, progress, func() (any, []Layer, error) {
		a, err := c.pullArtifact(ctx, ref, wantConfigType, progress)
		if err != nil {
			return nil, nil, err
		}
		return a, a.Parts, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*Artifact), nil
}

func (c *Cache) pullArtifact(ctx context.Context, ref, want string, progress func(Transfer)) (*Artifact, error) {
	r, err := c.parseRef(ref)
	if err != nil {
		return nil, err
	}
	opts, err := c.options(ctx, "")
	if err != nil {
		return nil, err
	}
	desc, err := remote.Get(r, opts...)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", r.Name(), err)
	}
	switch desc.MediaType {
	case types.OCIManifestSchema1, types.DockerManifestSchema2:
	default:
		// An index would make remote pick a platform; an artifact has none.
		return nil, ArtifactTypeError{Ref: r.Name(), Got: string(desc.MediaType), Want: want}
	}
	img, err := desc.Image()
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", r.Name(), err)
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("read manifest of %s: %w", r.Name(), err)
	}
	// Checked before any blob is fetched: a wrong artifact costs nothing.
	if got := string(m.Config.MediaType); got != want {
		return nil, ArtifactTypeError{Ref: r.Name(), Got: got, Want: want}
	}
	if m.ArtifactType != "" && m.ArtifactType != want {
		return nil, ArtifactTypeError{Ref: r.Name(), Got: m.ArtifactType, Want: want}
	}
	if m.Config.Size < 0 || m.Config.Size > maxArtifactConfig {
		return nil, fmt.Errorf("read config of %s: %d bytes, the limit is %d", r.Name(), m.Config.Size, maxArtifactConfig)
	}
	for i, l := range m.Layers {
		// Foreign URLs would send remote to fetch from wherever the
		// manifest says; banger's parts live in the registry.
		if len(l.URLs) > 0 {
			return nil, fmt.Errorf("part %d of %s: foreign URLs are not allowed", i+1, r.Name())
		}
		if l.Size < 0 {
			return nil, fmt.Errorf("part %d of %s: negative size", i+1, r.Name())
		}
	}
	raw, err := c.rawConfig(img, m.Config)
	if err != nil {
		return nil, fmt.Errorf("read config of %s: %w", r.Name(), err)
	}
	digest, err := img.Digest()
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", r.Name(), err)
	}
	out := &Artifact{Ref: r.Name(), Digest: digest.String(), ConfigType: want, Config: raw, ConfigDigest: m.Config.Digest.String()}
	for i, ld := range m.Layers {
		l, err := img.LayerByDigest(ld.Digest)
		if err != nil {
			return nil, fmt.Errorf("part %d of %s: %w", i+1, r.Name(), err)
		}
		d := ld.Digest.String()
		tr := Transfer{Digest: d, Index: i + 1, Count: len(m.Layers), Total: ld.Size}
		path, err := c.blob(ctx, l, d, ld.Size, func(done int64, cached bool) {
			if progress != nil {
				tr.Done, tr.Cached = done, cached
				progress(tr)
			}
		})
		if err != nil {
			return nil, err
		}
		out.Parts = append(out.Parts, Layer{Digest: d, MediaType: string(ld.MediaType), Size: ld.Size, Path: path})
	}
	return out, nil
}

// rawConfig returns the config blob d of img, from the cache when it is
// there; a fetched one is verified against d before it is cached.
func (c *Cache) rawConfig(img v1.Image, d v1.Descriptor) ([]byte, error) {
	path, err := c.BlobPath(d.Digest.String())
	if err != nil {
		return nil, err
	}
	if raw, err := os.ReadFile(path); err == nil && int64(len(raw)) == d.Size {
		return raw, nil
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		return nil, err
	}
	if got := "sha256:" + fmt.Sprintf("%x", sha256.Sum256(raw)); got != d.Digest.String() {
		return nil, fmt.Errorf("config has digest %s, manifest says %s: %w", got, d.Digest, ErrDigestMismatch)
	}
	if int64(len(raw)) != d.Size {
		return nil, fmt.Errorf("config has %d bytes, manifest says %d: %w", len(raw), d.Size, ErrDigestMismatch)
	}
	if err := writeBlob(path, raw); err != nil {
		return nil, err
	}
	return raw, nil
}

// CompressZstd writes src zstd-compressed to dst (through a temporary file)
// for an ImageRootfsType part, and returns the sha256 (hex) and size of
// src for the config. The encoder settings are fixed, so the same input
// gives the same bytes, and the same layer digest, every time.
func CompressZstd(ctx context.Context, src, dst string) (string, int64, error) {
	sum, n, err := compressZstd(ctx, src, dst)
	if err != nil {
		return "", 0, fmt.Errorf("compress %s: %w", src, err)
	}
	return sum, n, nil
}

func compressZstd(ctx context.Context, src, dst string) (string, int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", 0, err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".partial-")
	if err != nil {
		return "", 0, err
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	defer tmp.Close()
	// The default stream encoder only pipelines whole blocks, so its output
	// does not depend on the machine's core count.
	enc, err := zstd.NewWriter(tmp, zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		return "", 0, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(enc, h), ctxReader{ctx, in})
	if cerr := enc.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// DecompressZstd writes the zstd blob src decompressed to dst, sparse
// where the content is zero (an ext4 is mostly unused blocks), and renames
// it into place only once its sha256 (hex) and size are the ones the
// artifact's config promised; on error dst is untouched. The promised size
// is the registry's word, and a few KiB of zstd can expand to any of it,
// so a size past maxSize is refused before anything is written.
func DecompressZstd(ctx context.Context, src, dst, wantSHA256 string, wantSize, maxSize int64) error {
	if wantSize > maxSize {
		return fmt.Errorf("decompress %s: the config promises %d bytes, past the %d-byte limit on what an import unpacks", src, wantSize, maxSize)
	}
	if err := decompressZstd(ctx, src, dst, wantSHA256, wantSize); err != nil {
		return fmt.Errorf("decompress %s: %w", src, err)
	}
	return nil
}

func decompressZstd(ctx context.Context, src, dst, wantSHA256 string, wantSize int64) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	dec, err := zstd.NewReader(in)
	if err != nil {
		return err
	}
	defer dec.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".partial-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	defer tmp.Close()
	h := sha256.New()
	// One byte past the promised size is enough to tell a longer stream.
	n, err := copySparse(tmp, io.TeeReader(io.LimitReader(ctxReader{ctx, dec}, wantSize+1), h))
	if err != nil {
		return err
	}
	if n != wantSize {
		return fmt.Errorf("content is %d bytes, config says %d: %w", n, wantSize, ErrDigestMismatch)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != wantSHA256 {
		return fmt.Errorf("content has sha256 %s, config says %s: %w", got, wantSHA256, ErrDigestMismatch)
	}
	if err := tmp.Truncate(n); err != nil { // a trailing hole has no write to extend the file
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}

// copySparse copies r to the empty file f, seeking over all-zero blocks
// instead of writing them.
func copySparse(f *os.File, r io.Reader) (int64, error) {
	buf := make([]byte, 64<<10)
	zero := make([]byte, len(buf))
	var n int64
	for {
		k, err := io.ReadFull(r, buf)
		if k > 0 {
			if bytes.Equal(buf[:k], zero[:k]) {
				if _, serr := f.Seek(int64(k), io.SeekCurrent); serr != nil {
					return n, serr
				}
			} else if _, werr := f.Write(buf[:k]); werr != nil {
				return n, werr
			}
			n += int64(k)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}
