package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func symE(name, target string) tarEntry {
	return tarEntry{h: tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777}}
}

func linkE(name, target string) tarEntry {
	return tarEntry{h: tar.Header{Name: name, Typeflag: tar.TypeLink, Linkname: target}}
}

// whE is a whiteout marker as OCI layers carry them: an empty file.
func whE(name string) tarEntry { return fileE(name, 0o600, "") }

func layer(digest string, data []byte) LayerSource {
	return LayerSource{Digest: digest, Open: func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}}
}

func gzipBytes(t *testing.T, b []byte) []byte {
	t.Helper()
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

func zstdBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// imgEntry is one path of a built image as debugfs "ls -p" lists it.
type imgEntry struct {
	Mode     uint32 // whole i_mode, type bits included
	UID, GID uint32
	Size     int64 // 0 for directories
	Ino      int
}

func (e imgEntry) String() string {
	return fmt.Sprintf("%06o %d:%d size=%d", e.Mode, e.UID, e.GID, e.Size)
}

// listImage walks the image with debugfs and returns every path but the
// root and lost+found.
func listImage(t *testing.T, img string) map[string]imgEntry {
	t.Helper()
	out := map[string]imgEntry{}
	dirs := []string{"/"}
	for len(dirs) > 0 {
		dir := dirs[0]
		dirs = dirs[1:]
		b, err := exec.Command(tool(t, "debugfs"), "-R", "ls -p "+quote(dir), img).CombinedOutput()
		if err != nil {
			t.Fatalf("debugfs ls %s: %v\n%s", dir, err, b)
		}
		for _, line := range strings.Split(string(b), "\n") {
			line = strings.TrimSpace(line)
			if !strings.HasPrefix(line, "/") {
				continue
			}
			f := strings.Split(strings.Trim(line, "/"), "/")
			if len(f) < 5 {
				t.Fatalf("debugfs ls %s: odd line %q", dir, line)
			}
			name := strings.Join(f[4:len(f)-1], "/")
			if len(f) == 5 { // directories have an empty size field
				name = f[4]
			}
			if name == "." || name == ".." || (dir == "/" && name == "lost+found") {
				continue
			}
			var e imgEntry
			e.Ino, _ = strconv.Atoi(f[0])
			mode, _ := strconv.ParseUint(f[1], 8, 32)
			e.Mode = uint32(mode)
			u, _ := strconv.ParseUint(f[2], 10, 32)
			g, _ := strconv.ParseUint(f[3], 10, 32)
			e.UID, e.GID = uint32(u), uint32(g)
			p := strings.TrimSuffix(dir, "/") + "/" + name
			if e.Mode&0o170000 == 0o040000 {
				dirs = append(dirs, p)
			} else {
				e.Size, _ = strconv.ParseInt(f[len(f)-1], 10, 64)
			}
			out[p] = e
		}
	}
	return out
}

// checkTree compares the image's tree with want (path -> "mode uid:gid
// size=n") and returns the listing for inode checks.
func checkTree(t *testing.T, img string, want map[string]string) map[string]imgEntry {
	t.Helper()
	got := listImage(t, img)
	gotS := map[string]string{}
	for p, e := range got {
		gotS[p] = e.String()
	}
	if !reflect.DeepEqual(gotS, want) {
		var paths []string
		for p := range gotS {
			paths = append(paths, p)
		}
		for p := range want {
			if _, ok := gotS[p]; !ok {
				paths = append(paths, p)
			}
		}
		sort.Strings(paths)
		for _, p := range paths {
			if gotS[p] != want[p] {
				t.Errorf("%s: got %q, want %q", p, gotS[p], want[p])
			}
		}
	}
	return got
}

func catImage(t *testing.T, img, p string) string {
	t.Helper()
	b, err := exec.Command(tool(t, "debugfs"), "-R", "cat "+quote(p), img).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", p, err)
	}
	return string(b)
}

func eaList(t *testing.T, img, p string) string {
	t.Helper()
	b, err := exec.Command(tool(t, "debugfs"), "-R", "ea_list "+quote(p), img).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs ea_list %s: %v\n%s", p, err, b)
	}
	return string(b)
}

// flatDigest is the ManifestDigest ImportTar gives a single tarball
// holding what a layered import should end up with.
func flatDigest(t *testing.T, entries ...tarEntry) string {
	t.Helper()
	res, err := ImportTar(ctxT(t), bytes.NewReader(makeTar(t, entries...)), filepath.Join(t.TempDir(), "flat.ext4"), BuildOptions{})
	if err != nil {
		t.Fatalf("ImportTar of the flattened tree: %v", err)
	}
	return res.ManifestDigest
}

func goodLayers(t *testing.T) []LayerSource {
	base := makeTar(t,
		dirE("./", 0o755),
		dirE("./bin/", 0o755),
		fileE("./bin/busybox", 0o755, "busybox"),
		tarEntry{h: tar.Header{Name: "./bin/su", Typeflag: tar.TypeReg, Mode: 0o4755, PAXRecords: map[string]string{
			"SCHILY.xattr.user.note": "setuid",
		}}, body: "su binary"},
		linkE("./bin/su-link", "./bin/su"),
		dirE("./etc/", 0o755),
		fileE("./etc/motd", 0o644, "old motd\n"),
		fileE("./etc/removed", 0o644, "whited out\n"),
		dirE("./etc/gone/", 0o755),
		fileE("./etc/gone/a", 0o644, "a"),
		dirE("./etc/gone/sub/", 0o700),
		fileE("./etc/gone/sub/b", 0o644, "b"),
		symE("./etc/gone-link", "gone/a"),
		tarEntry{h: tar.Header{Name: "./opq/", Typeflag: tar.TypeDir, Mode: 0o755, Uid: 1000, Gid: 1000}},
		fileE("./opq/lower", 0o644, "lower"),
		dirE("./opq/lowerdir/", 0o755),
		fileE("./opq/lowerdir/x", 0o644, "x"),
		dirE("./home/", 0o755),
		tarEntry{h: tar.Header{Name: "./home/dev/", Typeflag: tar.TypeDir, Mode: 0o750, Uid: 1000, Gid: 1000}},
		tarEntry{h: tar.Header{Name: "./home/dev/notes", Typeflag: tar.TypeReg, Mode: 0o640, Uid: 1000, Gid: 1000}, body: "notes\n"},
		dirE("./lib/", 0o755),
		fileE("./lib/libfoo.so.1", 0o755, "elf"),
		symE("./lib/libfoo.so", "libfoo.so.1"),
		tarEntry{h: tar.Header{Name: "./tmp/", Typeflag: tar.TypeDir, Mode: 0o1777}},
	)
	mid := makeTar(t,
		whE("etc/.wh.removed"),
		whE("etc/.wh.gone"),
		whE("etc/.wh.never-existed"),
		whE(".wh.nothing-here-either"),
		// Same-layer entries on both sides of the opaque marker stay.
		fileE("opq/upper-before", 0o644, "before"),
		tarEntry{h: tar.Header{Name: "opq/", Typeflag: tar.TypeDir, Mode: 0o750, Uid: 1000, Gid: 1000}},
		whE("opq/.wh..wh..opq"),
		fileE("opq/upper-after", 0o644, "after"),
		tarEntry{h: tar.Header{Name: "home/dev/", Typeflag: tar.TypeDir, Mode: 0o700, Uid: 1000, Gid: 1000}},
		tarEntry{h: tar.Header{Name: "usr/local/bin/tool", Typeflag: tar.TypeReg, Mode: 0o2755, Gid: 50}, body: "setgid tool"},
	)
	top := makeTar(t,
		fileE("etc/motd", 0o644, "new motd\n"),
	)
	return []LayerSource{
		layer("sha256:base", gzipBytes(t, base)),
		layer("sha256:mid", mid),
		layer("sha256:top", zstdBytes(t, top)),
	}
}

var goodLayersTree = map[string]string{
	"/bin":                "040755 0:0 size=0",
	"/bin/busybox":        "100755 0:0 size=7",
	"/bin/su":             "104755 0:0 size=9",
	"/bin/su-link":        "104755 0:0 size=9",
	"/etc":                "040755 0:0 size=0",
	"/etc/motd":           "100644 0:0 size=9",
	"/etc/gone-link":      "120777 0:0 size=6", // dangling now: a symlink is data
	"/opq":                "040750 1000:1000 size=0",
	"/opq/upper-before":   "100644 0:0 size=6",
	"/opq/upper-after":    "100644 0:0 size=5",
	"/home":               "040755 0:0 size=0",
	"/home/dev":           "040700 1000:1000 size=0",
	"/home/dev/notes":     "100640 1000:1000 size=6",
	"/lib":                "040755 0:0 size=0",
	"/lib/libfoo.so.1":    "100755 0:0 size=3",
	"/lib/libfoo.so":      "120777 0:0 size=11",
	"/tmp":                "041777 0:0 size=0",
	"/usr":                "040755 0:0 size=0",
	"/usr/local":          "040755 0:0 size=0",
	"/usr/local/bin":      "040755 0:0 size=0",
	"/usr/local/bin/tool": "102755 0:50 size=11",
}

func TestImportLayersGood(t *testing.T) {
	needTools(t)
	forOwnerModes(t, func(t *testing.T) {
		dir := t.TempDir()
		img := filepath.Join(dir, "root.ext4")
		var phases []string
		res, err := ImportLayers(ctxT(t), goodLayers(t), img, BuildOptions{
			WorkDir:  filepath.Join(dir, "work"),
			Progress: func(s string) { phases = append(phases, s) },
		})
		if err != nil {
			t.Fatalf("ImportLayers: %v", err)
		}
		requireClean(t, img)
		got := checkTree(t, img, goodLayersTree)
		if got["/bin/su"].Ino != got["/bin/su-link"].Ino {
			t.Error("/bin/su-link is not a hardlink of /bin/su")
		}
		for p, want := range map[string]string{"/etc/motd": "new motd\n", "/opq/upper-before": "before", "/bin/su-link": "su binary"} {
			if c := catImage(t, img, p); c != want {
				t.Errorf("%s content %q, want %q", p, c, want)
			}
		}
		if in := statInode(t, img, "/lib/libfoo.so"); in.LinkTarget != "libfoo.so.1" {
			t.Errorf("/lib/libfoo.so -> %q", in.LinkTarget)
		}
		if in := statInode(t, img, "/etc/gone-link"); in.LinkTarget != "gone/a" {
			t.Errorf("/etc/gone-link -> %q", in.LinkTarget)
		}
		if ea := eaList(t, img, "/bin/su"); !strings.Contains(ea, `user.note (6) = "setuid"`) {
			t.Errorf("ea_list /bin/su: %s", ea)
		}
		want := Counts{Dirs: 11, Files: 8, Symlinks: 2, Hardlinks: 1}
		if res.Entries != want {
			t.Errorf("counts %+v, want %+v", res.Entries, want)
		}
		if len(res.Skipped) != 0 {
			t.Errorf("skipped %+v", res.Skipped)
		}
		if len(phases) < 4 || !strings.Contains(phases[0], "sha256:base (1 of 3)") {
			t.Errorf("progress %q", phases)
		}
		if ents, _ := os.ReadDir(filepath.Join(dir, "work")); len(ents) != 0 {
			t.Errorf("staging left in work dir: %v", ents)
		}
		// The manifest is exactly the final tree: a single tarball of
		// it has the same digest.
		flat := flatDigest(t,
			dirE("./", 0o755),
			dirE("bin/", 0o755),
			fileE("bin/busybox", 0o755, "busybox"),
			tarEntry{h: tar.Header{Name: "bin/su", Typeflag: tar.TypeReg, Mode: 0o4755, PAXRecords: map[string]string{
				"SCHILY.xattr.user.note": "setuid",
			}}, body: "su binary"},
			linkE("bin/su-link", "bin/su"),
			dirE("etc/", 0o755),
			fileE("etc/motd", 0o644, "new motd\n"),
			symE("etc/gone-link", "gone/a"),
			tarEntry{h: tar.Header{Name: "opq/", Typeflag: tar.TypeDir, Mode: 0o750, Uid: 1000, Gid: 1000}},
			fileE("opq/upper-before", 0o644, "before"),
			fileE("opq/upper-after", 0o644, "after"),
			dirE("home/", 0o755),
			tarEntry{h: tar.Header{Name: "home/dev/", Typeflag: tar.TypeDir, Mode: 0o700, Uid: 1000, Gid: 1000}},
			tarEntry{h: tar.Header{Name: "home/dev/notes", Typeflag: tar.TypeReg, Mode: 0o640, Uid: 1000, Gid: 1000}, body: "notes\n"},
			dirE("lib/", 0o755),
			fileE("lib/libfoo.so.1", 0o755, "elf"),
			symE("lib/libfoo.so", "libfoo.so.1"),
			tarEntry{h: tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777}},
			tarEntry{h: tar.Header{Name: "usr/local/bin/tool", Typeflag: tar.TypeReg, Mode: 0o2755, Gid: 50}, body: "setgid tool"},
		)
		if res.ManifestDigest != flat {
			t.Errorf("manifest digest %s, want the flattened tree's %s", res.ManifestDigest, flat)
		}
	})
}

// An opaque marker hides lower entries whatever its place in the layer;
// a lower directory kept only because this layer writes into it becomes
// the plain directory the layer implies.
func TestImportLayersOpaqueOrder(t *testing.T) {
	needTools(t)
	lower := makeTar(t,
		tarEntry{h: tar.Header{Name: "o/sub/", Typeflag: tar.TypeDir, Mode: 0o700, Uid: 1000, Gid: 1000}},
		fileE("o/sub/old", 0o644, "old"),
		fileE("o/old", 0o644, "old"),
		tarEntry{h: tar.Header{Name: "w/", Typeflag: tar.TypeDir, Mode: 0o700, Uid: 7, Gid: 7}},
		fileE("w/old", 0o644, "old"),
	)
	orders := map[string][]tarEntry{
		"markers first": {
			whE("o/.wh..wh..opq"), whE(".wh.w"), fileE("o/sub/new", 0o644, "new"), fileE("w/new", 0o644, "new"),
		},
		"markers last": {
			fileE("o/sub/new", 0o644, "new"), fileE("w/new", 0o644, "new"), whE("o/.wh..wh..opq"), whE(".wh.w"),
		},
	}
	want := map[string]string{
		"/o":         "040755 0:0 size=0",
		"/o/sub":     "040755 0:0 size=0",
		"/o/sub/new": "100644 0:0 size=3",
		"/w":         "040755 0:0 size=0",
		"/w/new":     "100644 0:0 size=3",
	}
	digests := map[string]string{}
	for name, upper := range orders {
		t.Run(name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "root.ext4")
			res, err := ImportLayers(ctxT(t), []LayerSource{
				layer("sha256:lower", lower), layer("sha256:upper", makeTar(t, upper...)),
			}, img, BuildOptions{})
			if err != nil {
				t.Fatalf("ImportLayers: %v", err)
			}
			requireClean(t, img)
			checkTree(t, img, want)
			digests[name] = res.ManifestDigest
		})
	}
	if digests["markers first"] != digests["markers last"] {
		t.Error("manifest depends on where the markers are in the layer")
	}
}

func TestImportLayersReplace(t *testing.T) {
	needTools(t)
	lower := makeTar(t,
		fileE("file-to-dir", 0o644, "f"),
		dirE("dir-to-file/", 0o755),
		fileE("dir-to-file/child", 0o644, "c"),
		dirE("dir-to-link/", 0o755),
		fileE("dir-to-link/child", 0o644, "c"),
		symE("link-to-dir", "/etc"),
		fileE("file-to-link", 0o644, "f"),
		symE("link-to-file", "somewhere"),
		dirE("restated/", 0o755),
		fileE("restated/keep", 0o644, "kept"),
	)
	upper := makeTar(t,
		dirE("file-to-dir/", 0o755),
		fileE("file-to-dir/new", 0o644, "n"),
		fileE("dir-to-file", 0o600, "now a file"),
		symE("dir-to-link", "/usr"),
		dirE("link-to-dir/", 0o711),
		fileE("link-to-dir/inside", 0o644, "in"),
		symE("file-to-link", "file-to-dir"),
		fileE("link-to-file", 0o644, "file"),
		tarEntry{h: tar.Header{Name: "restated/", Typeflag: tar.TypeDir, Mode: 0o3770, Uid: 1000, Gid: 1000, PAXRecords: map[string]string{
			"SCHILY.xattr.user.tag": "upper",
		}}},
	)
	img := filepath.Join(t.TempDir(), "root.ext4")
	res, err := ImportLayers(ctxT(t), []LayerSource{layer("sha256:lower", lower), layer("sha256:upper", upper)}, img, BuildOptions{})
	if err != nil {
		t.Fatalf("ImportLayers: %v", err)
	}
	requireClean(t, img)
	checkTree(t, img, map[string]string{
		"/file-to-dir":        "040755 0:0 size=0",
		"/file-to-dir/new":    "100644 0:0 size=1",
		"/dir-to-file":        "100600 0:0 size=10",
		"/dir-to-link":        "120777 0:0 size=4",
		"/link-to-dir":        "040711 0:0 size=0",
		"/link-to-dir/inside": "100644 0:0 size=2",
		"/file-to-link":       "120777 0:0 size=11",
		"/link-to-file":       "100644 0:0 size=4",
		"/restated":           "043770 1000:1000 size=0",
		"/restated/keep":      "100644 0:0 size=4",
	})
	if ea := eaList(t, img, "/restated"); !strings.Contains(ea, `user.tag (5) = "upper"`) {
		t.Errorf("ea_list /restated: %s", ea)
	}
	if want := (Counts{Dirs: 4, Files: 5, Symlinks: 2}); res.Entries != want {
		t.Errorf("counts %+v, want %+v", res.Entries, want)
	}
}

// A hardlink keeps the content it had when the path it was made from is
// replaced or whited out later, including across layers.
func TestImportLayersHardlinkTargetReplaced(t *testing.T) {
	needTools(t)
	l1 := makeTar(t,
		fileE("orig", 0o644, "one"),
		linkE("l1", "orig"),
		tarEntry{h: tar.Header{Name: "w", Typeflag: tar.TypeReg, Mode: 0o640, Uid: 1000, Gid: 1000, PAXRecords: map[string]string{
			"SCHILY.xattr.user.tag": "kept",
		}}, body: "whiteme"},
	)
	l2 := makeTar(t,
		linkE("l2", "orig"), // to a file of an earlier layer
		linkE("wl", "w"),
		fileE("orig", 0o600, "two"),
		whE(".wh.w"),
	)
	l3 := makeTar(t,
		linkE("l3", "l2"), // to a link whose first path is gone
	)
	img := filepath.Join(t.TempDir(), "root.ext4")
	res, err := ImportLayers(ctxT(t), []LayerSource{layer("sha256:l1", l1), layer("sha256:l2", l2), layer("sha256:l3", l3)}, img, BuildOptions{})
	if err != nil {
		t.Fatalf("ImportLayers: %v", err)
	}
	requireClean(t, img)
	got := checkTree(t, img, map[string]string{
		"/orig": "100600 0:0 size=3",
		"/l1":   "100644 0:0 size=3",
		"/l2":   "100644 0:0 size=3",
		"/l3":   "100644 0:0 size=3",
		"/wl":   "100640 1000:1000 size=7",
	})
	if got["/l1"].Ino != got["/l2"].Ino || got["/l1"].Ino != got["/l3"].Ino || got["/l1"].Ino == got["/orig"].Ino {
		t.Errorf("inodes: %+v", got)
	}
	for p, want := range map[string]string{"/orig": "two", "/l1": "one", "/l3": "one", "/wl": "whiteme"} {
		if c := catImage(t, img, p); c != want {
			t.Errorf("%s content %q, want %q", p, c, want)
		}
	}
	if in := statInode(t, img, "/l1"); in.Links != 3 {
		t.Errorf("/l1 has %d links, want 3", in.Links)
	}
	if ea := eaList(t, img, "/wl"); !strings.Contains(ea, `user.tag (4) = "kept"`) {
		t.Errorf("ea_list /wl: %s", ea)
	}
	if want := (Counts{Dirs: 1, Files: 3, Hardlinks: 2}); res.Entries != want {
		t.Errorf("counts %+v, want %+v", res.Entries, want)
	}
	flat := flatDigest(t,
		fileE("orig", 0o600, "two"),
		fileE("l1", 0o644, "one"),
		linkE("l2", "l1"),
		linkE("l3", "l1"),
		tarEntry{h: tar.Header{Name: "wl", Typeflag: tar.TypeReg, Mode: 0o640, Uid: 1000, Gid: 1000, PAXRecords: map[string]string{
			"SCHILY.xattr.user.tag": "kept",
		}}, body: "whiteme"},
	)
	if res.ManifestDigest != flat {
		t.Error("manifest digest differs from the flattened tree's")
	}
}

func TestImportLayersSkipsNodes(t *testing.T) {
	needTools(t)
	l1 := makeTar(t,
		dirE("dev/", 0o755),
		tarEntry{h: tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3}},
		tarEntry{h: tar.Header{Name: "dev/sda", Typeflag: tar.TypeBlock, Mode: 0o660, Devmajor: 8}},
		tarEntry{h: tar.Header{Name: "run/fifo", Typeflag: tar.TypeFifo, Mode: 0o620}},
		linkE("dev/null2", "dev/null"),
		fileE("was-a-file", 0o644, "lower"),
	)
	l2 := makeTar(t,
		// A skipped node still replaces what was below it.
		tarEntry{h: tar.Header{Name: "was-a-file", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 1}},
	)
	img := filepath.Join(t.TempDir(), "root.ext4")
	res, err := ImportLayers(ctxT(t), []LayerSource{layer("sha256:l1", l1), layer("sha256:l2", l2)}, img, BuildOptions{})
	if err != nil {
		t.Fatalf("ImportLayers: %v", err)
	}
	requireClean(t, img)
	checkTree(t, img, map[string]string{
		"/dev": "040755 0:0 size=0",
		"/run": "040755 0:0 size=0",
	})
	reasons := map[string]string{}
	for _, s := range res.Skipped {
		reasons[s.Path] = s.Reason
	}
	for _, p := range []string{"dev/null", "dev/sda", "run/fifo", "was-a-file"} {
		if !strings.Contains(reasons[p], "not created") {
			t.Errorf("%s: skip reason %q", p, reasons[p])
		}
	}
	if !strings.Contains(reasons["dev/null2"], `target "dev/null" was skipped`) {
		t.Errorf("dev/null2: skip reason %q", reasons["dev/null2"])
	}
	if res.Entries.Devices != 0 || res.Entries.Fifos != 0 {
		t.Errorf("counts %+v", res.Entries)
	}
}

func TestImportLayersRejectsHostile(t *testing.T) {
	needTools(t)
	// The staging tree is base/scratch/deep/.image-staging-*, so "../../../outside"
	// from its root is the sentinel's directory.
	const up = "../../../outside"
	cases := []struct {
		name  string
		lower []tarEntry // layer "sha256:lower"; may be empty
		upper []tarEntry // layer "sha256:upper", the one that must be named
		want  string
	}{
		{"dotdot", nil, []tarEntry{fileE("../x", 0o644, "escape")}, `"../x"`},
		{"dotdot inside", nil, []tarEntry{dirE("a/", 0o755), fileE("a/../../x", 0o644, "x")}, `"a/../../x"`},
		{"absolute", nil, []tarEntry{fileE("/etc/x", 0o644, "abs")}, `"/etc/x"`},
		{"absolute whiteout", nil, []tarEntry{whE("/etc/.wh.passwd")}, `"/etc/.wh.passwd"`},
		{"file under absolute symlink", []tarEntry{symE("evil", "@OUTSIDE@")}, []tarEntry{fileE("evil/x", 0o644, "x")}, `"evil/x"`},
		{"file under relative symlink", []tarEntry{symE("evil", up)}, []tarEntry{fileE("evil/x", 0o644, "x")}, `"evil/x"`},
		{"replace through symlink", []tarEntry{symE("evil", up)}, []tarEntry{fileE("evil/sentinel", 0o644, "overwritten")}, `"evil/sentinel"`},
		{"dir under symlink", []tarEntry{symE("evil", up)}, []tarEntry{dirE("evil/sub/", 0o755)}, `"evil/sub/"`},
		{"symlink under symlink", []tarEntry{symE("evil", up)}, []tarEntry{symE("evil/l", "/")}, `"evil/l"`},
		{"deep under symlink", []tarEntry{dirE("a/", 0o755), symE("a/up", "../"+up)}, []tarEntry{fileE("a/up/b/x", 0o644, "x")}, `"a/up/b/x"`},
		{"whiteout through symlink", []tarEntry{symE("evil", up)}, []tarEntry{whE("evil/.wh.sentinel")}, `"evil/.wh.sentinel"`},
		{"opaque through symlink", []tarEntry{symE("evil", "@OUTSIDE@")}, []tarEntry{whE("evil/.wh..wh..opq")}, `"evil/.wh..wh..opq"`},
		{"device under symlink", []tarEntry{symE("evil", up)}, []tarEntry{
			{h: tar.Header{Name: "evil/null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}},
		}, `"evil/null"`},
		{"hardlink through symlink", []tarEntry{symE("evil", up)}, []tarEntry{linkE("h", "evil/sentinel")}, `"h"`},
		{"hardlink outside", nil, []tarEntry{linkE("h", up+"/sentinel")}, `"h"`},
		{"hardlink absolute", nil, []tarEntry{linkE("h", "@OUTSIDE@/sentinel")}, `"h"`},
		{"hardlink to nothing", nil, []tarEntry{linkE("h", "nope")}, `"h"`},
		{"hardlink to directory", []tarEntry{dirE("d/", 0o755)}, []tarEntry{linkE("h", "d")}, `"h"`},
		{"hardlink to symlink", []tarEntry{symE("s", "@OUTSIDE@/sentinel")}, []tarEntry{linkE("h", "s")}, `"h"`},
		{"hardlink to whited-out file", []tarEntry{fileE("f", 0o644, "f")}, []tarEntry{whE(".wh.f"), linkE("h", "f")}, `"h"`},
		{"file under a lower file", []tarEntry{fileE("f", 0o644, "f")}, []tarEntry{fileE("f/g", 0o644, "g")}, `"f/g"`},
		{"whiteout of dotdot", nil, []tarEntry{dirE("a/", 0o755), whE("a/.wh...")}, `"a/.wh..."`},
		{"whiteout of dot", []tarEntry{dirE("a/", 0o755)}, []tarEntry{whE("a/.wh..")}, `"a/.wh.."`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			outside := filepath.Join(base, "outside")
			work := filepath.Join(base, "scratch", "deep")
			sentinel := filepath.Join(outside, "sentinel")
			if err := os.MkdirAll(outside, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(sentinel, []byte("sentinel"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(work, 0o700); err != nil {
				t.Fatal(err)
			}
			fix := func(es []tarEntry) []tarEntry {
				out := make([]tarEntry, len(es))
				for i, e := range es {
					e.h.Name = strings.ReplaceAll(e.h.Name, "@OUTSIDE@", outside)
					e.h.Linkname = strings.ReplaceAll(e.h.Linkname, "@OUTSIDE@", outside)
					out[i] = e
				}
				return out
			}
			layers := []LayerSource{
				layer("sha256:first", makeTar(t, dirE("./", 0o755), fileE("etc/os-release", 0o644, "ok"))),
			}
			if tc.lower != nil {
				layers = append(layers, layer("sha256:lower", makeTar(t, fix(tc.lower)...)))
			}
			layers = append(layers, layer("sha256:upper", makeTar(t, fix(tc.upper)...)))
			out := filepath.Join(base, "img.ext4")
			_, err := ImportLayers(ctxT(t), layers, out, BuildOptions{WorkDir: work})
			if err == nil {
				t.Fatal("import succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "sha256:upper") {
				t.Errorf("error %q does not name entry %s in layer sha256:upper", err, tc.want)
			}
			if b, err := os.ReadFile(sentinel); err != nil || string(b) != "sentinel" {
				t.Errorf("sentinel changed: %q, %v", b, err)
			}
			for _, dir := range []string{base, filepath.Join(base, "scratch"), work, outside} {
				ents, _ := os.ReadDir(dir)
				for _, e := range ents {
					switch filepath.Join(dir, e.Name()) {
					case outside, filepath.Join(base, "scratch"), work, sentinel:
						continue
					}
					t.Errorf("left behind: %s", filepath.Join(dir, e.Name()))
				}
			}
		})
	}
}

// Layers are opened in order, one at a time, and closed before the next.
type trackedReader struct {
	io.Reader
	name string
	log  *[]string
}

func (r *trackedReader) Close() error {
	*r.log = append(*r.log, "close "+r.name)
	return nil
}

func TestImportLayersStreamsInOrder(t *testing.T) {
	needTools(t)
	var log []string
	mk := func(name string, data []byte) LayerSource {
		return LayerSource{Digest: name, Open: func() (io.ReadCloser, error) {
			log = append(log, "open "+name)
			return &trackedReader{Reader: bytes.NewReader(data), name: name, log: &log}, nil
		}}
	}
	empty := makeTar(t) // an empty layer is legal
	layers := []LayerSource{
		mk("a", makeTar(t, fileE("f", 0o644, "a"))),
		mk("b", gzipBytes(t, empty)),
		mk("c", makeTar(t, fileE("f", 0o644, "c"))),
	}
	img := filepath.Join(t.TempDir(), "root.ext4")
	if _, err := ImportLayers(ctxT(t), layers, img, BuildOptions{}); err != nil {
		t.Fatalf("ImportLayers: %v", err)
	}
	want := []string{"open a", "close a", "open b", "close b", "open c", "close c"}
	if !reflect.DeepEqual(log, want) {
		t.Errorf("layer access %q, want %q", log, want)
	}
	if c := catImage(t, img, "/f"); c != "c" {
		t.Errorf("/f content %q", c)
	}
}

func TestImportLayersErrors(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "x.ext4")
	if _, err := ImportLayers(ctxT(t), nil, out, BuildOptions{}); err == nil {
		t.Error("no layers: want an error")
	}
	openErr := errors.New("blob vanished")
	_, err := ImportLayers(ctxT(t), []LayerSource{
		layer("sha256:ok", makeTar(t, fileE("f", 0o644, "x"))),
		{Digest: "sha256:gone", Open: func() (io.ReadCloser, error) { return nil, openErr }},
	}, out, BuildOptions{})
	if !errors.Is(err, openErr) || !strings.Contains(err.Error(), "sha256:gone") {
		t.Errorf("open failure: %v", err)
	}
	_, err = ImportLayers(ctxT(t), []LayerSource{layer("sha256:junk", []byte("this is not a tar stream at all, not even close"))}, out, BuildOptions{})
	if err == nil || !strings.Contains(err.Error(), "sha256:junk") {
		t.Errorf("garbage layer: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
}
