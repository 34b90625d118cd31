package vm

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/execx"
	"banger/internal/image"
	"banger/internal/paths"
	"banger/internal/store"
)

func needImageTools(t *testing.T) string {
	t.Helper()
	var debugfs string
	for _, name := range []string{"mkfs.ext4", "debugfs"} {
		p, err := execx.LookPath(name)
		if err != nil {
			t.Skipf("%s not installed", name)
		}
		debugfs = p
	}
	return debugfs
}

// rootfsTar writes a rootfs tarball whose /root holds a .bashrc.
func rootfsTar(t *testing.T) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "root/", Typeflag: tar.TypeDir, Mode: 0o700},
		{Name: "root/.bashrc", Typeflag: tar.TypeReg, Mode: 0o644, Size: 9},
	} {
		h.ModTime = time.Unix(1700000000, 0)
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tw.Write([]byte("PS1='# '\n")); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "rootfs.tar")
	if err := os.WriteFile(p, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// makeVM records a VM of image id and makes its disks, collecting progress.
func makeVM(t *testing.T, svc *Service, name, imageName, id string) (string, []string) {
	t.Helper()
	var said []string
	v := store.VM{ID: name, Name: name, ImageName: imageName, ImageID: id, KernelName: "k", KernelID: "x",
		VCPU: 1, MemoryMiB: 512, DiskSize: 32 << 20, CreatedAt: time.Now()}
	if err := svc.makeDisks(context.Background(), &v, func(s string) { said = append(said, s) }); err != nil {
		t.Fatalf("makeDisks: %v", err)
	}
	return filepath.Join(svc.layout.VMDir(v.ID), paths.WorkDisk), said
}

func catOnDisk(t *testing.T, debugfs, disk, p string) string {
	t.Helper()
	out, err := exec.Command(debugfs, "-R", "cat "+p, disk).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", p, err)
	}
	return string(out)
}

func TestWorkDiskStartsFromTheImageSeed(t *testing.T) {
	debugfs := needImageTools(t)
	svc, _, l := newTestService(t)
	ctx := context.Background()
	im, err := svc.ImportImage(ctx, api.ImportImageRequest{Name: "seeded", Path: rootfsTar(t)}, nil)
	if err != nil {
		t.Fatalf("ImportImage: %v", err)
	}
	seed := filepath.Join(l.ImagesDir, im.ID, image.WorkSeedFile)
	if _, err := os.Stat(seed); err != nil {
		t.Fatalf("import stored no work seed: %v", err)
	}

	disk, said := makeVM(t, svc, "one", "seeded", im.ID)
	if got := catOnDisk(t, debugfs, disk, "/.bashrc"); got != "PS1='# '\n" {
		t.Errorf("work disk .bashrc = %q", got)
	}
	if strings.Contains(strings.Join(said, "\n"), "capturing") {
		t.Errorf("captured again although the import stored a seed: %q", said)
	}

	// An image stored before seeds existed gets one on first use.
	if err := os.Remove(seed); err != nil {
		t.Fatal(err)
	}
	disk, said = makeVM(t, svc, "two", "seeded", im.ID)
	if _, err := os.Stat(seed); err != nil {
		t.Fatalf("no seed captured on first use: %v (said %q)", err, said)
	}
	if got := catOnDisk(t, debugfs, disk, "/.bashrc"); got != "PS1='# '\n" {
		t.Errorf("work disk .bashrc = %q", got)
	}
}

func TestUnreadableImageGetsAnEmptyWorkDiskOnce(t *testing.T) {
	debugfs := needImageTools(t)
	svc, _, l := newTestService(t)
	// newTestService's image "abc" is not an ext4 at all.
	disk, said := makeVM(t, svc, "one", "img", "abc")
	marker := filepath.Join(l.ImagesDir, "abc", noSeedFile)
	why, err := os.ReadFile(marker)
	if err != nil || !strings.Contains(string(why), "unreadable") {
		t.Fatalf("marker %q (%v); said %q", why, err, said)
	}
	if out, err := exec.Command(debugfs, "-R", "ls -p /", disk).Output(); err != nil || strings.Count("\n"+string(out), "\n/") != 3 {
		t.Errorf("work disk root: %q (%v), want only ., .. and lost+found", out, err)
	}
	_, said = makeVM(t, svc, "two", "img", "abc")
	if strings.Contains(strings.Join(said, "\n"), "capturing") {
		t.Errorf("tried to capture again: %q", said)
	}
}
