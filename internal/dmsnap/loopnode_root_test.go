package dmsnap_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/dmsnap"
)

// TestLoopWithoutDevNodeRoot: where /dev has no node for the loop device
// (a container's /dev is no devtmpfs), AttachLoop binds it through a node
// made in NodeDir, removed once open; without NodeDir it fails.
func TestLoopWithoutDevNodeRoot(t *testing.T) {
	requireRealKernel(t, false)
	root := t.TempDir()
	emptyDev := filepath.Join(root, "dev")
	nodes := filepath.Join(root, "nodes")
	for _, d := range []string{emptyDev, nodes} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/dev/loop-control", filepath.Join(emptyDev, "loop-control")); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(root, "disk.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	b := &dmsnap.IoctlBackend{DevDir: emptyDev, SysDir: "/sys"}
	if _, h, err := b.AttachLoop(context.Background(), f, false); err == nil {
		h.Close()
		t.Fatal("attached without a node for the loop and no NodeDir")
	}
	b.NodeDir = nodes
	l, h, err := b.AttachLoop(context.Background(), f, false)
	if err != nil {
		t.Fatalf("AttachLoop through NodeDir: %v", err)
	}
	defer h.Close()
	backing, _ := os.ReadFile(filepath.Join("/sys/block", filepath.Base(l.Path), "loop", "backing_file"))
	if strings.TrimSpace(string(backing)) != img {
		t.Errorf("%s is bound to %q, want %s", l.Path, backing, img)
	}
	if ents, _ := os.ReadDir(nodes); len(ents) != 0 {
		t.Errorf("passing nodes left in NodeDir: %v", ents)
	}
}
