package e2e

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// vsockModules are the modules the guest needs for the vsock loopback, in
// load order (each after its dependencies). The Debian kernel builds them
// all as modules; banger's initramfs loads only the virtio transport.
var vsockModules = []string{"vsock.ko", "vmw_vsock_virtio_transport_common.ko", "vsock_loopback.ko"}

// TestGuestVsock runs the guest agent's vsock listener end to end, which
// the Firecracker fakes cannot (QEMU here has no vhost-vsock, so a guest
// under them gets virtio-serial): in a QEMU guest with the Debian kernel
// and the minimal image (the Debian image needs debootstrap and its mirror;
// the kernel, which is what vsock needs, is the same), the in-guest test
// loads vsock_loopback and connects to the agent's real listener through
// CID 1: the handshake, an exec, a second concurrent connection.
func TestGuestVsock(t *testing.T) {
	t.Parallel()
	defer group(t)()
	deb := os.Getenv("BANGER_E2E_KERNEL_DEB")
	if deb == "" {
		t.Skip("needs BANGER_E2E_KERNEL_DEB (a Debian kernel package)")
	}
	dir := t.TempDir()
	extra := extractModules(t, deb, dir, vsockModules)
	var guestPaths []string
	for _, m := range vsockModules {
		guestPaths = append(guestPaths, "/root/bin/"+m)
	}
	out := guestGoTestWith(t, "internal/agent", extra,
		[]string{"BANGER_TEST_ROOT=1", "BANGER_TEST_VSOCK_MODULES=" + strings.Join(guestPaths, ":")},
		"-test.run", "^TestGuestVsock$")
	if !strings.Contains(out, "--- PASS: TestGuestVsock") {
		t.Fatal("the vsock test did not pass in the guest (skipped?)")
	}
}

// extractModules copies the named module files out of a kernel package
// into dir, keyed by their name for guestGoTestWith.
func extractModules(t *testing.T, deb, dir string, names []string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "dpkg-deb", "--fsys-tarfile", deb)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("read %s: %v", deb, err)
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	got := map[string]string{}
	tr := tar.NewReader(stdout)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read %s: %v", deb, err)
		}
		name := path.Base(hdr.Name)
		if hdr.Typeflag != tar.TypeReg || !want[name] || !strings.Contains(hdr.Name, "/kernel/net/vmw_vsock/") {
			continue
		}
		p := filepath.Join(dir, name)
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.Copy(f, tr)
		f.Close()
		if err != nil {
			t.Fatalf("extract %s: %v", hdr.Name, err)
		}
		got[name] = p
	}
	_, _ = io.Copy(io.Discard, stdout)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("dpkg-deb --fsys-tarfile %s: %v", deb, err)
	}
	for _, n := range names {
		if got[n] == "" {
			t.Fatalf("%s has no %s", deb, n)
		}
	}
	return got
}
