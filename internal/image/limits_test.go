package image

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// paxRecord formats one PAX extended header record ("len key=value\n",
// where len counts itself).
func paxRecord(k, v string) string {
	s := " " + k + "=" + v + "\n"
	n := len(s)
	for {
		l := len(strconv.Itoa(n)) + len(s)
		if l == n {
			return strconv.Itoa(n) + s
		}
		n = l
	}
}

// sparseBomb is a tar of a few KiB holding one PAX 1.0 sparse file "bomb"
// of realSize bytes: holes everywhere but its last byte. archive/tar
// cannot write sparse files, so the extended header is written as a
// regular entry and retyped to 'x' afterwards.
func sparseBomb(t testing.TB, realSize int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	pax := paxRecord("GNU.sparse.major", "1") + paxRecord("GNU.sparse.minor", "0") +
		paxRecord("GNU.sparse.name", "bomb") + paxRecord("GNU.sparse.realsize", strconv.FormatInt(realSize, 10))
	if err := tw.WriteHeader(&tar.Header{Name: "PaxHeaders/bomb", Typeflag: tar.TypeReg, Size: int64(len(pax)), Format: tar.FormatUSTAR}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte(pax)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Flush(); err != nil {
		t.Fatal(err)
	}
	hdr := buf.Bytes()[:512]
	hdr[156] = tar.TypeXHeader
	copy(hdr[148:156], "        ")
	sum := 0
	for _, c := range hdr {
		sum += int(c)
	}
	copy(hdr[148:156], fmt.Sprintf("%06o\x00 ", sum))
	// The sparse map (one data segment: the last byte), padded to a
	// block, then the data.
	body := make([]byte, 513)
	copy(body, "1\n"+strconv.FormatInt(realSize-1, 10)+"\n1\n")
	body[512] = 'x'
	if err := tw.WriteHeader(&tar.Header{Name: "GNUSparseFile.0/bomb", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body)), Format: tar.FormatUSTAR}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// zeroTar is a plain tar stream of one regular file of size zeros,
// generated as it is read (nothing of that size is held in memory).
func zeroTar(t testing.TB, size int64) io.Reader { return namedZeroTar(t, "zeros", size) }

// namedZeroTar is zeroTar for a file called name.
func namedZeroTar(t testing.TB, name string, size int64) io.Reader {
	t.Helper()
	var hdr bytes.Buffer
	tw := tar.NewWriter(&hdr)
	if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: size, Format: tar.FormatPAX}); err != nil {
		t.Fatal(err)
	}
	// WriteHeader has written the header; the data is generated below.
	pad := (512 - size%512) % 512
	return io.MultiReader(bytes.NewReader(hdr.Bytes()), io.LimitReader(zeros{}, size+pad), bytes.NewReader(make([]byte, 1024)))
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// requireNothingLeft fails if dir holds anything: no image, no temp file,
// no staging tree.
func requireNothingLeft(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		ents, err := os.ReadDir(d)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		for _, e := range ents {
			t.Errorf("left behind after a refused import: %s", filepath.Join(d, e.Name()))
		}
	}
}

func requireLimitError(t *testing.T, err error, want ...string) {
	t.Helper()
	var le *UnpackLimitError
	if !errors.As(err, &le) {
		t.Fatalf("import error %v, want an UnpackLimitError", err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
}

func TestImportTarBombs(t *testing.T) {
	needTools(t)
	const limit = 4 << 20
	cases := []struct {
		name string
		src  func(t *testing.T) io.Reader
	}{
		// A few KiB of gzip that tar expands to 64 MiB of holes, which
		// staging writes as real zeros.
		{"gzip sparse", func(t *testing.T) io.Reader { return bytes.NewReader(gzipBytes(t, sparseBomb(t, 64<<20))) }},
		{"zstd sparse", func(t *testing.T) io.Reader { return bytes.NewReader(zstdBytes(t, sparseBomb(t, 64<<20))) }},
		{"plain sparse", func(t *testing.T) io.Reader { return bytes.NewReader(sparseBomb(t, 64<<20)) }},
		{"gzip zeros", func(t *testing.T) io.Reader {
			b, err := io.ReadAll(zeroTar(t, 16<<20))
			if err != nil {
				t.Fatal(err)
			}
			return bytes.NewReader(gzipBytes(t, b))
		}},
		{"plain zeros", func(t *testing.T) io.Reader { return zeroTar(t, 64<<20) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			work, outDir := filepath.Join(base, "work"), filepath.Join(base, "out")
			if err := os.Mkdir(outDir, 0o700); err != nil {
				t.Fatal(err)
			}
			_, err := ImportTar(ctxT(t), tc.src(t), filepath.Join(outDir, "root.ext4"), BuildOptions{WorkDir: work, MaxUnpacked: limit})
			requireLimitError(t, err, "expands past 4M", "image_max_unpacked")
			requireNothingLeft(t, work, outDir)
		})
	}
}

func TestImportTarUnderLimit(t *testing.T) {
	needTools(t)
	img := filepath.Join(t.TempDir(), "root.ext4")
	// 3 MiB of data and its tar framing fit in 4 MiB.
	if _, err := ImportTar(ctxT(t), zeroTar(t, 3<<20), img, BuildOptions{MaxUnpacked: 4 << 20}); err != nil {
		t.Fatalf("import under the limit: %v", err)
	}
	if in := statInode(t, img, "/zeros"); in.Size != 3<<20 {
		t.Errorf("/zeros is %d bytes", in.Size)
	}
}

func TestImportTarEntryLimit(t *testing.T) {
	needTools(t)
	var entries []tarEntry
	for i := range 40 {
		entries = append(entries, fileE(fmt.Sprintf("f%d", i), 0o644, ""))
	}
	base := t.TempDir()
	work := filepath.Join(base, "work")
	out := filepath.Join(base, "out", "root.ext4")
	if err := os.Mkdir(filepath.Dir(out), 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := ImportTar(ctxT(t), bytes.NewReader(makeTar(t, entries...)), out, BuildOptions{WorkDir: work, MaxEntries: 32})
	requireLimitError(t, err, "more than 32 entries", `"f32"`)
	requireNothingLeft(t, work, filepath.Dir(out))
	if _, err := ImportTar(ctxT(t), bytes.NewReader(makeTar(t, entries[:32]...)), out, BuildOptions{WorkDir: work, MaxEntries: 32}); err != nil {
		t.Errorf("32 entries with a limit of 32: %v", err)
	}
}

func TestImportLayersBomb(t *testing.T) {
	needTools(t)
	base := t.TempDir()
	work, outDir := filepath.Join(base, "work"), filepath.Join(base, "out")
	if err := os.Mkdir(outDir, 0o700); err != nil {
		t.Fatal(err)
	}
	digest := "sha256:" + strings.Repeat("b", 64)
	layers := []LayerSource{
		layer("sha256:"+strings.Repeat("a", 64), makeTar(t, dirE("etc/", 0o755), fileE("etc/os-release", 0o644, "ID=test\n"))),
		layer(digest, gzipBytes(t, sparseBomb(t, 64<<20))),
	}
	_, err := ImportLayers(ctxT(t), layers, filepath.Join(outDir, "root.ext4"), BuildOptions{WorkDir: work, MaxUnpacked: 4 << 20})
	requireLimitError(t, err, digest, "expands past 4M")
	requireNothingLeft(t, work, outDir)
}

// TestImportLayersSkippedData: data tar discards still counts, so a layer
// cannot make the import decompress without end through entries that are
// never staged (16 MiB in a file under a whiteout-named directory, which
// is skipped).
func TestImportLayersSkippedData(t *testing.T) {
	needTools(t)
	b, err := io.ReadAll(namedZeroTar(t, ".wh.dir/zeros", 16<<20))
	if err != nil {
		t.Fatal(err)
	}
	digest := "sha256:" + strings.Repeat("f", 64)
	out := filepath.Join(t.TempDir(), "root.ext4")
	_, err = ImportLayers(ctxT(t), []LayerSource{layer(digest, gzipBytes(t, b))}, out, BuildOptions{MaxUnpacked: 4 << 20})
	requireLimitError(t, err, digest, "expands past 4M")
}

// TestImportLayersTotalLimit: the limit is on the image, not per layer.
// Three layers of 3 MiB each fit one by one under 4 MiB, but not together.
func TestImportLayersTotalLimit(t *testing.T) {
	needTools(t)
	var layers []LayerSource
	for _, c := range "abc" {
		b, err := io.ReadAll(zeroTar(t, 3<<20))
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, layer("sha256:"+strings.Repeat(string(c), 64), gzipBytes(t, b)))
	}
	base := t.TempDir()
	work, outDir := filepath.Join(base, "work"), filepath.Join(base, "out")
	if err := os.Mkdir(outDir, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := ImportLayers(ctxT(t), layers, filepath.Join(outDir, "root.ext4"), BuildOptions{WorkDir: work, MaxUnpacked: 4 << 20})
	requireLimitError(t, err, "sha256:"+strings.Repeat("b", 64)+" (2 of 3)")
	requireNothingLeft(t, work, outDir)
	for _, l := range layers {
		if _, err := ImportLayers(ctxT(t), []LayerSource{l}, filepath.Join(outDir, "one.ext4"), BuildOptions{WorkDir: work, MaxUnpacked: 4 << 20}); err != nil {
			t.Errorf("one layer alone: %v", err)
		}
		_ = os.Remove(filepath.Join(outDir, "one.ext4"))
	}
}

// TestUnpackBudgetFreeSpace: an import never unpacks more than half the
// free space where it is staged, whatever limit is configured.
func TestUnpackBudgetFreeSpace(t *testing.T) {
	b := newUnpackBudget(&BuildOptions{MaxUnpacked: 1 << 50}, t.TempDir())
	if b.maxBytes >= 1<<50 || !strings.Contains(b.why, "free space") {
		t.Errorf("limit %d (%s), want half the free space", b.maxBytes, b.why)
	}
	if b := newUnpackBudget(&BuildOptions{}, t.TempDir()); b.maxBytes > DefaultMaxUnpacked || b.maxEntries != DefaultMaxEntries {
		t.Errorf("zero options: limits %d, %d entries", b.maxBytes, b.maxEntries)
	}
}
