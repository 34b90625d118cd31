package oci

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// testParts writes files of the given sizes (distinct, not compressible
// by accident) and returns them as parts of alternating media types.
func testParts(t *testing.T, sizes ...int) []Part {
	t.Helper()
	dir := t.TempDir()
	mts := []string{KernelVmlinuxType, KernelModulesCpioType, KernelInitrdType}
	var parts []Part
	for i, n := range sizes {
		data := make([]byte, n)
		for j := range data {
			data[j] = byte(j*7 + i*13 + j>>9)
		}
		p := filepath.Join(dir, "part"+string(rune('a'+i)))
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		parts = append(parts, Part{MediaType: mts[i%len(mts)], Path: p, Title: filepath.Base(p)})
	}
	return parts
}

func cachedFiles(t *testing.T, c *Cache) []string {
	t.Helper()
	ents, _ := os.ReadDir(filepath.Join(c.Dir, "blobs", "sha256"))
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestArtifactRoundTrip(t *testing.T) {
	reg := newTestRegistry(t)
	ref := reg.host + "/kernels/test:v1"
	parts := testParts(t, 300<<10, 1000, 0)
	config := []byte(`{"version":"6.1.0-test"}`)
	pusher := &Cache{Dir: t.TempDir(), Insecure: true}
	var pushed []Transfer
	d1, err := pusher.PushArtifact(context.Background(), ref, KernelConfigType, config, parts, func(tr Transfer) { pushed = append(pushed, tr) })
	if err != nil {
		t.Fatal(err)
	}
	final := map[int]Transfer{}
	for _, tr := range pushed {
		final[tr.Index] = tr
	}
	for i := 1; i <= len(parts); i++ {
		if tr := final[i]; tr.Done != tr.Total || tr.Count != len(parts) || tr.Cached {
			t.Errorf("last push event of part %d: %+v", i, tr)
		}
	}
	// Again, from other copies of the same files: same digest, and every
	// part is already there.
	again := testParts(t, 300<<10, 1000, 0)
	pushed = nil
	d2, err := pusher.PushArtifact(context.Background(), ref, KernelConfigType, config, again, func(tr Transfer) { pushed = append(pushed, tr) })
	if err != nil {
		t.Fatal(err)
	}
	if d1 != d2 {
		t.Errorf("pushing the same parts twice gave %s then %s", d1, d2)
	}
	for _, tr := range pushed {
		if !tr.Cached {
			t.Errorf("second push uploaded part %d: %+v", tr.Index, tr)
		}
	}

	c := &Cache{Dir: t.TempDir(), Insecure: true}
	var pulled []Transfer
	a, err := c.PullArtifact(context.Background(), ref, KernelConfigType, func(tr Transfer) { pulled = append(pulled, tr) })
	if err != nil {
		t.Fatal(err)
	}
	if a.Digest != d1 || a.ConfigType != KernelConfigType || !bytes.Equal(a.Config, config) || len(a.Parts) != len(parts) {
		t.Fatalf("pulled %+v", a)
	}
	for i, p := range parts {
		want, _ := os.ReadFile(p.Path)
		got, err := os.ReadFile(a.Parts[i].Path)
		if err != nil || !bytes.Equal(got, want) || a.Parts[i].MediaType != p.MediaType {
			t.Errorf("part %d: %s, %v, media type %s", i, a.Parts[i].Path, err, a.Parts[i].MediaType)
		}
		if a.Parts[i].Digest != "sha256:"+hex.EncodeToString(sha256Sum(want)) {
			t.Errorf("part %d digest %s is not the file's sha256", i, a.Parts[i].Digest)
		}
	}
	if last := pulled[len(pulled)-1]; last.Index != 3 || last.Done != last.Total {
		t.Errorf("last pull event %+v", last)
	}
	if n := len(cachedFiles(t, c)); n != 4 {
		t.Errorf("cache holds %d blobs, want 3 parts and the config", n)
	}

	// The manifest is one generic tools understand: artifactType set,
	// layers titled.
	r, _ := name.ParseReference(ref, name.Insecure)
	img, err := remote.Image(r)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := img.Manifest()
	if m.ArtifactType != KernelConfigType || m.MediaType != types.OCIManifestSchema1 || m.Layers[0].Annotations[titleAnnotation] != "parta" {
		t.Errorf("manifest %+v", m)
	}
}

func sha256Sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

// TestPullArtifactWrongType: an image bundle, or an ordinary container
// image, pulled as a kernel is refused before anything is downloaded,
// and the error names both types.
func TestPullArtifactWrongType(t *testing.T) {
	reg := newTestRegistry(t)
	bundle := reg.host + "/images/golden:v1"
	c := &Cache{Dir: t.TempDir(), Insecure: true}
	if _, err := c.PushArtifact(context.Background(), bundle, ImageConfigType, []byte(`{"parts":[]}`), testParts(t, 100), nil); err != nil {
		t.Fatal(err)
	}
	container, _ := reg.push(t, "images/container", 1)
	for _, ref := range []string{bundle, container} {
		before := reg.blobGets()
		_, err := c.PullArtifact(context.Background(), ref, KernelConfigType, nil)
		var te ArtifactTypeError
		if !errors.As(err, &te) || te.Want != KernelConfigType || !strings.Contains(err.Error(), KernelConfigType) {
			t.Fatalf("PullArtifact(%s) = %v, want an ArtifactTypeError", ref, err)
		}
		if ref == bundle && (te.Got != ImageConfigType || !strings.Contains(err.Error(), ImageConfigType)) {
			t.Errorf("error %q does not name the image config type", err)
		}
		if reg.blobGets() != before {
			t.Error("a refused artifact had blobs fetched")
		}
	}
	if files := cachedFiles(t, c); len(files) != 0 {
		t.Errorf("cache holds %v after refused pulls", files)
	}
}

// TestPullArtifactTampered: a registry serving wrong or truncated bytes
// for a part or the config gets nothing into the cache; a later clean
// pull works.
func TestPullArtifactTampered(t *testing.T) {
	reg := newTestRegistry(t)
	ref := reg.host + "/kernels/tampered:v1"
	c := &Cache{Dir: t.TempDir(), Insecure: true}
	if _, err := c.PushArtifact(context.Background(), ref, KernelConfigType, []byte(`{}`), testParts(t, 200<<10, 5000), nil); err != nil {
		t.Fatal(err)
	}
	puller := &Cache{Dir: t.TempDir(), Insecure: true}
	for name, set := range map[string]func(bool){"taint": reg.taint.Store, "cut": reg.cut.Store} {
		set(true)
		_, err := puller.PullArtifact(context.Background(), ref, KernelConfigType, nil)
		set(false)
		if err == nil {
			t.Fatalf("%s: a sabotaged pull succeeded", name)
		}
		if files := cachedFiles(t, puller); len(files) != 0 {
			t.Errorf("%s: left in the cache: %v", name, files)
		}
	}
	if _, err := puller.PullArtifact(context.Background(), ref, KernelConfigType, nil); err != nil {
		t.Fatalf("pull after failures: %v", err)
	}
}

// TestPullArtifactTamperedPart: only a part is wrong (the config is
// fine): the config may be cached, the part is not.
func TestPullArtifactTamperedPart(t *testing.T) {
	reg := newTestRegistry(t)
	ref := reg.host + "/kernels/part:v1"
	c := &Cache{Dir: t.TempDir(), Insecure: true}
	parts := testParts(t, 64<<10)
	if _, err := c.PushArtifact(context.Background(), ref, KernelConfigType, []byte(`{}`), parts, nil); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(parts[0].Path)
	good := hex.EncodeToString(sha256Sum(data))
	puller := &Cache{Dir: t.TempDir(), Insecure: true, Transport: taintBlob{good}}
	// remote's own verifying reader or ours: either way, an error.
	if _, err := puller.PullArtifact(context.Background(), ref, KernelConfigType, nil); err == nil {
		t.Fatalf("pull of a tampered part: %v", err)
	}
	for _, f := range cachedFiles(t, puller) {
		if f == good || strings.HasPrefix(f, ".partial-") {
			t.Errorf("tampered part left in the cache as %s", f)
		}
	}
}

// taintBlob flips a byte in the body of one blob's GET.
type taintBlob struct{ hex string }

func (tb taintBlob) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil || !strings.HasSuffix(req.URL.Path, "/blobs/sha256:"+tb.hex) || req.Method != http.MethodGet {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	body[len(body)-1] ^= 0xff
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

func TestConcurrentArtifactPullsFetchOnce(t *testing.T) {
	reg := newTestRegistry(t)
	ref := reg.host + "/kernels/shared:v1"
	c := &Cache{Dir: t.TempDir(), Insecure: true}
	if _, err := c.PushArtifact(context.Background(), ref, KernelConfigType, []byte(`{}`), testParts(t, 100<<10, 200<<10), nil); err != nil {
		t.Fatal(err)
	}
	reg.mu.Lock()
	reg.gets = map[string]int{}
	reg.mu.Unlock()
	puller := &Cache{Dir: t.TempDir(), Insecure: true}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { _, errs[i] = puller.PullArtifact(context.Background(), ref, KernelConfigType, nil) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for d, n := range reg.gets {
		if n != 1 {
			t.Errorf("blob %s fetched %d times", d, n)
		}
	}
	if len(reg.gets) != 3 {
		t.Errorf("fetched %d distinct blobs, want 2 parts and the config", len(reg.gets))
	}
}

// TestPullArtifactRefusesForeignURLs: a part the manifest says to fetch
// from elsewhere is refused, whatever the URL.
func TestPullArtifactRefusesForeignURLs(t *testing.T) {
	reg := newTestRegistry(t)
	ref := reg.host + "/kernels/foreign:v1"
	c := &Cache{Dir: t.TempDir(), Insecure: true}
	config := []byte(`{}`)
	cfgHash, _, _ := v1.SHA256(bytes.NewReader(config))
	r, _ := name.ParseReference(ref, name.Insecure)
	if err := remote.WriteLayer(r.Context(), static.NewLayer(config, KernelConfigType)); err != nil {
		t.Fatal(err)
	}
	m := v1.Manifest{
		SchemaVersion: 2, MediaType: types.OCIManifestSchema1,
		Config: v1.Descriptor{MediaType: KernelConfigType, Size: int64(len(config)), Digest: cfgHash},
		Layers: []v1.Descriptor{{MediaType: KernelVmlinuxType, Size: 4, Digest: cfgHash, URLs: []string{"http://example.invalid/x"}}},
	}
	raw, _ := json.Marshal(m)
	if err := remote.Put(r, rawManifest(raw)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PullArtifact(context.Background(), ref, KernelConfigType, nil); err == nil || !strings.Contains(err.Error(), "foreign URLs") {
		t.Fatalf("pull = %v", err)
	}
}

type rawManifest []byte

func (m rawManifest) RawManifest() ([]byte, error)        { return m, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }

func TestZstdRoundTrip(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "rootfs.ext4")
	// Mostly holes, like a fresh ext4, with data at both ends and an odd
	// length.
	data := make([]byte, 3<<20+17)
	copy(data, "superblock")
	copy(data[len(data)-5:], "tail!")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	z1, z2 := filepath.Join(dir, "a.zst"), filepath.Join(dir, "b.zst")
	sum, size, err := CompressZstd(context.Background(), src, z1)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := CompressZstd(context.Background(), src, z2); err != nil {
		t.Fatal(err)
	}
	b1, _ := os.ReadFile(z1)
	b2, _ := os.ReadFile(z2)
	if !bytes.Equal(b1, b2) || len(b1) >= len(data)/10 {
		t.Fatalf("compressing twice gave %d and %d bytes (differing: %v)", len(b1), len(b2), !bytes.Equal(b1, b2))
	}
	if sum != hex.EncodeToString(sha256Sum(data)) || size != int64(len(data)) {
		t.Fatalf("sum %s size %d", sum, size)
	}
	out := filepath.Join(dir, "out.ext4")
	if err := DecompressZstd(context.Background(), z1, out, sum, size, 1<<30); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
		t.Fatal("decompressed content differs")
	}
	// Wrong promises leave nothing at the destination.
	bad := filepath.Join(dir, "bad.ext4")
	for _, tc := range []struct {
		sum  string
		size int64
	}{{strings.Repeat("0", 64), size}, {sum, size - 1}, {sum, size + 1}} {
		if err := DecompressZstd(context.Background(), z1, bad, tc.sum, tc.size, 1<<30); !errors.Is(err, ErrDigestMismatch) {
			t.Errorf("DecompressZstd(%s, %d) = %v", tc.sum[:8], tc.size, err)
		}
		if _, err := os.Stat(bad); !os.IsNotExist(err) {
			t.Error("a rejected decompression left its output")
		}
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".partial-") {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

// TestImageBundleRoundTrip pushes a rootfs as an image bundle and gets the
// same ext4 back through the verified cache.
func TestImageBundleRoundTrip(t *testing.T) {
	reg := newTestRegistry(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "rootfs.ext4")
	data := bytes.Repeat([]byte("ext4 block "), 50000)
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	zst := filepath.Join(dir, "rootfs.ext4.zst")
	sum, size, err := CompressZstd(context.Background(), src, zst)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := json.Marshal(ImageConfig{Parts: []ConfigPart{{MediaType: ImageRootfsType, SHA256: sum, Size: size}}})
	ref := reg.host + "/images/golden:v1"
	c := &Cache{Dir: t.TempDir(), Insecure: true}
	if _, err := c.PushArtifact(context.Background(), ref, ImageConfigType, cfg, []Part{{MediaType: ImageRootfsType, Path: zst, Title: "rootfs.ext4.zst"}}, nil); err != nil {
		t.Fatal(err)
	}
	puller := &Cache{Dir: t.TempDir(), Insecure: true}
	a, err := puller.PullArtifact(context.Background(), ref, ImageConfigType, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got ImageConfig
	if err := json.Unmarshal(a.Config, &got); err != nil || len(got.Parts) != 1 || len(a.Parts) != 1 {
		t.Fatalf("config %s: %v", a.Config, err)
	}
	if a.Parts[0].Digest == "sha256:"+got.Parts[0].SHA256 {
		t.Error("the layer digest should be of the compressed blob")
	}
	out := filepath.Join(t.TempDir(), "rootfs.ext4")
	if err := DecompressZstd(context.Background(), a.Parts[0].Path, out, got.Parts[0].SHA256, got.Parts[0].Size, 1<<30); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(out); !bytes.Equal(b, data) {
		t.Fatal("rootfs differs after the round trip")
	}
}

func TestPushArtifactBadInput(t *testing.T) {
	c := &Cache{Dir: t.TempDir(), Insecure: true}
	ctx := context.Background()
	if _, err := c.PushArtifact(ctx, "", KernelConfigType, []byte(`{}`), nil, nil); !errors.As(err, new(InvalidRefError)) {
		t.Errorf("empty ref: %v", err)
	}
	if _, err := c.PushArtifact(ctx, "localhost:1/x:y", KernelConfigType, []byte(`not json`), nil, nil); err == nil {
		t.Error("non-JSON config accepted")
	}
	if _, err := c.PushArtifact(ctx, "localhost:1/x:y", KernelConfigType, []byte(`{}`), []Part{{MediaType: KernelVmlinuxType, Path: t.TempDir()}}, nil); err == nil {
		t.Error("a directory accepted as a part")
	}
}

// TestDecompressZstdBomb: a config may promise any size and a few KiB of
// zstd can expand to it; past the limit nothing is decompressed at all.
func TestDecompressZstdBomb(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "rootfs")
	data := bytes.Repeat([]byte("A"), 64<<20)
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	z := filepath.Join(dir, "rootfs.zst")
	sum, size, err := CompressZstd(context.Background(), src, z)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(src); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out", "root.ext4")
	if err := os.Mkdir(filepath.Dir(out), 0o700); err != nil {
		t.Fatal(err)
	}
	err = DecompressZstd(context.Background(), z, out, sum, size, 1<<20)
	if err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("a 64 MiB rootfs under a 1 MiB limit: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(out)); len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
}
