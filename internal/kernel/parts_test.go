package kernel

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"

	"banger/internal/oci"
)

func newRegistryHost(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// treeOf maps every path below dir to its content ("dir", "-> target" or
// the file's bytes), so two artifact directories compare with DeepEqual.
func treeOf(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case d.IsDir():
			out[rel] = "dir"
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			out[rel] = "-> " + target
			return err
		default:
			b, err := os.ReadFile(p)
			out[rel] = string(b)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// pushKernel pushes a as ref and returns the manifest digest.
func pushKernel(t *testing.T, c *oci.Cache, a *Artifact, ref string) string {
	t.Helper()
	config, parts, err := a.OCIParts(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d, err := c.PushArtifact(context.Background(), ref, oci.KernelConfigType, config, parts, nil)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// pullKernel pulls ref into a fresh cache and returns its parts.
func pullKernel(t *testing.T, ref string) Parts {
	t.Helper()
	c := &oci.Cache{Dir: t.TempDir(), Insecure: true}
	pulled, err := c.PullArtifact(context.Background(), ref, oci.KernelConfigType, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := PartsFromOCI(pulled)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// debArtifact imports the synthetic kernel package: vmlinux, modules.cpio
// and a modules tree.
func debArtifact(t *testing.T) *Artifact {
	t.Helper()
	deb, _ := buildKernelDeb(t, t.TempDir(), kernelDebOpts{config: "CONFIG_VIRTIO_MMIO=m\n"})
	a, err := ImportDeb(context.Background(), deb, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestKernelArtifactRoundTrip: push, pull into a fresh cache and import
// into a fresh kernels dir give the same ID, manifest and files, byte for
// byte (manifest.json included); pushing twice gives the same digest.
func TestKernelArtifactRoundTrip(t *testing.T) {
	host := newRegistryHost(t)
	files := func(t *testing.T) *Artifact {
		src := t.TempDir()
		mustWrite(t, filepath.Join(src, "vmlinux"), fakeVmlinux("6.6.6-custom"), 0o644)
		mustWrite(t, filepath.Join(src, "initrd"), []byte("initrd-bytes"), 0o644)
		a, err := ImportFiles(context.Background(), filepath.Join(src, "vmlinux"), filepath.Join(src, "initrd"), t.TempDir(), nil)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	withLink := func(t *testing.T) *Artifact {
		a := debArtifact(t)
		// Not something ImportDeb makes, but a tree may hold links inside.
		if err := os.Symlink("kernel/fs/fat/vfat.ko", filepath.Join(a.ModulesDir, testVersion, "vfat.ko")); err != nil {
			t.Fatal(err)
		}
		return a
	}
	for name, build := range map[string]func(*testing.T) *Artifact{"deb": debArtifact, "files+initrd": files, "symlink": withLink} {
		t.Run(name, func(t *testing.T) {
			a := build(t)
			c := &oci.Cache{Dir: t.TempDir(), Insecure: true}
			ref := host + "/kernels/" + strings.ReplaceAll(name, "+", "-") + ":v1"
			d1 := pushKernel(t, c, a, ref)
			if d2 := pushKernel(t, c, a, ref); d2 != d1 {
				t.Errorf("pushing twice gave %s then %s", d1, d2)
			}

			p := pullKernel(t, ref)
			kdir := t.TempDir()
			var msgs []string
			b, err := ImportParts(context.Background(), kdir, p, func(s string) { msgs = append(msgs, s) })
			if err != nil {
				t.Fatal(err)
			}
			if len(msgs) == 0 {
				t.Error("no progress reported")
			}
			if b.ID != a.ID || !reflect.DeepEqual(b.Manifest, a.Manifest) || b.Dir != filepath.Join(kdir, a.ID) {
				t.Fatalf("imported %+v\nwant %+v", b, a)
			}
			if got, want := treeOf(t, b.Dir), treeOf(t, a.Dir); !reflect.DeepEqual(got, want) {
				for k := range want {
					if got[k] != want[k] {
						t.Errorf("%s differs", k)
					}
				}
				t.Fatalf("imported tree has %d entries, want %d", len(got), len(want))
			}
			l, err := Load(kdir, a.ID)
			if err != nil || (l.ModulesDir == "") != (a.ModulesDir == "") || (l.Initrd == "") != (a.Initrd == "") {
				t.Fatalf("Load = %+v, %v", l, err)
			}
			// The parts came from the cache and stay there untouched.
			if _, err := os.Stat(p.Vmlinux); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestOCIPartsRefusesModifiedArtifact: a local artifact whose files no
// longer hash to its ID is not published.
func TestOCIPartsRefusesModifiedArtifact(t *testing.T) {
	a := debArtifact(t)
	mustWrite(t, a.ModulesCpio, []byte("changed"), 0o644)
	if _, _, err := a.OCIParts(t.TempDir()); err == nil || !strings.Contains(err.Error(), "modified") {
		t.Fatalf("OCIParts = %v", err)
	}
}

// goodParts returns the parts of a real (synthetic) artifact, in files
// outside the kernels dir, for the negative tests to spoil.
func goodParts(t *testing.T) Parts {
	t.Helper()
	a := debArtifact(t)
	dir := t.TempDir()
	config, parts, err := a.OCIParts(dir)
	if err != nil {
		t.Fatal(err)
	}
	var cfg ociConfig
	if err := json.Unmarshal(config, &cfg); err != nil {
		t.Fatal(err)
	}
	p := Parts{Manifest: cfg.Manifest}
	for _, part := range parts {
		switch part.MediaType {
		case oci.KernelVmlinuxType:
			p.Vmlinux = part.Path
		case oci.KernelModulesCpioType:
			p.ModulesCpio = part.Path
		case oci.KernelModulesTreeType:
			p.ModulesTar = part.Path
		}
	}
	return p
}

func gzipTar(t *testing.T, entries ...tarEntry) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "modules.tar.gz")
	mustWrite(t, p, gzipBytes(t, tarBytes(t, entries...)), 0o644)
	return p
}

// TestImportPartsRefusesHostileModules: a modules tree with a name or a
// link leading outside it, or anything but files, directories and links,
// is refused, and nothing is written in the kernels dir or beside it.
func TestImportPartsRefusesHostileModules(t *testing.T) {
	good := goodParts(t)
	ok := tarEntry{name: testVersion + "/modules.builtin", data: []byte("x\n")}
	cases := map[string][]tarEntry{
		"dotdot":            {ok, {name: "../x", data: []byte("evil")}},
		"inner dotdot":      {{name: testVersion + "/../../x", data: []byte("evil")}},
		"absolute":          {{name: "/tmp/x", data: []byte("evil")}},
		"link out":          {{name: "lnk", typ: tar.TypeSymlink, linkname: "../../x"}},
		"link absolute":     {{name: testVersion + "/build", typ: tar.TypeSymlink, linkname: "/usr/src/linux"}},
		"write via link":    {{name: "d/", typ: tar.TypeDir}, {name: "d/l", typ: tar.TypeSymlink, linkname: ".."}, {name: "d/l/x", data: []byte("evil")}},
		"link through link": {{name: "a/b/l", typ: tar.TypeSymlink, linkname: "../.."}, {name: "e", typ: tar.TypeSymlink, linkname: "a/b/l/../.."}},
		"hard link":         {ok, {name: "h", typ: tar.TypeLink, linkname: testVersion + "/modules.builtin"}},
		"device":            {{name: "null", typ: tar.TypeChar}},
		"fifo":              {{name: "fifo", typ: tar.TypeFifo}},
		"duplicate":         {ok, ok},
		"root file":         {{name: ".", data: []byte("x")}},
	}
	for name, entries := range cases {
		t.Run(name, func(t *testing.T) {
			parent := t.TempDir()
			kdir := filepath.Join(parent, "kernels")
			p := good
			p.ModulesTar = gzipTar(t, entries...)
			_, err := ImportParts(context.Background(), kdir, p, nil)
			if err == nil {
				t.Fatal("hostile modules tree accepted")
			}
			t.Log(err)
			if !strings.Contains(err.Error(), "unpack modules") {
				t.Errorf("error %q does not come from the modules check", err)
			}
			assertEmptyDir(t, kdir)
			if ents, _ := os.ReadDir(parent); len(ents) != 1 {
				t.Errorf("written beside the kernels dir: %v", ents)
			}
		})
	}
}

// TestImportPartsChecksContent: parts that do not hash to the manifest's
// ID, or disagree with it otherwise, are refused with nothing stored.
func TestImportPartsChecksContent(t *testing.T) {
	good := goodParts(t)
	otherVm := filepath.Join(t.TempDir(), "vmlinux")
	mustWrite(t, otherVm, fakeVmlinux("6.6.6-other"), 0o644)
	notELF := filepath.Join(t.TempDir(), "vmlinux")
	mustWrite(t, notELF, []byte("not a kernel"), 0o644)
	cases := map[string]func(p *Parts){
		"other id":          func(p *Parts) { p.Manifest.ID = strings.Repeat("a", 64) },
		"bad id":            func(p *Parts) { p.Manifest.ID = "../x" },
		"other vmlinux":     func(p *Parts) { p.Vmlinux = otherVm },
		"vmlinux sum":       func(p *Parts) { p.Manifest.VmlinuxSHA256 = strings.Repeat("0", 64) },
		"not an ELF":        func(p *Parts) { p.Vmlinux = notELF },
		"cpio missing":      func(p *Parts) { p.ModulesCpio = "" },
		"initrd promised":   func(p *Parts) { p.Manifest.HasInitrd = true },
		"initrd unexpected": func(p *Parts) { p.Initrd = good.ModulesCpio },
	}
	for name, spoil := range cases {
		t.Run(name, func(t *testing.T) {
			kdir := t.TempDir()
			p := good
			spoil(&p)
			if _, err := ImportParts(context.Background(), kdir, p, nil); err == nil {
				t.Fatal("accepted")
			}
			assertEmptyDir(t, kdir)
		})
	}
	// The unspoiled parts do import.
	if _, err := ImportParts(context.Background(), t.TempDir(), good, nil); err != nil {
		t.Fatal(err)
	}
}

// TestPartsFromOCIChecksPartList: layers must be what the config lists,
// of known types, each at most once, with a vmlinux.
func TestPartsFromOCIChecksPartList(t *testing.T) {
	vm := oci.Layer{MediaType: oci.KernelVmlinuxType, Digest: "sha256:" + strings.Repeat("1", 64), Size: 10, Path: "/cache/1"}
	cpio := oci.Layer{MediaType: oci.KernelModulesCpioType, Digest: "sha256:" + strings.Repeat("2", 64), Size: 20, Path: "/cache/2"}
	part := func(l oci.Layer) oci.ConfigPart {
		return oci.ConfigPart{MediaType: l.MediaType, SHA256: strings.TrimPrefix(l.Digest, "sha256:"), Size: l.Size}
	}
	art := func(cps []oci.ConfigPart, layers ...oci.Layer) *oci.Artifact {
		config, _ := json.Marshal(ociConfig{Manifest: Manifest{ID: strings.Repeat("f", 64), Version: "6.1"}, Parts: cps})
		return &oci.Artifact{Ref: "r", ConfigType: oci.KernelConfigType, Config: config, Parts: layers}
	}
	p, err := PartsFromOCI(art([]oci.ConfigPart{part(vm), part(cpio)}, vm, cpio))
	if err != nil || p.Vmlinux != vm.Path || p.ModulesCpio != cpio.Path || p.Manifest.Version != "6.1" {
		t.Fatalf("PartsFromOCI = %+v, %v", p, err)
	}
	odd := oci.Layer{MediaType: "application/octet-stream", Digest: vm.Digest, Size: 10}
	wrongSize := vm
	wrongSize.Size = 11
	image := art([]oci.ConfigPart{part(vm)}, vm)
	image.ConfigType = oci.ImageConfigType
	for name, a := range map[string]*oci.Artifact{
		"missing part": art([]oci.ConfigPart{part(vm)}, vm, cpio),
		"order":        art([]oci.ConfigPart{part(cpio), part(vm)}, vm, cpio),
		"size":         art([]oci.ConfigPart{part(vm)}, wrongSize),
		"unknown type": art([]oci.ConfigPart{part(odd)}, odd),
		"two vmlinux":  art([]oci.ConfigPart{part(vm), part(vm)}, vm, vm),
		"no vmlinux":   art([]oci.ConfigPart{part(cpio)}, cpio),
		"image bundle": image,
		"corrupt json": {Ref: "r", ConfigType: oci.KernelConfigType, Config: []byte("{")},
	} {
		if _, err := PartsFromOCI(a); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestWriteModulesTarDeterministic: the same tree written at different
// times, from different copies, gives the same bytes.
func TestWriteModulesTarDeterministic(t *testing.T) {
	a := debArtifact(t)
	var one, two bytes.Buffer
	if err := writeModulesTar(&one, a.ModulesDir); err != nil {
		t.Fatal(err)
	}
	b := debArtifact(t)
	if err := writeModulesTar(&two, b.ModulesDir); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(one.Bytes(), two.Bytes()) {
		t.Fatal("two imports of one package archive their modules differently")
	}
}
