package image

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestOverlayArgs(t *testing.T) {
	got := OverlayArgs("/s/images/abc/rootfs.ext4", "/s/vms/x/.root.qcow2.tmp", 1<<30)
	want := []string{"create", "-q", "-f", "qcow2", "-F", "raw", "-b", "/s/images/abc/rootfs.ext4", "/s/vms/x/.root.qcow2.tmp", "1073741824"}
	if !slices.Equal(got, want) {
		t.Errorf("OverlayArgs = %q\nwant %q", got, want)
	}
}

// TestOverlayRoundTrip: an overlay reads as its base, takes writes without
// touching the base, and flattens to base plus the writes.
func TestOverlayRoundTrip(t *testing.T) {
	if ok, why := ProbeOverlay(); !ok {
		t.Skip(why)
	}
	if _, err := exec.LookPath("qemu-io"); err != nil {
		t.Skip("qemu-io is not installed")
	}
	dir := t.TempDir()
	base := filepath.Join(dir, "base.img")
	data := bytes.Repeat([]byte("base"), 1<<18) // 1 MiB
	if err := os.WriteFile(base, data, 0o644); err != nil {
		t.Fatal(err)
	}
	ov := filepath.Join(dir, "root.qcow2")
	ctx := context.Background()
	if err := MakeOverlay(ctx, base, ov); err != nil {
		t.Fatal(err)
	}
	if err := MakeOverlay(ctx, "relative.img", filepath.Join(dir, "x.qcow2")); err == nil {
		t.Error("an overlay over a relative path was made")
	}
	if st, err := os.Stat(ov); err != nil || st.Mode().Perm() != 0o600 || st.Size() > 1<<20 {
		t.Fatalf("overlay: %v, %v", st, err)
	}
	if size, err := OverlaySize(ov); err != nil || size != int64(len(data)) {
		t.Errorf("OverlaySize = %d, %v; want the base's %d", size, err, len(data))
	}
	if _, err := OverlaySize(base); err == nil {
		t.Error("a raw image read as a qcow2 overlay")
	}
	// Write 4 KiB of 0x5a at 64 KiB through the overlay (QEMU's own I/O tool).
	if out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 65536 4096", ov).CombinedOutput(); err != nil {
		t.Fatalf("qemu-io: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(base); !bytes.Equal(b, data) {
		t.Fatal("a write through the overlay reached the base")
	}
	flat := filepath.Join(dir, "flat.img")
	if err := FlattenOverlay(ctx, ov, flat); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(flat)
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(data)
	copy(want[65536:], bytes.Repeat([]byte{0x5a}, 4096))
	if !bytes.Equal(got, want) {
		t.Error("the flattened disk is not the base with the write")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
	if err := FlattenOverlay(ctx, filepath.Join(dir, "missing.qcow2"), filepath.Join(dir, "out.img")); err == nil || !strings.Contains(err.Error(), "flatten overlay") {
		t.Errorf("flatten of a missing overlay: %v", err)
	}
}

func TestParseQCOW2Size(t *testing.T) {
	h := make([]byte, 32)
	copy(h, "QFI\xfb")
	h[31] = 0x40 // 64 bytes
	if n, err := parseQCOW2Size(h); err != nil || n != 64 {
		t.Errorf("size = %d, %v", n, err)
	}
	h[24] = 0xff // past int64
	if _, err := parseQCOW2Size(h); err == nil {
		t.Error("an out-of-range size was accepted")
	}
	if _, err := parseQCOW2Size([]byte("QFI")); err == nil {
		t.Error("a short header was accepted")
	}
}
