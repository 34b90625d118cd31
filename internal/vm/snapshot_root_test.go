package vm

// The dm storage path against the real root helper binary and a real
// device-mapper: a VM's root snapshot is made, written, released, made
// again from the same COW file (the write must still be there), copied
// whole for a commit, and deleted. Needs root and dm, so it runs inside a
// banger guest (test/e2e TestGuestDMStorage), with BANGER_TEST_HELPER_BIN
// naming a static banger-helper.

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/installmeta"
	"banger/internal/paths"
	"banger/internal/privop/client"
	"banger/internal/testutil"
)

const dmTestOwner = 4242

// startRealHelper runs banger-helper serving dmTestOwner on a private
// socket and state dir, until the test ends.
func startRealHelper(t *testing.T, bin string) *client.Client {
	t.Helper()
	dir, err := os.MkdirTemp("", "vh")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	meta := filepath.Join(dir, "install.toml")
	if err := installmeta.Write(meta, installmeta.Meta{OwnerUser: "dev", OwnerUID: dmTestOwner, OwnerGID: dmTestOwner, OwnerHome: dir, Version: "test", InstalledAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "run", "helper.sock")
	var logs bytes.Buffer
	cmd := exec.Command(bin, "--socket", sock, "--state-dir", filepath.Join(dir, "state"), "--install-meta", meta)
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Errorf("helper exit: %v", err)
		}
		t.Logf("helper log:\n%s", logs.String())
	})
	c := client.New(sock)
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		p, err := c.Ping(ctx)
		cancel()
		if err == nil {
			if !p.Snapshots {
				t.Fatalf("the helper cannot make snapshots: %s", p.SnapshotsOff)
			}
			return c
		}
		if i == 100 {
			t.Fatalf("helper did not answer: %v\n%s", err, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// bangerDMDevices lists the dm devices with banger's prefix.
func bangerDMDevices(t *testing.T) []string {
	t.Helper()
	names, _ := filepath.Glob("/sys/block/dm-*/dm/name")
	var out []string
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			continue
		}
		if name := strings.TrimSpace(string(b)); strings.HasPrefix(name, "banger-") {
			out = append(out, name)
		}
	}
	return out
}

func TestDMStorageWithRealHelper(t *testing.T) {
	testutil.RequireRoot(t)
	bin := os.Getenv("BANGER_TEST_HELPER_BIN")
	if bin == "" || os.Getenv("BANGER_TEST_DM") != "1" {
		t.Skip("needs device-mapper and a banger-helper binary: runs in a guest (make e2e-dm)")
	}
	c := startRealHelper(t, bin)
	svc, _, v := newDMService(t)
	svc.opts.Snapshots = c
	ctx := context.Background()

	// A 16 MiB base with a pattern, owned (like the COW file) by the owner.
	pattern := bytes.Repeat([]byte("base"), 1024)
	base := svc.imagePath(v.ImageID)
	if err := os.WriteFile(base, bytes.Repeat(pattern, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	cowPath := filepath.Join(svc.layout.VMDir(v.ID), paths.RootCOW)
	if err := os.Remove(cowPath); err != nil {
		t.Fatal(err)
	}
	if err := svc.makeRootCOW(v); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{base, cowPath} {
		if err := os.Chown(p, dmTestOwner, dmTestOwner); err != nil {
			t.Fatal(err)
		}
	}

	d, err := svc.rootDrive(ctx, v)
	if err != nil {
		t.Fatal(err)
	}
	if got := bangerDMDevices(t); len(got) != 1 || got[0] != "banger-"+v.ID {
		t.Errorf("dm devices = %v", got)
	}
	buf := make([]byte, 4096)
	if _, err := d.File.ReadAt(buf, 1<<20); err != nil || !bytes.Equal(buf, pattern) {
		t.Fatalf("the snapshot does not read as its base: %v", err)
	}
	mine := bytes.Repeat([]byte{0x5a}, 4096)
	if _, err := d.File.WriteAt(mine, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := d.File.Sync(); err != nil {
		t.Fatal(err)
	}
	d.File.Close()
	if err := svc.releaseRoot(ctx, v); err != nil {
		t.Fatal(err)
	}
	if got := bangerDMDevices(t); len(got) != 0 {
		t.Errorf("dm devices after release = %v", got)
	}

	// Booted again: the same COW file brings the write back.
	d, err = svc.rootDrive(ctx, v)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.File.ReadAt(buf, 1<<20); err != nil || !bytes.Equal(buf, mine) {
		t.Errorf("the write did not survive a stop and start: %v", err)
	}
	d.File.Close()
	if err := svc.releaseRoot(ctx, v); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(base); err != nil || !bytes.Equal(b[1<<20:1<<20+4096], pattern) {
		t.Errorf("the base image changed: %v", err)
	}

	// A commit reads the whole disk, write included.
	out := filepath.Join(t.TempDir(), "commit.ext4")
	if err := svc.copyRoot(ctx, v, out); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(out); err != nil || len(b) != 16<<20 || !bytes.Equal(b[1<<20:1<<20+4096], mine) || !bytes.Equal(b[:4096], pattern) {
		t.Errorf("the committed copy is not base plus the write: %v", err)
	}
	if err := svc.Delete(ctx, v.Name); err != nil {
		t.Fatal(err)
	}
	if got := bangerDMDevices(t); len(got) != 0 {
		t.Errorf("dm devices after delete = %v", got)
	}
}
