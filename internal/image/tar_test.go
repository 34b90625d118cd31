package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

func TestImportTarRejectsHostileEntries(t *testing.T) {
	needTools(t)
	cases := []struct {
		name    string
		entries []tarEntry
		want    string // the entry the error must name
	}{
		{"dotdot", []tarEntry{fileE("../x", 0o644, "escape")}, `"../x"`},
		{"dotdot inside", []tarEntry{dirE("a/", 0o755), fileE("a/../../x", 0o644, "escape")}, `"a/../../x"`},
		{"absolute", []tarEntry{fileE("/etc/x", 0o644, "abs")}, `"/etc/x"`},
		{"through symlink", []tarEntry{
			{h: tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "/tmp"}},
			fileE("link/x", 0o644, "through"),
		}, `"link/x"`},
		{"under symlinked ancestor", []tarEntry{
			dirE("a/", 0o755),
			{h: tar.Header{Name: "a/up", Typeflag: tar.TypeSymlink, Linkname: "../.."}},
			fileE("a/up/b/x", 0o644, "deep"),
		}, `"a/up/b/x"`},
		{"hardlink outside", []tarEntry{
			{h: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "../../etc/passwd"}},
		}, `"h"`},
		{"hardlink absolute", []tarEntry{
			{h: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "/etc/passwd"}},
		}, `"h"`},
		{"hardlink to later file", []tarEntry{
			{h: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "f"}},
			fileE("f", 0o644, "later"),
		}, `"h"`},
		{"hardlink to directory", []tarEntry{
			dirE("d/", 0o755),
			{h: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "d"}},
		}, `"h"`},
		{"hardlink to symlink", []tarEntry{
			{h: tar.Header{Name: "s", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"}},
			{h: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "s"}},
		}, `"h"`},
		{"file under file", []tarEntry{fileE("f", 0o644, "x"), fileE("f/g", 0o644, "y")}, `"f/g"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			outside := filepath.Join(base, "outside")
			work := filepath.Join(base, "work", "deep")
			if err := os.MkdirAll(filepath.Join(outside), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(work, 0o700); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(base, "img.ext4")
			_, err := ImportTar(ctxT(t), bytes.NewReader(makeTar(t, tc.entries...)), out, BuildOptions{WorkDir: work})
			if err == nil {
				t.Fatal("import succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name entry %s", err, tc.want)
			}
			// Nothing may be left: no image, no temp file, no staging
			// tree, nothing written beside the work dir.
			for _, dir := range []string{base, filepath.Join(base, "work"), work, outside} {
				ents, _ := os.ReadDir(dir)
				for _, e := range ents {
					switch filepath.Join(dir, e.Name()) {
					case outside, filepath.Join(base, "work"), work:
						continue
					}
					t.Errorf("left behind: %s", filepath.Join(dir, e.Name()))
				}
			}
		})
	}
}

func goodTar(t *testing.T) []byte {
	return makeTar(t,
		dirE("./", 0o755),
		dirE("./bin/", 0o755),
		dirE("./home/", 0o755),
		tarEntry{h: tar.Header{Name: "./home/dev/", Typeflag: tar.TypeDir, Mode: 0o750, Uid: 1000, Gid: 1000}},
		tarEntry{h: tar.Header{Name: "./home/dev/notes", Typeflag: tar.TypeReg, Mode: 0o640, Uid: 1000, Gid: 1001}, body: "hello\n"},
		tarEntry{h: tar.Header{Name: "./bin/su", Typeflag: tar.TypeReg, Mode: 0o4755}, body: "#!/bin/sh\n"},
		tarEntry{h: tar.Header{Name: "./bin/ping", Typeflag: tar.TypeReg, Mode: 0o755, PAXRecords: map[string]string{
			"SCHILY.xattr.security.capability":     "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
			"SCHILY.xattr.user.note":               "hello world",
			"SCHILY.xattr.system.posix_acl_access": "\x02\x00\x00\x00",
		}}, body: "ping"},
		tarEntry{h: tar.Header{Name: "./bin/su2", Typeflag: tar.TypeLink, Linkname: "./bin/su"}},
		tarEntry{h: tar.Header{Name: "./bin/sh", Typeflag: tar.TypeSymlink, Linkname: "/bin/busybox", Mode: 0o777}},
		dirE("./dev/", 0o755),
		tarEntry{h: tar.Header{Name: "./dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3}},
		tarEntry{h: tar.Header{Name: "./dev/sda", Typeflag: tar.TypeBlock, Mode: 0o660, Gid: 6, Devmajor: 8, Devminor: 0}},
		tarEntry{h: tar.Header{Name: "./run/fifo", Typeflag: tar.TypeFifo, Mode: 0o620, Uid: 1000}},
		tarEntry{h: tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777}},
		tarEntry{h: tar.Header{Name: "ro/", Typeflag: tar.TypeDir, Mode: 0o555}},
		fileE("ro/inside", 0o444, "readonly dir content"),
		fileE(`odd "name" with spaces`, 0o600, "quoted"),
		fileE("bad\nname", 0o600, "skipped"),
	)
}

func checkGoodImage(t *testing.T, img string, res *Result) {
	t.Helper()
	requireClean(t, img)
	checks := []struct {
		path string
		want inode
	}{
		{"/", inode{Type: "directory", Mode: 0o755}},
		{"/home/dev", inode{Type: "directory", Mode: 0o750, UID: 1000, GID: 1000}},
		{"/home/dev/notes", inode{Type: "regular", Mode: 0o640, UID: 1000, GID: 1001, Links: 1, Size: 6}},
		{"/bin/su", inode{Type: "regular", Mode: 0o4755, Links: 2, Size: 10}},
		{"/bin/su2", inode{Type: "regular", Mode: 0o4755, Links: 2, Size: 10}},
		{"/bin/sh", inode{Type: "symlink", Mode: 0o777, Links: 1, LinkTarget: "/bin/busybox", Size: 12}},
		{"/dev/null", inode{Type: "character special", Mode: 0o666, Links: 1, Major: 1, Minor: 3}},
		{"/dev/sda", inode{Type: "block special", Mode: 0o660, GID: 6, Links: 1, Major: 8, Minor: 0}},
		{"/run/fifo", inode{Type: "FIFO", Mode: 0o620, UID: 1000, Links: 1}},
		{"/run", inode{Type: "directory", Mode: 0o755}},
		{"/tmp", inode{Type: "directory", Mode: 0o1777}},
		{"/ro", inode{Type: "directory", Mode: 0o555}},
		{"/ro/inside", inode{Type: "regular", Mode: 0o444, Links: 1, Size: 20}},
		{`/odd "name" with spaces`, inode{Type: "regular", Mode: 0o600, Links: 1, Size: 6}},
	}
	for _, c := range checks {
		got := statInode(t, img, c.path)
		if c.want.Links == 0 {
			got.Links = 0
		}
		if c.want.Type == "directory" {
			got.Size, got.Links = 0, 0
		}
		if got != c.want {
			t.Errorf("%s: got %+v, want %+v", c.path, got, c.want)
		}
	}
	if len(res.Skipped) != 2 {
		t.Errorf("skipped = %+v, want the name with a line break and the ACL", res.Skipped)
	}
	out, err := exec.Command(tool(t, "debugfs"), "-R", "ea_list /bin/ping", img).CombinedOutput()
	if err != nil {
		t.Fatalf("ea_list: %v\n%s", err, out)
	}
	for _, want := range []string{"security.capability (20) = 01 00 00 02 00 20 00", `user.note (11) = "hello world"`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("ea_list /bin/ping lacks %q:\n%s", want, out)
		}
	}
	want := Counts{Dirs: 8, Files: 5, Symlinks: 1, Hardlinks: 1, Devices: 2, Fifos: 1}
	if res.Entries != want {
		t.Errorf("counts = %+v, want %+v", res.Entries, want)
	}
	st, err := os.Stat(img)
	if err != nil || st.Size() != res.Size {
		t.Errorf("image size: stat %v, result %d (%v)", st, res.Size, err)
	}
	if len(res.SHA256) != 64 || len(res.ManifestDigest) != 64 {
		t.Errorf("digests missing: %+v", res)
	}
}

func TestImportTarGood(t *testing.T) {
	needTools(t)
	forOwnerModes(t, func(t *testing.T) {
		dir := t.TempDir()
		img := filepath.Join(dir, "root.ext4")
		var phases []string
		res, err := ImportTar(ctxT(t), bytes.NewReader(goodTar(t)), img, BuildOptions{
			WorkDir:  filepath.Join(dir, "work"),
			Progress: func(s string) { phases = append(phases, s) },
		})
		if err != nil {
			t.Fatalf("ImportTar: %v", err)
		}
		checkGoodImage(t, img, res)
		if len(phases) == 0 {
			t.Error("no progress reported")
		}
		if ents, _ := os.ReadDir(filepath.Join(dir, "work")); len(ents) != 0 {
			t.Errorf("staging left in work dir: %v", ents)
		}
	})
}

func TestImportTarCompressed(t *testing.T) {
	needTools(t)
	raw := goodTar(t)
	compress := map[string]func([]byte) []byte{
		"gzip": func(b []byte) []byte {
			var buf bytes.Buffer
			w := gzip.NewWriter(&buf)
			_, _ = w.Write(b) // an in-memory buffer: Close reports any error
			if err := w.Close(); err != nil {
				panic(err)
			}
			return buf.Bytes()
		},
		"zstd": func(b []byte) []byte {
			var buf bytes.Buffer
			w, _ := zstd.NewWriter(&buf)
			_, _ = w.Write(b) // an in-memory buffer: Close reports any error
			if err := w.Close(); err != nil {
				panic(err)
			}
			return buf.Bytes()
		},
		"xz": func(b []byte) []byte {
			var buf bytes.Buffer
			w, _ := xz.NewWriter(&buf)
			_, _ = w.Write(b) // an in-memory buffer: Close reports any error
			if err := w.Close(); err != nil {
				panic(err)
			}
			return buf.Bytes()
		},
	}
	var digest string
	for name, c := range compress {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			img := filepath.Join(dir, "root.ext4")
			res, err := ImportTar(ctxT(t), bytes.NewReader(c(raw)), img, BuildOptions{})
			if err != nil {
				t.Fatalf("ImportTar: %v", err)
			}
			requireClean(t, img)
			if got := statInode(t, img, "/bin/su"); got.Mode != 0o4755 {
				t.Errorf("/bin/su mode %o", got.Mode)
			}
			if digest != "" && res.ManifestDigest != digest {
				t.Errorf("manifest digest differs between compressions")
			}
			digest = res.ManifestDigest
		})
	}
}

func TestImportTarNotATar(t *testing.T) {
	dir := t.TempDir()
	_, err := ImportTar(ctxT(t), strings.NewReader("this is not an archive at all"), filepath.Join(dir, "x.ext4"), BuildOptions{})
	if err == nil {
		t.Fatal("want an error for garbage input")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
}
