package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// fuzzLimit and fuzzEntries are the unpack limits the fuzz target runs
// the layer extractor under, so that the caps are exercised too.
const (
	fuzzLimit   = 1 << 20
	fuzzEntries = 256
)

// FuzzApplyLayer feeds arbitrary bytes (plain or compressed tar) to the OCI
// layer extractor, staging into a directory beside a sentinel one. Whatever
// the layer holds, nothing may appear outside the staging tree, the
// sentinel must stay empty, the staged file data and entries must stay
// within the limits, and every manifest entry must be what staging holds.
func FuzzApplyLayer(f *testing.F) {
	for _, seed := range fuzzSeeds(f) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		base := t.TempDir()
		outside := filepath.Join(base, "outside")
		root := filepath.Join(base, "a", "stage")
		for _, d := range []string{outside, root} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				t.Fatal(err)
			}
		}
		s := newStager(root)
		s.budget = &unpackBudget{maxBytes: fuzzLimit, maxEntries: fuzzEntries, why: "fuzz"}
		// Two passes of the same layer: the second one replaces and
		// whites out what the first staged.
		for range 2 {
			if err := applyLayer(context.Background(), s, layer("sha256:fuzz", data)); err != nil {
				break
			}
		}
		// Nothing beside the staging tree.
		for _, d := range []string{base, filepath.Join(base, "a")} {
			ents, err := os.ReadDir(d)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ents {
				if p := filepath.Join(d, e.Name()); p != outside && p != filepath.Join(base, "a") && p != root {
					t.Fatalf("written outside the staging tree: %s", p)
				}
			}
		}
		if ents, _ := os.ReadDir(outside); len(ents) != 0 {
			t.Fatalf("written into the sentinel directory: %v", ents)
		}
		// The caps held.
		if s.budget.written > fuzzLimit || s.budget.read > fuzzLimit || s.budget.entries > fuzzEntries+1 {
			t.Fatalf("past the limits: %d written, %d read, %d entries", s.budget.written, s.budget.read, s.budget.entries)
		}
		var staged int64
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.Type().IsRegular() {
				info, err := d.Info()
				if err != nil {
					return err
				}
				staged += info.Size()
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if staged > fuzzLimit {
			t.Fatalf("%d bytes staged, past the %d limit", staged, fuzzLimit)
		}
		// The manifest describes what staging holds.
		for rel, e := range s.entries {
			if e.Kind.isNode() {
				t.Fatalf("layer created a %s node at %q", e.Kind, rel)
			}
			st, err := os.Lstat(s.host(rel))
			if err != nil {
				t.Fatalf("manifest entry %q (%s) not in staging: %v", rel, e.Kind, err)
			}
			if want := e.Kind == KindDir; st.IsDir() != want {
				t.Fatalf("manifest entry %q is a %s, staging has mode %v", rel, e.Kind, st.Mode())
			}
		}
	})
}

// fuzzSeeds are layers that go after the extractor's rules: escapes by
// name, by symlink and by hardlink (towards the sentinel, two levels up
// from the staging root), whiteouts of every shape, device nodes and bombs.
func fuzzSeeds(t testing.TB) [][]byte {
	mk := func(es ...tarEntry) []byte { return makeTar(t, es...) }
	node := tarEntry{h: tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}}
	return [][]byte{
		mk(dirE("etc/", 0o755), fileE("etc/os-release", 0o644, "ID=fuzz\n"), symE("bin", "usr/bin"), linkE("etc/hard", "etc/os-release")),
		mk(fileE("../../outside/x", 0o644, "escape")),
		mk(fileE("/abs", 0o644, "abs")),
		mk(symE("up", "../../outside"), fileE("up/x", 0o644, "through a symlink")),
		mk(symE("d", "/"), dirE("d/etc/", 0o755)),
		mk(linkE("h", "../../outside/x")),
		mk(fileE("f", 0o644, "x"), symE("s", "f"), linkE("h", "s")),
		mk(dirE("a/", 0o755), fileE("a/b", 0o644, "b"), whE("a/.wh.b"), whE("a/.wh..wh..opq"), fileE("a/c", 0o644, "c")),
		mk(whE(".wh..."), whE(".wh.."), whE("x/.wh..wh..opq"), fileE(".wh.d/f", 0o644, "junk")),
		mk(node, tarEntry{h: tar.Header{Name: "fifo", Typeflag: tar.TypeFifo}}),
		mk(fileE("f", 0o644, "x"), fileE("f/g", 0o644, "under a file")),
		sparseBomb(t, 1<<30),
		gzipTB(t, sparseBomb(t, 1<<30)),
		{},
		[]byte("not a tar at all"),
	}
}

func gzipTB(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
