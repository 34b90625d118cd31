package e2e

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// tarEntry is one entry of a test layer.
type tarEntry struct {
	name, body, link string
	typ              byte
	mode             int64
	uid, gid         int
}

func layerOf(t *testing.T, entries ...tarEntry) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Uid: e.uid, Gid: e.gid, Linkname: e.link,
			Size: int64(len(e.body)), ModTime: time.Unix(1700000000, 0), Format: tar.FormatPAX}
		if e.typ == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			if _, err := io.WriteString(tw, e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// busyboxLayer is a bootable base: the host's static busybox and the
// applets the test uses.
func busyboxLayer(t *testing.T) v1.Layer {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Skipf("no static busybox on the host: %v", err)
	}
	entries := []tarEntry{{name: "bin/", typ: tar.TypeDir, mode: 0o755}, {name: "bin/busybox", body: string(bb), mode: 0o755}}
	for _, a := range []string{"sh", "ls", "stat", "cat", "readlink", "test", "echo"} {
		entries = append(entries, tarEntry{name: "bin/" + a, typ: tar.TypeSymlink, link: "busybox", mode: 0o777})
	}
	return layerOf(t, entries...)
}

func pushImage(t *testing.T, ref string, layers ...v1.Layer) {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf.OS, cf.Architecture = "linux", "amd64"
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img); err != nil {
		t.Fatal(err)
	}
}

// TestImagePull pulls a multi-layer image from a registry the test runs
// on loopback and boots it: ownership, modes and links are exactly as the
// layers say, whiteouts and opaque directories applied. A hostile layer is
// refused and creates no image.
func TestImagePull(t *testing.T) {
	t.Parallel()
	defer group(t)()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")

	base := busyboxLayer(t)
	lower := layerOf(t,
		tarEntry{name: "etc/", typ: tar.TypeDir, mode: 0o755},
		tarEntry{name: "etc/gone", body: "whited out\n", mode: 0o644},
		tarEntry{name: "opq/", typ: tar.TypeDir, mode: 0o755},
		tarEntry{name: "opq/old", body: "hidden by the opaque dir\n", mode: 0o644},
	)
	upper := layerOf(t,
		tarEntry{name: "etc/.wh.gone", mode: 0o644},
		tarEntry{name: "opq/.wh..wh..opq", mode: 0o644},
		tarEntry{name: "opq/new", body: "upper\n", mode: 0o644},
		tarEntry{name: "usr/", typ: tar.TypeDir, mode: 0o755},
		tarEntry{name: "usr/suid", body: "#!/bin/sh\n", mode: 0o4755},
		tarEntry{name: "home/", typ: tar.TypeDir, mode: 0o755},
		tarEntry{name: "home/dev/", typ: tar.TypeDir, mode: 0o750, uid: 1000, gid: 1000},
		tarEntry{name: "home/dev/notes", body: "mine\n", mode: 0o600, uid: 1000, gid: 1000},
		tarEntry{name: "home/dev/hard", typ: tar.TypeLink, link: "home/dev/notes"},
		tarEntry{name: "home/dev/rel", typ: tar.TypeSymlink, link: "../dev/notes", mode: 0o777},
	)
	pushImage(t, host+"/e2e/layered:v1", base, lower, upper)

	out := h.must(t, "image", "pull", host+"/e2e/layered:v1", "--name", "layered")
	if out != "layered\n" {
		t.Fatalf("image pull printed %q", out)
	}
	defer h.run("image", "delete", "layered")
	script := `stat -c '%n %a %u:%g %h' /usr/suid /home/dev /home/dev/notes /home/dev/hard
readlink /home/dev/rel; cat /home/dev/rel
test -e /etc/gone && echo gone-still-there
ls /opq`
	got := h.must(t, "vm", "run", "--rm", "--image", "layered", "--", "sh", "-c", script)
	want := `/usr/suid 4755 0:0 1
/home/dev 750 1000:1000 2
/home/dev/notes 600 1000:1000 2
/home/dev/hard 600 1000:1000 2
../dev/notes
mine
new
`
	if got != want {
		t.Errorf("inside the pulled image:\n%s\nwant:\n%s", got, want)
	}
	if show := h.must(t, "image", "show", "layered", "--json"); !strings.Contains(show, `"ref": "`+host+`/e2e/layered:v1"`) {
		t.Errorf("image show lacks the reference: %s", show)
	}

	// A hostile layer: refused, naming the entry; no image appears.
	evil := layerOf(t, tarEntry{name: "../escape", body: "x", mode: 0o644})
	pushImage(t, host+"/e2e/evil:v1", base, evil)
	r := h.run("image", "pull", host+"/e2e/evil:v1", "--name", "evil")
	if r.code == 0 || !strings.Contains(r.stderr, "escape") {
		t.Errorf("hostile pull: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := h.run("image", "show", "evil"); r.code == 0 {
		t.Error("a refused pull left an image")
	}
	// Nothing the daemon cached is left unreferenced beyond the refused
	// pull's own blobs, which prune removes.
	if r := h.run("image", "cache", "prune"); r.code != 0 {
		t.Errorf("cache prune: %s", r.stderr)
	}
}

// TestVMCommit: a VM's root disk becomes an image whose new VMs see what
// was written in it; the committed VM is running again afterwards.
func TestVMCommit(t *testing.T) {
	t.Parallel()
	defer group(t)()
	h.must(t, "vm", "create", "--name", "cmt", "--image", "minimal")
	defer h.run("vm", "delete", "cmt")
	h.must(t, "vm", "exec", "cmt", "--", "sh", "-c", "echo committed > /etc/committed")
	if out := h.must(t, "vm", "commit", "cmt", "--as", "cmt-img"); out != "cmt-img\n" {
		t.Fatalf("vm commit printed %q", out)
	}
	defer h.run("image", "delete", "cmt-img")
	if v := h.vms(t)["cmt"]; v.State != "running" {
		t.Errorf("committed VM is %q, want running again", v.State)
	}
	if show := h.must(t, "image", "show", "cmt-img", "--json"); !strings.Contains(show, `"parent": "minimal"`) {
		t.Errorf("image lineage missing: %s", show)
	}
	if out := h.must(t, "vm", "run", "--rm", "--image", "cmt-img", "--", "cat", "/etc/committed"); out != "committed\n" {
		t.Errorf("new VM from the committed image reads %q", out)
	}
	if r := h.run("image", "delete", "minimal"); r.code == 0 || !strings.Contains(r.stderr, "cmt") {
		t.Errorf("deleting an image in use: exit %d, stderr %q; want a refusal naming the VM", r.code, r.stderr)
	}
}

// TestRegistryRoundTrips: a kernel pushed to a registry and pulled back
// boots a VM, and an image pushed as a banger bundle comes back and boots.
func TestRegistryRoundTrips(t *testing.T) {
	t.Parallel()
	defer group(t)()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")

	if out := h.must(t, "kernel", "push", "default", host+"/e2e/kernel:v1"); !strings.Contains(out, "@sha256:") {
		t.Fatalf("kernel push printed %q", out)
	}
	if out := h.must(t, "kernel", "pull", host+"/e2e/kernel:v1", "--name", "pulled-k"); out != "pulled-k\n" {
		t.Fatalf("kernel pull printed %q", out)
	}
	defer h.run("kernel", "rm", "pulled-k")
	// Same content, same artifact.
	var a, b struct {
		ID string `json:"id"`
	}
	mustJSONInto(t, h.must(t, "kernel", "show", "default", "--json"), &a)
	mustJSONInto(t, h.must(t, "kernel", "show", "pulled-k", "--json"), &b)
	if a.ID == "" || a.ID != b.ID {
		t.Errorf("pulled kernel id %q, pushed %q", b.ID, a.ID)
	}

	h.must(t, "image", "build", "--minimal")
	if out := h.must(t, "image", "push", "minimal", host+"/e2e/bundle:v1"); !strings.Contains(out, "@sha256:") {
		t.Fatalf("image push printed %q", out)
	}
	if out := h.must(t, "image", "pull", host+"/e2e/bundle:v1", "--name", "bundled", "--kernel", "pulled-k"); out != "bundled\n" {
		t.Fatalf("bundle pull printed %q", out)
	}
	defer h.run("image", "delete", "bundled")
	if out := h.must(t, "vm", "run", "--rm", "--image", "bundled", "--", "sh", "-c", "echo bundle-ok; uname -r"); !strings.HasPrefix(out, "bundle-ok\n") {
		t.Errorf("VM from the pulled bundle and kernel printed %q", out)
	}
	// A kernel reference that is a container image: refused, naming the type.
	base := busyboxLayer(t)
	pushImage(t, host+"/e2e/notakernel:v1", base)
	if r := h.run("kernel", "pull", host+"/e2e/notakernel:v1", "--name", "nk"); r.code == 0 || !strings.Contains(r.stderr, "application/vnd.banger.kernel.config.v1+json") {
		t.Errorf("pulling a container image as a kernel: exit %d, stderr %q", r.code, r.stderr)
	}
}

func mustJSONInto(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("decode %q: %v", s, err)
	}
}
