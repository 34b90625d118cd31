package image

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"banger/internal/execx"
)

func hostBusybox(t *testing.T) string {
	t.Helper()
	p, err := execx.LookPath("busybox")
	if err != nil {
		t.Skip("busybox not installed")
	}
	if err := checkStatic(p); err != nil {
		t.Skipf("host busybox unusable: %v", err)
	}
	return p
}

func TestBuildMinimal(t *testing.T) {
	needTools(t)
	bb := hostBusybox(t)
	dir := t.TempDir()
	var digests []string
	for i := range 2 {
		img := filepath.Join(dir, "minimal.ext4")
		start := time.Now()
		res, err := BuildMinimal(ctxT(t), img, BuildOptions{WorkDir: filepath.Join(dir, "work"), Busybox: bb})
		if err != nil {
			t.Fatalf("BuildMinimal: %v", err)
		}
		t.Logf("build %d: %s, %d MiB, %+v", i, time.Since(start).Round(time.Millisecond), res.Size>>20, res.Entries)
		requireClean(t, img)
		digests = append(digests, res.ManifestDigest)
		if got := statInode(t, img, "/bin/busybox"); got.Type != "regular" || got.Mode != 0o755 || got.UID != 0 {
			t.Errorf("/bin/busybox: %+v", got)
		}
		if got := statInode(t, img, "/bin/sh"); got.Type != "symlink" || got.LinkTarget != "/bin/busybox" {
			t.Errorf("/bin/sh: %+v", got)
		}
		for p, mode := range map[string]uint32{"/root": 0o700, "/tmp": 0o1777, "/var/tmp": 0o1777, "/etc": 0o755, "/proc": 0o555} {
			if got := statInode(t, img, p); got.Type != "directory" || got.Mode != mode || got.UID != 0 || got.GID != 0 {
				t.Errorf("%s: %+v, want a root-owned %o directory", p, got, mode)
			}
		}
		if got := statInode(t, img, "/dev/console"); got.Type != "character special" || got.Major != 5 || got.Minor != 1 {
			t.Errorf("/dev/console: %+v", got)
		}
		if got := statInode(t, img, "/etc/os-release"); got.Type != "regular" || got.Size == 0 {
			t.Errorf("/etc/os-release: %+v", got)
		}
		if res.Entries.Symlinks < 50 {
			t.Errorf("only %d applet links", res.Entries.Symlinks)
		}
	}
	if digests[0] != digests[1] {
		t.Error("two builds of the same inputs have different content manifests")
	}
}

func TestBuildMinimalRejectsDynamicBusybox(t *testing.T) {
	// Any dynamically linked executable stands in for a dynamic busybox.
	dyn, err := execx.LookPath("mkfs.ext4")
	if err != nil {
		t.Skip("no dynamic executable to test with")
	}
	if checkStatic(dyn) == nil {
		t.Skip("mkfs.ext4 is static here")
	}
	dir := t.TempDir()
	_, err = BuildMinimal(ctxT(t), filepath.Join(dir, "m.ext4"), BuildOptions{Busybox: dyn})
	if err == nil || !contains(err.Error(), "install busybox-static") {
		t.Fatalf("err = %v, want the busybox-static hint", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
}
