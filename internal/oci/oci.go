// Package oci owns bangerd's side of OCI registries: resolving a reference
// for a platform (with the owner's docker credentials, or anonymously), and
// a blob cache keyed by digest in which a blob is complete or absent:
// downloads go to a temporary file, are verified against their digest and
// only then renamed into place. Concurrent pulls share each blob's
// download.
package oci

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Transfer reports a blob's download progress.
type Transfer struct {
	Digest string
	Index  int // 1-based position among the image's layers
	Count  int // number of layers
	Done   int64
	Total  int64
	Cached bool // served from the cache, nothing downloaded
}

// Layer is one cached layer blob, in application order (oldest first).
type Layer struct {
	Digest    string
	MediaType string
	Size      int64
	Path      string // the verified blob in the cache
}

// Image is a pulled image: its manifest digest and cached layers.
type Image struct {
	Ref    string // the reference as resolved (registry/repo:tag or @digest)
	Digest string // manifest digest
	Layers []Layer
	Config *v1.ConfigFile
	// ConfigDigest is the config blob's digest (cached beside the layers).
	ConfigDigest string
}

// Cache is the blob cache and puller.
type Cache struct {
	Dir string // blobs live in Dir/blobs/sha256/<hex>
	// Keychain supplies registry credentials (nil: the owner's docker
	// config, then anonymous).
	Keychain authn.Keychain
	// Transport is the HTTP transport (nil: http.DefaultTransport).
	Transport http.RoundTripper
	// Insecure allows plain HTTP registries (tests, local registries).
	Insecure bool

	// gc keeps Prune away from pulls in progress: a pull's blobs are
	// referenced by no image until the caller has built one from them.
	gc sync.RWMutex

	mu       sync.Mutex
	inflight map[string]*fetch // blob downloads by digest
	pulls    map[string]*pull  // whole pulls by reference and platform
}

type fetch struct {
	done chan struct{}
	err  error
}

type pull struct {
	done   chan struct{}
	val    any     // *Image or *Artifact
	layers []Layer // what the waiters report as cached
	err    error
}

// once runs fn for the first caller of key; callers arriving while it runs
// wait for its result and report its layers as cached.
func (c *Cache) once(ctx context.Context, key string, progress func(Transfer), fn func() (any, []Layer, error)) (any, error) {
	c.mu.Lock()
	if c.pulls == nil {
		c.pulls = map[string]*pull{}
	}
	p, waiting := c.pulls[key]
	if !waiting {
		p = &pull{done: make(chan struct{})}
		c.pulls[key] = p
	}
	c.mu.Unlock()
	if waiting {
		select {
		case <-p.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if p.err == nil && progress != nil {
			for i, l := range p.layers {
				progress(Transfer{Digest: l.Digest, Index: i + 1, Count: len(p.layers), Done: l.Size, Total: l.Size, Cached: true})
			}
		}
		return p.val, p.err
	}
	p.val, p.layers, p.err = fn()
	c.mu.Lock()
	delete(c.pulls, key)
	c.mu.Unlock()
	close(p.done)
	return p.val, p.err
}

// parseRef parses a reference, allowing plain HTTP when the cache does.
func (c *Cache) parseRef(ref string) (name.Reference, error) {
	var nopts []name.Option
	if c.Insecure {
		nopts = append(nopts, name.Insecure)
	}
	r, err := name.ParseReference(ref, nopts...)
	if err != nil {
		return nil, InvalidRefError{fmt.Errorf("reference %q: %w", ref, err)}
	}
	return r, nil
}

// InvalidRefError is a reference or platform that cannot be parsed.
type InvalidRefError struct{ Err error }

func (e InvalidRefError) Error() string { return e.Err.Error() }
func (e InvalidRefError) Unwrap() error { return e.Err }

// BlobPath is where a verified blob with digest d ("sha256:<hex>") lives.
func (c *Cache) BlobPath(d string) (string, error) {
	algo, hexd, ok := strings.Cut(d, ":")
	if !ok || algo != "sha256" || len(hexd) != 64 {
		return "", fmt.Errorf("digest %q: want sha256:<64 hex digits>", d)
	}
	if _, err := hex.DecodeString(hexd); err != nil {
		return "", fmt.Errorf("digest %q: %w", d, err)
	}
	return filepath.Join(c.Dir, "blobs", "sha256", hexd), nil
}

func (c *Cache) options(ctx context.Context, platform string) ([]remote.Option, error) {
	kc := c.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	opts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(kc)}
	if c.Transport != nil {
		opts = append(opts, remote.WithTransport(c.Transport))
	}
	if platform != "" {
		p, err := v1.ParsePlatform(platform)
		if err != nil {
			return nil, InvalidRefError{fmt.Errorf("platform %q: %w", platform, err)}
		}
		opts = append(opts, remote.WithPlatform(*p))
	}
	return opts, nil
}

// Pull resolves ref for platform ("" = linux/amd64) and makes sure every
// layer blob is in the cache, reporting progress per blob. A pull of a
// reference already being pulled waits for that one (manifest, config and
// blobs are fetched once) and then reports every layer as cached.
func (c *Cache) Pull(ctx context.Context, ref, platform string, progress func(Transfer)) (*Image, error) {
	if platform == "" {
		platform = "linux/amd64"
	}
	v, err := c.once(ctx, "image\x00"+ref+"\x00"+platform, progress, func() (any, []Layer, error) {
		img, err := c.pull(ctx, ref, platform, progress)
		if err != nil {
			return nil, nil, err
		}
		return img, img.Layers, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*Image), nil
}

func (c *Cache) pull(ctx context.Context, ref, platform string, progress func(Transfer)) (*Image, error) {
	r, err := c.parseRef(ref)
	if err != nil {
		return nil, err
	}
	opts, err := c.options(ctx, platform)
	if err != nil {
		return nil, err
	}
	img, err := remote.Image(r, opts...)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", r.Name(), err)
	}
	digest, err := img.Digest()
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", r.Name(), err)
	}
	cfg, err := c.config(img)
	if err != nil {
		return nil, fmt.Errorf("read config of %s: %w", r.Name(), err)
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("list layers of %s: %w", r.Name(), err)
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("read manifest of %s: %w", r.Name(), err)
	}
	out := &Image{Ref: r.Name(), Digest: digest.String(), Config: cfg, ConfigDigest: m.Config.Digest.String()}
	for i, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return nil, fmt.Errorf("layer %d of %s: %w", i+1, r.Name(), err)
		}
		size, err := l.Size()
		if err != nil {
			return nil, fmt.Errorf("layer %d of %s: %w", i+1, r.Name(), err)
		}
		mt, err := l.MediaType()
		if err != nil {
			return nil, fmt.Errorf("layer %d of %s: %w", i+1, r.Name(), err)
		}
		if !isLayerType(mt) {
			return nil, fmt.Errorf("layer %d of %s: media type %q is not a filesystem layer", i+1, r.Name(), mt)
		}
		tr := Transfer{Digest: d.String(), Index: i + 1, Count: len(layers), Total: size}
		path, err := c.blob(ctx, l, d.String(), size, func(done int64, cached bool) {
			if progress != nil {
				tr.Done, tr.Cached = done, cached
				progress(tr)
			}
		})
		if err != nil {
			return nil, err
		}
		out.Layers = append(out.Layers, Layer{Digest: d.String(), MediaType: string(mt), Size: size, Path: path})
	}
	return out, nil
}

// config returns the image's config, from the cache when it is there (it
// is a blob like the layers, verified the same way).
func (c *Cache) config(img v1.Image) (*v1.ConfigFile, error) {
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	raw, err := c.rawConfig(img, m.Config)
	if err != nil {
		return nil, err
	}
	return v1.ParseConfigFile(bytes.NewReader(raw))
}

// writeBlob puts verified content at path through a temporary file.
func writeBlob(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("cache blob: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".partial-")
	if err != nil {
		return fmt.Errorf("cache blob: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("cache blob: %w", err)
	}
	return nil
}

func isLayerType(mt types.MediaType) bool {
	switch mt {
	case types.DockerLayer, types.DockerUncompressedLayer, types.OCILayer, types.OCIUncompressedLayer,
		types.OCILayerZStd, types.DockerForeignLayer, types.OCIRestrictedLayer, types.OCIUncompressedRestrictedLayer:
		return true
	}
	return false
}

// blob returns the cached path of layer l, downloading it once however
// many pulls ask for it at the same time.
func (c *Cache) blob(ctx context.Context, l v1.Layer, d string, size int64, progress func(done int64, cached bool)) (string, error) {
	path, err := c.BlobPath(d)
	if err != nil {
		return "", err
	}
	for {
		if st, err := os.Stat(path); err == nil {
			if st.Size() == size {
				progress(size, true)
				return path, nil
			}
			// Only verified blobs are renamed into place; a size that
			// does not match means the cache was tampered with.
			_ = os.Remove(path)
		}
		c.mu.Lock()
		if c.inflight == nil {
			c.inflight = map[string]*fetch{}
		}
		f, waiting := c.inflight[d]
		if !waiting {
			f = &fetch{done: make(chan struct{})}
			c.inflight[d] = f
		}
		c.mu.Unlock()
		if waiting {
			select {
			case <-f.done:
			case <-ctx.Done():
				return "", ctx.Err()
			}
			if f.err != nil {
				return "", f.err
			}
			continue // now in the cache
		}
		f.err = c.download(ctx, l, d, size, path, progress)
		c.mu.Lock()
		delete(c.inflight, d)
		c.mu.Unlock()
		close(f.done)
		if f.err != nil {
			return "", f.err
		}
		return path, nil
	}
}

// download fetches the compressed blob into a temporary file next to
// path, verifies its digest and size, and renames it into place.
func (c *Cache) download(ctx context.Context, l v1.Layer, d string, size int64, path string, progress func(int64, bool)) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("cache blob %s: %w", d, err)
	}
	rc, err := l.Compressed()
	if err != nil {
		return fmt.Errorf("fetch blob %s: %w", d, err)
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(filepath.Dir(path), ".partial-")
	if err != nil {
		return fmt.Errorf("cache blob %s: %w", d, err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename this is a no-op
	h := sha256.New()
	pw := &progressWriter{report: func(n int64) { progress(n, false) }}
	n, err := io.Copy(io.MultiWriter(tmp, h, pw), ctxReader{ctx, rc})
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fetch blob %s: %w", d, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != d {
		return fmt.Errorf("fetch blob %s: content has digest %s: %w", d, got, ErrDigestMismatch)
	}
	if n != size {
		return fmt.Errorf("fetch blob %s: %d bytes, manifest says %d: %w", d, n, size, ErrDigestMismatch)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("cache blob %s: %w", d, err)
	}
	progress(n, false)
	return nil
}

// ErrDigestMismatch is a blob whose content is not what its digest says.
var ErrDigestMismatch = errors.New("blob does not match its digest")

type progressWriter struct {
	n      int64
	last   int64
	report func(int64)
}

func (p *progressWriter) Write(b []byte) (int, error) {
	p.n += int64(len(b))
	// Report every 256 KiB, not on every small write.
	if p.n-p.last >= 256<<10 {
		p.last = p.n
		p.report(p.n)
	}
	return len(b), nil
}

// ctxReader stops a copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(b)
}

// Hold keeps Prune from running until the returned release is called.
// Callers hold it from before a pull until what they build from its blobs
// is recorded, so that a concurrent prune cannot take the blobs away.
func (c *Cache) Hold() (release func()) {
	c.gc.RLock()
	return c.gc.RUnlock
}

// Prune removes cached blobs not in the set keep returns (digests), and
// leftover partial downloads. With dryRun it only reports. It returns the
// removed (or removable) digests and their total size. It waits for held
// pulls, and asks keep only then, so what they recorded is kept.
func (c *Cache) Prune(keepFn func() (map[string]bool, error), dryRun bool) ([]string, int64, error) {
	c.gc.Lock()
	defer c.gc.Unlock()
	keep := map[string]bool{}
	if keepFn != nil {
		var err error
		if keep, err = keepFn(); err != nil {
			return nil, 0, fmt.Errorf("prune cache: %w", err)
		}
	}
	dir := filepath.Join(c.Dir, "blobs", "sha256")
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("prune cache: %w", err)
	}
	var gone []string
	var total int64
	for _, e := range ents {
		d := "sha256:" + e.Name()
		if strings.HasPrefix(e.Name(), ".partial-") {
			d = e.Name()
		} else if keep[d] {
			continue
		}
		if info, err := e.Info(); err == nil {
			total += info.Size()
		}
		gone = append(gone, d)
		if !dryRun {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				return gone, total, fmt.Errorf("prune cache: %w", err)
			}
		}
	}
	return gone, total, nil
}
