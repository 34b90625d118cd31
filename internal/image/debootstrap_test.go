package image

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"banger/internal/testutil"
)

// TestBuildDebootstrap builds a real bookworm image: minutes, root and the
// Debian mirror. Opt in with BANGER_TEST_ROOT=1 BANGER_TEST_DEBOOTSTRAP=1.
func TestBuildDebootstrap(t *testing.T) {
	testutil.RequireRoot(t)
	if os.Getenv("BANGER_TEST_DEBOOTSTRAP") != "1" {
		t.Skip("set BANGER_TEST_DEBOOTSTRAP=1 to run debootstrap")
	}
	needTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	dir := t.TempDir()
	if keep := os.Getenv("BANGER_TEST_KEEP_IMAGE"); keep != "" {
		dir = keep
	}
	img := filepath.Join(dir, "bookworm.ext4")
	start := time.Now()
	res, err := BuildDebootstrap(ctx, "bookworm", img, BuildOptions{
		WorkDir:  filepath.Join(dir, "work"),
		Progress: func(s string) { t.Logf("%s: %s", time.Since(start).Round(time.Second), s) },
	})
	if err != nil {
		t.Fatalf("BuildDebootstrap: %v", err)
	}
	t.Logf("built in %s: %d MiB, %+v, %d skipped", time.Since(start).Round(time.Second), res.Size>>20, res.Entries, len(res.Skipped))
	requireClean(t, img)
	if got := statInode(t, img, "/"); got.Mode != 0o755 || got.UID != 0 {
		t.Errorf("root inode %+v", got)
	}
	if got := statInode(t, img, "/lib/systemd/systemd"); got.Type != "regular" {
		t.Errorf("/lib/systemd/systemd: %+v", got)
	}
	if got := statInode(t, img, "/sbin/init"); got.Type != "symlink" && got.Type != "regular" {
		t.Errorf("/sbin/init: %+v", got)
	}
	if got := statInode(t, img, "/etc/systemd/system/systemd-timesyncd.service"); got.LinkTarget != "/dev/null" {
		t.Errorf("timesyncd not masked: %+v", got)
	}
	if got := statInode(t, img, "/usr/bin/su"); got.Mode != 0o4755 {
		t.Errorf("/usr/bin/su: %+v", got)
	}
	if got := statInode(t, img, "/tmp"); got.Mode != 0o1777 {
		t.Errorf("/tmp: %+v", got)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "work")); len(ents) != 0 {
		t.Errorf("staging left in work dir: %v", ents)
	}
}
