package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"banger/internal/execx"
)

// seedImage imports entries as an ext4 image and returns its path.
func seedImage(t *testing.T, entries ...tarEntry) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "rootfs.ext4")
	if _, err := ImportTar(ctxT(t), bytes.NewReader(makeTar(t, entries...)), img, BuildOptions{}); err != nil {
		t.Fatalf("ImportTar: %v", err)
	}
	return img
}

// imageFromDir makes an ext4 image straight from a host tree with mkfs -d,
// so names ImportTar would refuse (a line break) reach the image.
func imageFromDir(t *testing.T, dir string, extra ...string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "rootfs.ext4")
	args := append([]string{"-q", "-F", "-b", "4096", "-d", dir, "-E", "root_owner=0:0"}, extra...)
	args = append(args, img, "64M")
	if out, err := exec.Command(tool(t, "mkfs.ext4"), args...).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	return img
}

// readSeed lists a seed's headers by name.
func readSeed(t *testing.T, p string) map[string]*tar.Header {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]*tar.Header{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("read seed: %v", err)
		}
		out[h.Name] = h
	}
}

func catFile(t *testing.T, img, p string) string {
	t.Helper()
	out, err := exec.Command(tool(t, "debugfs"), "-R", "cat "+quote(p), img).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", p, err)
	}
	return string(out)
}

var reMtime = regexp.MustCompile(`(?m)^ mtime: 0x([0-9a-f]{8})`)

func mtimeOf(t *testing.T, img, p string) int64 {
	t.Helper()
	out, err := exec.Command(tool(t, "debugfs"), "-R", "stat "+quote(p), img).Output()
	if err != nil {
		t.Fatalf("debugfs stat %s: %v", p, err)
	}
	m := reMtime.FindSubmatch(out)
	if m == nil {
		t.Fatalf("no mtime for %s in:\n%s", p, out)
	}
	v, _ := strconv.ParseUint(string(m[1]), 16, 32)
	return int64(int32(v))
}

// lsRoot lists a disk's root directory, "." and ".." left out.
func lsRoot(t *testing.T, img string) map[string]lsRecord {
	t.Helper()
	out, err := exec.Command(tool(t, "debugfs"), "-R", "ls -p /", img).Output()
	if err != nil {
		t.Fatalf("debugfs ls: %v", err)
	}
	recs, err := parseLs(bufio.NewReader(bytes.NewReader(append([]byte("debugfs: ls -p <2>\n"), out...))), []uint32{2}, 100)
	if err != nil {
		t.Fatalf("parse ls: %v", err)
	}
	m := map[string]lsRecord{}
	for _, r := range recs[0] {
		if r.name != "." && r.name != ".." {
			m[r.name] = r
		}
	}
	return m
}

// rootNames lists the names in a disk's root directory, sorted.
func rootNames(t *testing.T, img string) []string {
	t.Helper()
	var names []string
	for n := range lsRoot(t, img) {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

var seedMtime = time.Unix(1600000000, 0)

func seedRootEntries() []tarEntry {
	long := strings.Repeat("t", 100)
	return []tarEntry{
		dirE("./", 0o755),
		dirE("etc/", 0o755),
		fileE("etc/passwd", 0o644, "root:x:0:0::/root:/bin/sh\n"),
		{h: tar.Header{Name: "root/", Typeflag: tar.TypeDir, Mode: 0o750, ModTime: seedMtime}},
		{h: tar.Header{Name: "root/secret", Typeflag: tar.TypeReg, Mode: 0o600, ModTime: seedMtime}, body: "s3cret\n"},
		fileE("root/.bashrc", 0o644, "export PS1='# '\n"),
		dirE("root/.ssh/", 0o700),
		fileE("root/.ssh/authorized_keys", 0o600, "ssh-ed25519 AAAA test\n"),
		{h: tar.Header{Name: "root/link", Typeflag: tar.TypeSymlink, Linkname: ".bashrc", Mode: 0o777}},
		{h: tar.Header{Name: "root/long", Typeflag: tar.TypeSymlink, Linkname: long, Mode: 0o777}},
		{h: tar.Header{Name: "root/hard", Typeflag: tar.TypeLink, Linkname: "root/secret"}},
		{h: tar.Header{Name: "root/user/", Typeflag: tar.TypeDir, Mode: 0o755, Uid: 1000, Gid: 1000}},
		{h: tar.Header{Name: "root/user/notes", Typeflag: tar.TypeReg, Mode: 0o640, Uid: 1000, Gid: 1000}, body: "mine\n"},
		{h: tar.Header{Name: "root/big-id", Typeflag: tar.TypeReg, Mode: 0o4755, Uid: 3000000000, Gid: 4294967294}, body: "x"},
		{h: tar.Header{Name: "root/empty", Typeflag: tar.TypeReg, Mode: 0o644}},
		{h: tar.Header{Name: "root/fifo", Typeflag: tar.TypeFifo, Mode: 0o600}},
		{h: tar.Header{Name: "root/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3}},
	}
}

func TestWorkSeedRoundTrip(t *testing.T) {
	needTools(t)
	img := seedImage(t, seedRootEntries()...)
	long := strings.Repeat("t", 100)
	work := t.TempDir()
	seed := filepath.Join(t.TempDir(), WorkSeedFile)
	res, err := CaptureWorkSeed(ctxT(t), img, seed, work)
	if err != nil {
		t.Fatalf("CaptureWorkSeed: %v", err)
	}
	if want := (Counts{Dirs: 3, Files: 6, Symlinks: 2, Hardlinks: 1}); res.Entries != want {
		t.Errorf("entries %+v, want %+v", res.Entries, want)
	}
	var skipped []string
	for _, s := range res.Skipped {
		skipped = append(skipped, s.Path)
	}
	sort.Strings(skipped)
	if strings.Join(skipped, " ") != "/root/fifo /root/null" {
		t.Errorf("skipped %v, want the fifo and the device node", res.Skipped)
	}
	if st, err := os.Stat(seed); err != nil || st.Size() != res.Size || st.Mode().Perm() != 0o600 {
		t.Errorf("seed file %v (%v), result size %d", st, err, res.Size)
	}
	if l := leftovers(t, work); len(l) != 0 {
		t.Errorf("left in the work dir: %v", l)
	}
	if l := leftovers(t, filepath.Dir(seed)); len(l) != 1 {
		t.Errorf("beside the seed: %v", l)
	}

	hs := readSeed(t, seed)
	if h := hs["./"]; h == nil || h.Mode != 0o750 || !h.ModTime.Equal(seedMtime) {
		t.Errorf("seed root header %+v", h)
	}
	// Names sort within a directory, so "hard" is the inode's first path.
	if h := hs["hard"]; h == nil || h.Typeflag != tar.TypeReg || h.Mode != 0o600 || !h.ModTime.Equal(seedMtime) || h.Size != 7 {
		t.Errorf("seed file header %+v", h)
	}
	if h := hs["secret"]; h == nil || h.Typeflag != tar.TypeLink || h.Linkname != "hard" {
		t.Errorf("seed hardlink header %+v", h)
	}
	if h := hs["long"]; h == nil || h.Linkname != long {
		t.Errorf("seed slow symlink header %+v", h)
	}
	for name := range hs {
		if strings.Contains(name, "passwd") || strings.Contains(name, "etc") {
			t.Errorf("seed holds %s from outside /root", name)
		}
	}

	forOwnerModes(t, func(t *testing.T) {
		disk := filepath.Join(t.TempDir(), "work.ext4")
		if err := MakeWorkDiskFromSeed(ctxT(t), disk, 64<<20, seed); err != nil {
			t.Fatalf("MakeWorkDiskFromSeed: %v", err)
		}
		requireClean(t, disk)
		if l := leftovers(t, filepath.Dir(disk)); len(l) != 1 {
			t.Errorf("beside the disk: %v", l)
		}
		for _, tc := range []struct {
			path string
			want inode
		}{
			{"/", inode{Type: "directory", Mode: 0o700, Links: 5}},
			{"/secret", inode{Type: "regular", Mode: 0o600, Links: 2, Size: 7}},
			{"/hard", inode{Type: "regular", Mode: 0o600, Links: 2, Size: 7}},
			{"/.bashrc", inode{Type: "regular", Mode: 0o644, Links: 1, Size: 16}},
			{"/.ssh", inode{Type: "directory", Mode: 0o700, Links: 2, Size: 4096}},
			{"/.ssh/authorized_keys", inode{Type: "regular", Mode: 0o600, Links: 1, Size: 22}},
			{"/link", inode{Type: "symlink", Mode: 0o777, Links: 1, LinkTarget: ".bashrc", Size: 7}},
			{"/long", inode{Type: "symlink", Mode: 0o777, Links: 1, Size: 100}},
			{"/user", inode{Type: "directory", Mode: 0o755, UID: 1000, GID: 1000, Links: 2, Size: 4096}},
			{"/user/notes", inode{Type: "regular", Mode: 0o640, UID: 1000, GID: 1000, Links: 1, Size: 5}},
			{"/empty", inode{Type: "regular", Mode: 0o644, Links: 1}},
		} {
			got := statInode(t, disk, tc.path)
			if tc.path == "/" {
				got.Size = 0
			}
			if got != tc.want {
				t.Errorf("%s: got %+v, want %+v", tc.path, got, tc.want)
			}
		}
		for p, want := range map[string]string{
			"/secret": "s3cret\n", "/.bashrc": "export PS1='# '\n", "/.ssh/authorized_keys": "ssh-ed25519 AAAA test\n",
			"/user/notes": "mine\n", "/long": long,
		} {
			if got := catFile(t, disk, p); got != want {
				t.Errorf("%s holds %q, want %q", p, got, want)
			}
		}
		// debugfs stat prints owners above 2^31 negative; ls -p is parsed here.
		if r := lsRoot(t, disk)["big-id"]; r.uid != 3000000000 || r.gid != 4294967294 || r.mode != 0o104755 {
			t.Errorf("/big-id: %+v", r)
		}
		if got := mtimeOf(t, disk, "/secret"); got != seedMtime.Unix() {
			t.Errorf("/secret mtime %d, want %d", got, seedMtime.Unix())
		}
		if got := rootNames(t, disk); strings.Join(got, " ") != ".bashrc .ssh big-id empty hard link long lost+found secret user" {
			t.Errorf("work disk root holds %v", got)
		}
	})
}

func TestWorkSeedEmpty(t *testing.T) {
	needTools(t)
	for _, tc := range []struct {
		name    string
		entries []tarEntry
		skipped bool
	}{
		{"empty", []tarEntry{dirE("./", 0o755), dirE("root/", 0o700)}, false},
		{"missing", []tarEntry{dirE("./", 0o755), dirE("etc/", 0o755)}, false},
		{"symlink", []tarEntry{dirE("./", 0o755), dirE("home/x/", 0o755), fileE("home/x/f", 0o644, "not in the seed"),
			{h: tar.Header{Name: "root", Typeflag: tar.TypeSymlink, Linkname: "/home/x"}}}, true},
		{"file", []tarEntry{dirE("./", 0o755), fileE("root", 0o644, "not a dir")}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := seedImage(t, tc.entries...)
			seed := filepath.Join(t.TempDir(), WorkSeedFile)
			res, err := CaptureWorkSeed(ctxT(t), img, seed, "")
			if err != nil {
				t.Fatalf("CaptureWorkSeed: %v", err)
			}
			if res.Entries != (Counts{Dirs: 1}) || (len(res.Skipped) > 0) != tc.skipped {
				t.Errorf("result %+v", res)
			}
			if hs := readSeed(t, seed); len(hs) != 1 || hs["./"] == nil {
				t.Errorf("seed holds %v, want only ./", hs)
			}
			disk := filepath.Join(t.TempDir(), "work.ext4")
			if err := MakeWorkDiskFromSeed(ctxT(t), disk, 32<<20, seed); err != nil {
				t.Fatalf("MakeWorkDiskFromSeed: %v", err)
			}
			requireClean(t, disk)
			if got := rootNames(t, disk); strings.Join(got, " ") != "lost+found" {
				t.Errorf("work disk root holds %v", got)
			}
			if got := statInode(t, disk, "/"); got.Mode != 0o700 || got.UID != 0 || got.GID != 0 {
				t.Errorf("work disk root %+v", got)
			}
		})
	}
}

func TestWorkSeedHostileNames(t *testing.T) {
	needTools(t)
	src := t.TempDir()
	sentinel := t.TempDir()
	root := filepath.Join(src, "root")
	names := []string{
		`a"b`, `x y`, `-rf`, `back\slash`, `<2>`, `'quoted'`, "tab\there", "ünï", `$(touch pwned)`,
		"debugfs: ls -p <2>", "..a", strings.Repeat("n", 255), `%s%n`,
	}
	if err := os.MkdirAll(filepath.Join(root, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(root, n), []byte(n), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "lost+found"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "new\nline"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "dir\nbreak"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "dir\nbreak", "inside"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Symlinks that would escape if anything followed them.
	for n, target := range map[string]string{"escape": sentinel, "up": "../../../..", "sub/abs": "/etc/shadow", "nl": "a\nb"} {
		if err := os.Symlink(target, filepath.Join(root, n)); err != nil {
			t.Fatal(err)
		}
	}
	img := imageFromDir(t, src)
	// A loop: a directory linked below itself, which only a crafted image has.
	var script bytes.Buffer
	script.WriteString("link /root /root/sub/loop\n")
	if err := runDebugfs(ctxT(t), tool(t, "debugfs"), img, &script); err != nil {
		t.Fatal(err)
	}

	seed := filepath.Join(t.TempDir(), WorkSeedFile)
	res, err := CaptureWorkSeed(ctxT(t), img, seed, "")
	if err != nil {
		t.Fatalf("CaptureWorkSeed: %v", err)
	}
	reasons := map[string]string{}
	for _, s := range res.Skipped {
		reasons[s.Path] = s.Reason
	}
	for _, p := range []string{"/root/new\nline", "/root/dir\nbreak", "/root/sub/loop", "/root/lost+found"} {
		if reasons[p] == "" {
			t.Errorf("%q not skipped (skipped: %v)", p, res.Skipped)
		}
	}
	if len(reasons) != 4 {
		t.Errorf("skipped %v, want four", res.Skipped)
	}
	if l := leftovers(t, sentinel); len(l) != 0 {
		t.Errorf("capture wrote through a symlink: %v", l)
	}
	hs := readSeed(t, seed)
	for _, n := range names {
		if h := hs[n]; h == nil || h.Size != int64(len(n)) {
			t.Errorf("seed entry %q: %+v", n, h)
		}
	}
	for n, target := range map[string]string{"escape": sentinel, "up": "../../../..", "sub/abs": "/etc/shadow", "nl": "a\nb"} {
		if h := hs[n]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != target {
			t.Errorf("seed symlink %q: %+v", n, h)
		}
	}

	disk := filepath.Join(t.TempDir(), "work.ext4")
	if err := MakeWorkDiskFromSeed(ctxT(t), disk, 32<<20, seed); err != nil {
		t.Fatalf("MakeWorkDiskFromSeed: %v", err)
	}
	requireClean(t, disk)
	for _, n := range names {
		if got := catFile(t, disk, "/"+n); got != n {
			t.Errorf("%q holds %q", n, got)
		}
	}
	if got := statInode(t, disk, "/escape"); got.Type != "symlink" || got.LinkTarget != sentinel {
		t.Errorf("/escape: %+v", got)
	}
}

// patchImage replaces the only occurrence of old in the image file with
// repl (the same length), to craft what no tool would write.
func patchImage(t *testing.T, img, old, repl string) {
	t.Helper()
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Count(b, []byte(old)) != 1 || len(old) != len(repl) {
		t.Fatalf("%q occurs %d times in the image", old, bytes.Count(b, []byte(old)))
	}
	if err := os.WriteFile(img, bytes.Replace(b, []byte(old), []byte(repl), 1), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestWorkSeedCraftedDirectories(t *testing.T) {
	needTools(t)
	src := t.TempDir()
	root := filepath.Join(src, "root")
	if err := os.MkdirAll(root, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"dup-name-aaaaaaa", "dup-name-bbbbbbb", "slash-xxxxxxxx"} {
		if err := os.WriteFile(filepath.Join(root, n), []byte("content"), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// Without directory checksums, renaming in place leaves a valid-looking
	// directory block.
	t.Run("duplicate", func(t *testing.T) {
		img := imageFromDir(t, src, "-O", "^metadata_csum")
		patchImage(t, img, "dup-name-bbbbbbb", "dup-name-aaaaaaa")
		seed := filepath.Join(t.TempDir(), WorkSeedFile)
		res, err := CaptureWorkSeed(ctxT(t), img, seed, "")
		if err != nil {
			t.Fatalf("CaptureWorkSeed: %v", err)
		}
		if len(res.Skipped) != 1 || res.Skipped[0].Path != "/root/dup-name-aaaaaaa" || res.Entries.Files != 2 {
			t.Errorf("result %+v", res)
		}
	})
	t.Run("slash", func(t *testing.T) {
		img := imageFromDir(t, src, "-O", "^metadata_csum")
		patchImage(t, img, "slash-xxxxxxxx", "slash/../../xx")
		dir := t.TempDir()
		seed := filepath.Join(dir, WorkSeedFile)
		_, err := CaptureWorkSeed(ctxT(t), img, seed, "")
		if !errors.Is(err, ErrWorkSeedUnreadable) || !strings.Contains(err.Error(), "listing record") {
			t.Fatalf("err = %v, want ErrWorkSeedUnreadable for the listing", err)
		}
		if l := leftovers(t, dir); len(l) != 0 {
			t.Errorf("left behind: %v", l)
		}
	})
	t.Run("root is /", func(t *testing.T) {
		img := imageFromDir(t, t.TempDir())
		var script bytes.Buffer
		script.WriteString("link <2> /root\n")
		if err := runDebugfs(ctxT(t), tool(t, "debugfs"), img, &script); err != nil {
			t.Fatal(err)
		}
		res, err := CaptureWorkSeed(ctxT(t), img, filepath.Join(t.TempDir(), WorkSeedFile), "")
		if err != nil {
			t.Fatalf("CaptureWorkSeed: %v", err)
		}
		if len(res.Skipped) != 1 || res.Entries != (Counts{Dirs: 1}) {
			t.Errorf("result %+v", res)
		}
	})
	t.Run("not ext4", func(t *testing.T) {
		img := filepath.Join(t.TempDir(), "junk")
		if err := os.WriteFile(img, bytes.Repeat([]byte("junk"), 4096), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := CaptureWorkSeed(ctxT(t), img, filepath.Join(t.TempDir(), WorkSeedFile), "")
		if !errors.Is(err, ErrWorkSeedUnreadable) {
			t.Fatalf("err = %v, want ErrWorkSeedUnreadable", err)
		}
	})
}

func TestWorkSeedLimits(t *testing.T) {
	needTools(t)
	t.Run("too large", func(t *testing.T) {
		src := t.TempDir()
		if err := os.MkdirAll(filepath.Join(src, "root", "cache"), 0o700); err != nil {
			t.Fatal(err)
		}
		f, err := os.Create(filepath.Join(src, "root", "cache", "blob"))
		if err != nil {
			t.Fatal(err)
		}
		// Sparse: the image stays small, the seed would not.
		if err := f.Truncate(MaxWorkSeedSize + 1); err != nil {
			t.Fatal(err)
		}
		f.Close()
		img := imageFromDir(t, src)
		dir := t.TempDir()
		_, err = CaptureWorkSeed(ctxT(t), img, filepath.Join(dir, WorkSeedFile), dir)
		if !errors.Is(err, ErrWorkSeedTooLarge) || !strings.Contains(err.Error(), "256 MiB") {
			t.Fatalf("err = %v, want ErrWorkSeedTooLarge naming the limit", err)
		}
		if l := leftovers(t, dir); len(l) != 0 {
			t.Errorf("left behind: %v", l)
		}
	})
	t.Run("too deep", func(t *testing.T) {
		src := t.TempDir()
		deep := filepath.Join(src, "root")
		for range maxSeedDepth + 2 {
			deep = filepath.Join(deep, "d")
		}
		if err := os.MkdirAll(deep, 0o700); err != nil {
			t.Fatal(err)
		}
		img := imageFromDir(t, src)
		seed := filepath.Join(t.TempDir(), WorkSeedFile)
		res, err := CaptureWorkSeed(ctxT(t), img, seed, "")
		if err != nil {
			t.Fatalf("CaptureWorkSeed: %v", err)
		}
		if len(res.Skipped) != 1 || res.Entries.Dirs != maxSeedDepth+1 {
			t.Errorf("result %+v", res)
		}
	})
}

func TestMakeWorkDiskFromSeedTooSmall(t *testing.T) {
	needTools(t)
	img := seedImage(t, dirE("./", 0o755), dirE("root/", 0o700), fileE("root/big", 0o644, strings.Repeat("x", 12<<20)))
	seed := filepath.Join(t.TempDir(), WorkSeedFile)
	if _, err := CaptureWorkSeed(ctxT(t), img, seed, ""); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	err := MakeWorkDiskFromSeed(ctxT(t), filepath.Join(dir, "work.ext4"), 8<<20, seed)
	if err == nil || !strings.Contains(err.Error(), "content needs") {
		t.Fatalf("err = %v, want a too-small error", err)
	}
	if l := leftovers(t, dir); len(l) != 0 {
		t.Errorf("left behind: %v", l)
	}
	if err := MakeWorkDiskFromSeed(ctxT(t), filepath.Join(dir, "work.ext4"), 64<<20, filepath.Join(dir, "missing.tar")); err == nil {
		t.Error("want an error for a missing seed")
	}
}

func TestParseLs(t *testing.T) {
	for _, tc := range []struct {
		name  string
		out   string
		inos  []uint32
		names [][]string
		err   error
	}{
		{"two dirs", "debugfs: ls -p <2>\n/2/040755/0/0/.//\n/12/040700/0/0/root//\n\ndebugfs: ls -p <12>\n/13/100600/1000/-2/f/5/\n\n",
			[]uint32{2, 12}, [][]string{{".", "root"}, {"f"}}, nil},
		{"line break and fake echo in a name", "debugfs: ls -p <2>\n/13/100600/0/0/a\ndebugfs: ls -p <9>\nb/5/\n\n",
			[]uint32{2}, [][]string{{"a\ndebugfs: ls -p <9>\nb"}}, nil},
		{"empty listing", "debugfs: ls -p <2>\n\n", []uint32{2}, [][]string{nil}, nil},
		{"slash in a name", "debugfs: ls -p <2>\n/13/100600/0/0/a/b/5/\n", []uint32{2}, nil, ErrWorkSeedUnreadable},
		{"wrong command", "debugfs: ls -p <3>\n", []uint32{2}, nil, ErrWorkSeedUnreadable},
		{"missing listing", "debugfs: ls -p <2>\n", []uint32{2, 12}, nil, ErrWorkSeedUnreadable},
		{"record first", "/13/100600/0/0/a/5/\n", []uint32{2}, nil, ErrWorkSeedUnreadable},
		{"bad mode", "debugfs: ls -p <2>\n/13/100900/0/0/a/5/\n", []uint32{2}, nil, ErrWorkSeedUnreadable},
		{"bad owner", "debugfs: ls -p <2>\n/13/100600/x/0/a/5/\n", []uint32{2}, nil, ErrWorkSeedUnreadable},
		{"negative size", "debugfs: ls -p <2>\n/13/100600/0/0/a/-5/\n", []uint32{2}, nil, ErrWorkSeedUnreadable},
		{"truncated", "debugfs: ls -p <2>\n/13/100600/0/0/a", []uint32{2}, nil, ErrWorkSeedUnreadable},
		{"junk", "debugfs: ls -p <2>\nhello\n", []uint32{2}, nil, ErrWorkSeedUnreadable},
		{"too many", "debugfs: ls -p <2>\n/13/100600/0/0/a/5/\n/14/100600/0/0/b/5/\n/15/100600/0/0/c/5/\n", []uint32{2}, nil, ErrWorkSeedTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			limit := 10
			if errors.Is(tc.err, ErrWorkSeedTooLarge) {
				limit = 2
			}
			got, err := parseLs(bufio.NewReader(strings.NewReader(tc.out)), tc.inos, limit)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i, recs := range got {
				var names []string
				for _, r := range recs {
					names = append(names, r.name)
				}
				if strings.Join(names, "|") != strings.Join(tc.names[i], "|") {
					t.Errorf("listing %d: %q, want %q", i, names, tc.names[i])
				}
			}
			if tc.name == "two dirs" && (got[1][0].gid != 1<<32-2 || got[1][0].size != 5 || got[1][0].mode != 0o100600) {
				t.Errorf("record %+v", got[1][0])
			}
		})
	}
}

func TestParseInodeDumps(t *testing.T) {
	out := "debugfs: inode_dump <15>\n" +
		"0000  ffa1 0000 0700 0000 76e1 086b 76e1 086b  ........v..kv..k\n" +
		"0020  76e1 086b 0000 0000 0000 0100 0000 0000  v..k............\n" +
		"0040  0000 0000 0000 0000 2e62 6173 6872 6300  .........bashrc.\n" +
		"0060  0000 0000 0000 0000 0000 0000 0000 0000  ................\n" +
		"*\n" +
		"0200  2000 654f 0000 0000 0100 0000 0000 0000   .eO............\n" +
		"0220  0000 0000 0000 0000 0000 0000 0000 0000  ................\n" +
		"*\n" +
		"\n" +
		"debugfs: inode_dump <16>\n" +
		"0000  a481 0000 0300 0000 0000 0000 0000 0000  ................\n" +
		"*\n\n"
	got := map[uint32][]byte{}
	err := parseInodeDumps(bufio.NewReader(strings.NewReader(out)), []uint32{15, 16}, func(ino uint32, raw []byte) {
		got[ino] = raw
	})
	if err != nil {
		t.Fatal(err)
	}
	in := decodeInode(got[15])
	if in.mtime != 0x6b08e176+1<<32 || string(in.iblock[:7]) != ".bashrc" || in.flags != 0 {
		t.Errorf("inode 15: %+v", in)
	}
	// A trailing "*" repeats the last line to the end.
	if len(got[16]) != 256 || got[16][0] != 0xa4 || got[16][0xf0] != 0xa4 || got[16][0xf4] != 3 {
		t.Errorf("inode 16: %x", got[16])
	}
	for _, bad := range []string{
		"debugfs: inode_dump <16>\n",
		"debugfs: inode_dump <15>\n0000  zz\n",
		"debugfs: inode_dump <15>\n0020  0000 0000 0000 0000 0000 0000 0000 0000  x\n0000  0000 0000 0000 0000 0000 0000 0000 0000  x\n",
		"0000  0000 0000 0000 0000 0000 0000 0000 0000  x\n",
	} {
		if err := parseInodeDumps(bufio.NewReader(strings.NewReader(bad)), []uint32{15}, func(uint32, []byte) {}); !errors.Is(err, ErrWorkSeedUnreadable) {
			t.Errorf("%q: err = %v", bad, err)
		}
	}
}

// BenchmarkMakeWorkDisk8GiB builds an 8 GiB work disk: empty, from a
// Debian image's /root, and from one with a user's dotfiles and a small
// project (1.6 MiB).
func BenchmarkMakeWorkDisk8GiB(b *testing.B) {
	for _, t := range []string{"mkfs.ext4", "debugfs"} {
		if _, err := execx.LookPath(t); err != nil {
			b.Skipf("%s not installed", t)
		}
	}
	debian := []tarEntry{
		dirE("./", 0o755), dirE("root/", 0o700),
		fileE("root/.bashrc", 0o644, strings.Repeat("# ~/.bashrc: executed by bash(1) for non-login shells.\n", 10)),
		fileE("root/.profile", 0o644, strings.Repeat("# ~/.profile: executed by Bourne-compatible login shells.\n", 3)),
	}
	dev := append(append([]tarEntry(nil), debian...),
		dirE("root/.ssh/", 0o700),
		fileE("root/.ssh/authorized_keys", 0o600, strings.Repeat("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI key\n", 4)),
		dirE("root/.config/", 0o755), dirE("root/.config/git/", 0o755),
		fileE("root/.config/git/config", 0o644, "[user]\n\tname = dev\n"),
		tarEntry{h: tar.Header{Name: "root/.vimrc", Typeflag: tar.TypeSymlink, Linkname: ".config/vimrc"}},
		fileE("root/.config/vimrc", 0o644, "set nocompatible\n"),
		tarEntry{h: tar.Header{Name: "root/project/", Typeflag: tar.TypeDir, Mode: 0o755, Uid: 1000, Gid: 1000}},
	)
	for i := range 40 {
		dev = append(dev, tarEntry{h: tar.Header{Name: "root/project/file" + strconv.Itoa(i), Typeflag: tar.TypeReg,
			Mode: 0o644, Uid: 1000, Gid: 1000}, body: strings.Repeat("x", 2048*i)})
	}
	for _, tc := range []struct {
		name    string
		entries []tarEntry
	}{{"empty", nil}, {"debian-root", debian}, {"dotfiles-and-project", dev}} {
		b.Run(tc.name, func(b *testing.B) {
			dir := b.TempDir()
			seed := ""
			if tc.entries != nil {
				img := filepath.Join(dir, "rootfs.ext4")
				if _, err := ImportTar(context.Background(), bytes.NewReader(makeTar(b, tc.entries...)), img, BuildOptions{}); err != nil {
					b.Fatal(err)
				}
				seed = filepath.Join(dir, WorkSeedFile)
				res, err := CaptureWorkSeed(context.Background(), img, seed, "")
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(res.Size)/1024, "seed-KiB")
			}
			disk := filepath.Join(dir, "work.ext4")
			for b.Loop() {
				if err := MakeWorkDiskFromSeed(context.Background(), disk, 8<<30, seed); err != nil {
					b.Fatal(err)
				}
				if err := os.Remove(disk); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestWorkSeedCancelled: a capture cut short says so, and never that the
// image is unreadable (which would mark it seedless for good).
func TestWorkSeedCancelled(t *testing.T) {
	needTools(t)
	img := seedImage(t, seedRootEntries()...)
	for _, after := range []time.Duration{0, time.Millisecond, 5 * time.Millisecond} {
		ctx, cancel := context.WithTimeout(context.Background(), after)
		seed := filepath.Join(t.TempDir(), WorkSeedFile)
		_, err := CaptureWorkSeed(ctx, img, seed, "")
		cancel()
		if err == nil {
			continue // fast enough to finish: nothing to check
		}
		if errors.Is(err, ErrWorkSeedUnreadable) || errors.Is(err, ErrWorkSeedTooLarge) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("cancelled after %v: %v, want the deadline, not a verdict on the image", after, err)
		}
		if _, serr := os.Stat(seed); !os.IsNotExist(serr) {
			t.Errorf("a cancelled capture left %s: %v", seed, serr)
		}
	}
}
