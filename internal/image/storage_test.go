package image

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestChooseStorage(t *testing.T) {
	none := StorageProbe{DMWhy: "no dm here", ReflinkFS: "ext4", OverlayWhy: "no qemu-img"}
	refl := StorageProbe{DMWhy: "no dm here", Reflink: true, ReflinkFS: "xfs", Overlay: true}
	dm := StorageProbe{DM: true, Reflink: true, ReflinkFS: "xfs", Overlay: true}
	ovl := StorageProbe{DMWhy: "no dm here", ReflinkFS: "ext4", Overlay: true}
	tests := []struct {
		want    Storage
		p       StorageProbe
		got     Storage
		errText string
		note    string
	}{
		{StorageAuto, dm, StorageDM, "", "constant time"},
		{StorageAuto, refl, StorageReflink, "", "no dm here"},
		{StorageAuto, none, StorageCopy, "", "each VM create copies"},
		{StorageDM, none, "", "no dm here", ""},
		{StorageReflink, none, "", "ext4", ""},
		{StorageCopy, dm, StorageCopy, "", "copies"},
		{StorageAuto, ovl, StorageOverlay, "", "qcow2 overlays"},
		{StorageAuto, none, StorageCopy, "", "no qemu-img"},
		{StorageOverlay, none, "", "no qemu-img", ""},
		{StorageOverlay, ovl, StorageOverlay, "", "config"},
	}
	for _, tc := range tests {
		got, note, err := ChooseStorage(tc.want, tc.p)
		if tc.errText != "" {
			if err == nil || !strings.Contains(err.Error(), tc.errText) {
				t.Errorf("ChooseStorage(%s, %+v) error %v, want %q", tc.want, tc.p, err, tc.errText)
			}
			continue
		}
		if err != nil || got != tc.got || !strings.Contains(note, tc.note) {
			t.Errorf("ChooseStorage(%s, %+v) = %s, %q, %v", tc.want, tc.p, got, note, err)
		}
	}
	if _, err := ParseStorage("zfs"); err == nil {
		t.Error("ParseStorage accepted zfs")
	}
}

// TestMakeRootDiskCopyKeepsHoles: a copy has the image's bytes and its
// holes (allocated blocks track data, not size).
func TestMakeRootDiskCopyKeepsHoles(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "img")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("banger"), 1000)
	if _, err := f.WriteAt(data, 32<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	dst := filepath.Join(dir, "root")
	if err := MakeRootDisk(StorageCopy, src, dst); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(dst)
	if !bytes.Equal(a, b) {
		t.Fatal("copy differs from the image")
	}
	if used := diskUsage(t, dst); used > 4<<20 {
		t.Errorf("a 64 MiB image with 6 KB of data copied into %d bytes of blocks", used)
	}
	ok, fs := ProbeReflink(dir)
	err = MakeRootDisk(StorageReflink, src, filepath.Join(dir, "refl"))
	if ok != (err == nil) {
		t.Errorf("reflink probe says %v on %s, but a reflink root disk gave %v", ok, fs, err)
	}
	if !ok {
		if _, serr := os.Stat(filepath.Join(dir, "refl")); !os.IsNotExist(serr) {
			t.Error("a failed reflink left a file")
		}
	}
}

func diskUsage(t *testing.T, p string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}
