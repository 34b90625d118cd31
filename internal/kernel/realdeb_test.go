package kernel

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cavaliergopher/cpio"
)

// TestImportRealDeb imports the real Debian kernel package the e2e tier
// boots its guests with (BANGER_E2E_KERNEL_DEB, which make e2e sets).
func TestImportRealDeb(t *testing.T) {
	deb := os.Getenv("BANGER_E2E_KERNEL_DEB")
	if deb == "" {
		t.Skip("BANGER_E2E_KERNEL_DEB not set (make e2e sets it)")
	}
	dir := t.TempDir()
	start := time.Now()
	a, err := ImportDeb(context.Background(), deb, dir, func(s string) { t.Log("progress:", s) })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ImportDeb took %v", time.Since(start))
	t.Logf("id=%s version=%s boot modules=%v", a.ID, a.Version, a.Manifest.BootModules)

	vm, err := os.ReadFile(a.Vmlinux)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkVmlinuxELF(vm); err != nil {
		t.Fatal(err)
	}
	if a.ModulesCpio == "" || a.ModulesDir == "" {
		t.Fatalf("missing modules: %+v", a)
	}
	data, err := os.ReadFile(a.ModulesCpio)
	if err != nil {
		t.Fatal(err)
	}
	r := cpio.NewReader(bytes.NewReader(data))
	var list string
	for {
		h, err := r.Next()
		if err != nil {
			break
		}
		if h.Name == bangerListPath {
			var b bytes.Buffer
			if _, err := b.ReadFrom(r); err != nil {
				t.Fatal(err)
			}
			list = b.String()
		}
	}
	t.Logf("banger.list:\n%s", list)
	for _, want := range []string{"virtio_mmio", "virtio_blk", "virtio_net", "vmw_vsock_virtio_transport"} {
		if !strings.Contains(strings.ReplaceAll(list, "-", "_"), want) {
			t.Errorf("banger.list lacks %s", want)
		}
	}
	if _, err := os.Stat(filepath.Join(a.ModulesDir, a.Version, "modules.builtin")); err != nil {
		t.Error(err)
	}

	// Re-import is idempotent and gives the same artifact.
	start = time.Now()
	b, err := ImportDeb(context.Background(), deb, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("second ImportDeb took %v", time.Since(start))
	if b.ID != a.ID {
		t.Fatalf("re-import id %s != %s", b.ID, a.ID)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("kernelsDir has %d entries, want 1", len(entries))
	}
}
