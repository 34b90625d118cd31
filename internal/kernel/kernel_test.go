package kernel

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cavaliergopher/cpio"
)

func TestDetectCompression(t *testing.T) {
	tests := []struct {
		in   []byte
		want compression
	}{
		{[]byte("\x7fELF\x02\x01"), compELF},
		{[]byte{0x1f, 0x8b, 0x08, 0}, compGzip},
		{[]byte{0xfd, '7', 'z', 'X', 'Z', 0x00, 0, 1}, compXZ},
		{[]byte{0x28, 0xb5, 0x2f, 0xfd, 0x04}, compZstd},
		{[]byte("BZh91AY&SY"), compBzip2},
		{[]byte{0x5d, 0x00, 0x00, 0x80, 0x00}, compLZMA},
		{[]byte{0x02, 0x21, 0x4c, 0x18, 0x10, 0, 0, 0}, compLZ4Legacy},
		{[]byte{0x04, 0x22, 0x4d, 0x18}, compUnknown}, // LZ4 frame format, not legacy
		{[]byte{0x89, 'L', 'Z', 'O', 0}, compLZO},
		{[]byte{0xfd, '7', 'z'}, compUnknown},
		{nil, compUnknown},
	}
	for _, tt := range tests {
		if got := detectCompression(tt.in); got != tt.want {
			t.Errorf("detectCompression(% x) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestParseSetupHeader(t *testing.T) {
	good := makeBzImage([]byte("payload"), 0x1b)
	zero := makeBzImage([]byte("payload"), 0)
	old := append([]byte(nil), good...)
	binary.LittleEndian.PutUint16(old[0x206:], 0x0206)
	noMagic := append([]byte(nil), good...)
	copy(noMagic[0x202:], "XXXX")
	noFlag := append([]byte(nil), good...)
	noFlag[0x1fe] = 0
	badLen := append([]byte(nil), good...)
	binary.LittleEndian.PutUint32(badLen[0x24c:], 1<<30)

	tests := []struct {
		name      string
		in        []byte
		wantSects int
		wantErr   string
		payload   string
	}{
		{"normal", good, 0x1b, "", "payload"},
		{"zero sects means 4", zero, 4, "", "payload"},
		{"old protocol", old, 0, "too old", ""},
		{"no HdrS", noMagic, 0, "not a bzImage", ""},
		{"no boot flag", noFlag, 0, "not a bzImage", ""},
		{"short", good[:0x240], 0, "not a bzImage", ""},
		{"payload out of range", badLen, 0x1b, "outside", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := parseSetupHeader(tt.in)
			if err == nil {
				var p []byte
				p, err = h.payload(tt.in)
				if err == nil && string(p) != tt.payload {
					t.Errorf("payload %q, want %q", p, tt.payload)
				}
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.SetupSects != tt.wantSects {
				t.Errorf("SetupSects = %d, want %d", h.SetupSects, tt.wantSects)
			}
		})
	}
}

func TestExtractVmlinux(t *testing.T) {
	vm := fakeVmlinux("6.1.0-1-test")
	// A payload larger than one 8 MiB legacy block exercises block chaining.
	big := fakeELF(elf.ET_EXEC, elf.EM_X86_64, nil, 9<<20)
	tests := []struct {
		name    string
		img     []byte
		want    []byte
		wantErr string
	}{
		{"elf as is", vm, vm, ""},
		{"lz4 legacy", makeBzImage(sizeTrailer(lz4Legacy(t, vm), len(vm)), 0x1b), vm, ""},
		{"lz4 legacy no trailer", makeBzImage(lz4Legacy(t, vm), 0x1b), vm, ""},
		{"lz4 legacy two blocks", makeBzImage(sizeTrailer(lz4Legacy(t, big), len(big)), 0), big, ""},
		{"gzip", makeBzImage(gzipBytes(t, vm), 0x1b), vm, ""},
		{"gzip with trailer", makeBzImage(sizeTrailer(gzipBytes(t, vm), len(vm)), 0x1b), vm, ""},
		{"xz", makeBzImage(sizeTrailer(xzBytes(t, vm), len(vm)), 0x1b), vm, ""},
		{"xz x86 bcj", makeBzImage(sizeTrailer(xzBCJBytes(t, vm), len(vm)), 0x1b), vm, ""},
		{"zstd", makeBzImage(sizeTrailer(zstdBytes(t, vm), len(vm)), 0x1b), vm, ""},
		{"lzma", makeBzImage(sizeTrailer(lzmaBytes(t, vm), len(vm)), 0x1b), vm, ""},
		{"not elf inside", makeBzImage(sizeTrailer(gzipBytes(t, []byte("hello world")), 11), 0x1b), nil, "not an ELF"},
		{"arm64 elf", fakeELF(elf.ET_EXEC, elf.EM_AARCH64, nil, 16), nil, "EM_X86_64"},
		{"relocatable elf", fakeModule("name=x"), nil, "ET_EXEC"},
		{"truncated lz4", makeBzImage(lz4Legacy(t, vm)[:40], 0x1b), nil, "exceeds remaining"},
		{"unknown payload", makeBzImage([]byte("garbage payload"), 0x1b), nil, "unrecognised"},
		{"lzo payload", makeBzImage([]byte{0x89, 'L', 'Z', 'O', 0, 1, 2}, 0x1b), nil, "lzo"},
		{"random bytes", bytes.Repeat([]byte{0xab}, 4096), nil, "not a bzImage"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ExtractVmlinux(context.Background(), tt.img)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Fatalf("got %d bytes, want %d", len(got), len(tt.want))
			}
		})
	}
}

func TestX86BCJRoundTrip(t *testing.T) {
	var code []byte
	for i := 0; i < 5000; i++ {
		code = append(code, 0x55, 0xe8, byte(i), byte(i>>8), 0x00, 0x00, 0x90, 0xe9, byte(-i), 0xff, 0xff, 0xff, 0xe8, 0xe8, 1, 2)
	}
	enc := append([]byte(nil), code...)
	x86BCJ(enc, 0, true)
	if bytes.Equal(enc, code) {
		t.Fatal("encoder changed nothing")
	}
	x86BCJ(enc, 0, false)
	if !bytes.Equal(enc, code) {
		t.Fatal("decode(encode(x)) != x")
	}
}

func TestKernelVersionFromImage(t *testing.T) {
	tests := []struct{ in, want string }{
		{"xx Linux version 6.1.0-56-cloud-amd64 (debian-kernel@lists) #1", "6.1.0-56-cloud-amd64"},
		{"Linux version %s (%s)\x00 Linux version 5.10.0+ (me@x) #2", "5.10.0+"},
		{"no banner here", ""},
		{"Linux version 6.1", ""},
	}
	for _, tt := range tests {
		if got := kernelVersionFromImage([]byte(tt.in)); got != tt.want {
			t.Errorf("kernelVersionFromImage(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestNormalizeModuleName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"virtio-rng", "virtio_rng"},
		{"virtio_rng", "virtio_rng"},
		{"kernel/drivers/char/hw_random/virtio-rng.ko", "virtio_rng"},
		{"kernel/net/vmw_vsock/vsock.ko.xz", "vsock"},
		{"x/crc32c-intel.ko.zst", "crc32c_intel"},
		{"ext4.ko.gz", "ext4"},
		{"nls_utf8", "nls_utf8"},
		{"foo.ko.bz2", "foo.ko.bz2"},
	}
	for _, tt := range tests {
		if got := normalizeModuleName(tt.in); got != tt.want {
			t.Errorf("normalizeModuleName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestOrderModules(t *testing.T) {
	tests := []struct {
		name    string
		roots   []string
		deps    map[string][]string
		want    []string
		wantErr string
	}{
		{"single", []string{"a"}, map[string][]string{"a": nil}, []string{"a"}, ""},
		{"chain", []string{"a"}, map[string][]string{"a": {"b"}, "b": {"c"}, "c": nil}, []string{"c", "b", "a"}, ""},
		{"diamond sorted deps", []string{"top"}, map[string][]string{"top": {"z", "m"}, "z": {"base"}, "m": {"base"}, "base": nil}, []string{"base", "m", "z", "top"}, ""},
		{"roots keep order", []string{"y", "x"}, map[string][]string{"x": nil, "y": nil}, []string{"y", "x"}, ""},
		{"shared deps once", []string{"a", "b"}, map[string][]string{"a": {"c"}, "b": {"c"}, "c": nil}, []string{"c", "a", "b"}, ""},
		{"self dep ignored", []string{"a"}, map[string][]string{"a": {"a"}}, []string{"a"}, ""},
		{"root listed as dep", []string{"b", "a"}, map[string][]string{"a": nil, "b": {"a"}}, []string{"a", "b"}, ""},
		{"cycle", []string{"a"}, map[string][]string{"a": {"b"}, "b": {"c"}, "c": {"a"}}, nil, "cycle: a -> b -> c -> a"},
		{"missing dep", []string{"a"}, map[string][]string{"a": {"b"}}, nil, "module b (needed by a) not found"},
		{"missing root", []string{"a"}, map[string][]string{}, nil, "module a not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := orderModules(tt.roots, tt.deps)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			again, _ := orderModules(tt.roots, tt.deps)
			if !reflect.DeepEqual(got, again) {
				t.Fatalf("not deterministic: %v vs %v", got, again)
			}
		})
	}
}

func TestParseModinfo(t *testing.T) {
	mi, err := parseModinfo(fakeModule("license=GPL", "softdep=pre: crc32c-generic post: foo", "depends=jbd2,mbcache,crc16", "name=ext4", "vermagic=6.1.0 SMP mod_unload"))
	if err != nil {
		t.Fatal(err)
	}
	want := modinfo{Name: "ext4", Depends: []string{"jbd2", "mbcache", "crc16"}, SoftdepPre: []string{"crc32c_generic"}}
	if !reflect.DeepEqual(mi, want) {
		t.Fatalf("got %+v, want %+v", mi, want)
	}
	mi, err = parseModinfo(fakeModule("depends=", "name=virtio_ring"))
	if err != nil || len(mi.Depends) != 0 {
		t.Fatalf("empty depends: %+v %v", mi, err)
	}
	if _, err := parseModinfo(fakeELF(elf.ET_REL, elf.EM_X86_64, nil, 8)); err == nil || !strings.Contains(err.Error(), ".modinfo") {
		t.Fatalf("no modinfo: err = %v", err)
	}
	if _, err := parseModinfo([]byte("not elf")); err == nil {
		t.Fatal("parsed garbage")
	}
}

func TestParseHelpers(t *testing.T) {
	cfg := parseKernelConfig([]byte("# comment\nCONFIG_VIRTIO_MMIO=y\n# CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES is not set\nCONFIG_VIRTIO_BLK=m\nCONFIG_LOCALVERSION=\"\"\n"))
	if !reflect.DeepEqual(cfg, map[string]string{"VIRTIO_MMIO": "y", "VIRTIO_BLK": "m", "LOCALVERSION": `""`}) {
		t.Errorf("parseKernelConfig = %v", cfg)
	}
	b := parseBuiltin([]byte("kernel/fs/ext4/ext4.ko\n\nkernel/drivers/char/hw_random/rng-core.ko\n"))
	if !b["ext4"] || !b["rng_core"] || len(b) != 2 {
		t.Errorf("parseBuiltin = %v", b)
	}
	c := parseControl([]byte("Package: linux-image-6.1.0-56-cloud-amd64\nVersion: 6.1.192-2\nDescription: x\n more\n\nPackage: other\n"))
	if c["Package"] != "linux-image-6.1.0-56-cloud-amd64" || c["Version"] != "6.1.192-2" {
		t.Errorf("parseControl = %v", c)
	}
}

func TestSafeTarPath(t *testing.T) {
	tests := []struct {
		in, want string
		bad      bool
	}{
		{"./lib/modules/x/a.ko", "lib/modules/x/a.ko", false},
		{"lib/modules/", "lib/modules", false},
		{"./", "", false},
		{"/etc/passwd", "", true},
		{"./../../etc/passwd", "", true},
		{"lib/modules/../../x", "", true},
		{"lib/modules/..", "", true},
		{"lib/..foo/x", "lib/..foo/x", false},
	}
	for _, tt := range tests {
		got, err := safeTarPath(tt.in)
		if (err != nil) != tt.bad || got != tt.want {
			t.Errorf("safeTarPath(%q) = %q, %v", tt.in, got, err)
		}
	}
}

func readCpio(t *testing.T, data []byte) (names []string, files map[string][]byte, modes map[string]cpio.FileMode) {
	t.Helper()
	files = map[string][]byte{}
	modes = map[string]cpio.FileMode{}
	r := cpio.NewReader(bytes.NewReader(data))
	for {
		h, err := r.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		modes[h.Name] = h.Mode
		if h.Uid != 0 || h.Guid != 0 {
			t.Errorf("%s: uid/gid %d/%d", h.Name, h.Uid, h.Guid)
		}
		b, _ := io.ReadAll(r)
		files[h.Name] = b
	}
}

func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("left behind in kernelsDir: %s", e.Name())
	}
}

func TestImportDeb(t *testing.T) {
	for _, comp := range []string{"", ".gz", ".xz", ".zst"} {
		t.Run("data.tar"+comp, func(t *testing.T) {
			src := t.TempDir()
			deb, vm := buildKernelDeb(t, src, kernelDebOpts{dataComp: comp, config: "CONFIG_VIRTIO_MMIO=m\n"})
			kdir := filepath.Join(t.TempDir(), "kernels")
			var msgs []string
			a, err := ImportDeb(context.Background(), deb, kdir, func(s string) { msgs = append(msgs, s) })
			if err != nil {
				t.Fatal(err)
			}
			if len(msgs) == 0 {
				t.Error("no progress reported")
			}
			got, _ := os.ReadFile(a.Vmlinux)
			if !bytes.Equal(got, vm) {
				t.Fatal("vmlinux differs from the ELF inside the bzImage")
			}
			wantOrder := []string{"virtio_ring", "virtio", "virtio_mmio", "virtio_blk", "failover", "net_failover", "virtio_net", "virtio_console", "vsock", "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport"}
			m := a.Manifest
			if !reflect.DeepEqual(m.BootModules, wantOrder) {
				t.Errorf("boot modules %v, want %v", m.BootModules, wantOrder)
			}
			if m.ID != a.ID || m.Version != testVersion || m.Source != SourceDeb || m.SourceName != "linux-image-"+testVersion || m.HasInitrd || m.PackageVersion != "6.1.999-1" {
				t.Errorf("manifest %+v", m)
			}
			if a.Dir != filepath.Join(kdir, a.ID) || a.Initrd != "" || a.ModulesCpio == "" {
				t.Errorf("artifact %+v", a)
			}
			if _, err := os.Stat(filepath.Join(a.ModulesDir, testVersion, "kernel/fs/fat/vfat.ko")); err != nil {
				t.Errorf("full modules tree: %v", err)
			}
			if _, err := os.Lstat(filepath.Join(a.ModulesDir, testVersion, "build")); err == nil {
				t.Error("symlink copied into modules tree")
			}

			data, _ := os.ReadFile(a.ModulesCpio)
			names, files, modes := readCpio(t, data)
			var list []string
			for _, n := range wantOrder {
				for _, tm := range testModules {
					if normalizeModuleName(tm.rel) == n {
						list = append(list, "/lib/modules/"+testVersion+"/"+tm.rel)
					}
				}
			}
			if got := string(files["lib/modules/banger.list"]); got != strings.Join(list, "\n")+"\n" {
				t.Errorf("banger.list:\n%s\nwant:\n%s", got, strings.Join(list, "\n"))
			}
			for _, p := range list {
				n := strings.TrimPrefix(p, "/")
				if modes[n] != cpio.TypeReg|0o644 {
					t.Errorf("%s mode %o", n, modes[n])
				}
				if _, err := parseModinfo(files[n]); err != nil {
					t.Errorf("%s: %v", n, err)
				}
			}
			if modes["lib/modules/"+testVersion+"/kernel/drivers"] != cpio.TypeDir|0o755 {
				t.Error("parent directories missing from cpio")
			}
			for i := 1; i < len(names); i++ {
				if names[i-1] >= names[i] {
					t.Errorf("cpio not sorted: %s before %s", names[i-1], names[i])
				}
			}
			if _, ok := files["lib/modules/"+testVersion+"/kernel/fs/fat/vfat.ko"]; ok {
				t.Error("non-boot module in cpio")
			}

			// Loading returns the same thing; re-import is idempotent.
			l, err := Load(kdir, a.ID)
			if err != nil || !reflect.DeepEqual(l, a) {
				t.Fatalf("Load = %+v, %v", l, err)
			}
			b, err := ImportDeb(context.Background(), deb, kdir, nil)
			if err != nil || b.ID != a.ID || !b.Manifest.Created.Equal(a.Manifest.Created) {
				t.Fatalf("re-import = %+v, %v", b, err)
			}
			entries, _ := os.ReadDir(kdir)
			if len(entries) != 1 {
				t.Fatalf("kernelsDir has %d entries", len(entries))
			}
		})
	}
}

func TestImportDebDeterministic(t *testing.T) {
	src := t.TempDir()
	deb, _ := buildKernelDeb(t, src, kernelDebOpts{})
	a, err := ImportDeb(context.Background(), deb, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ImportDeb(context.Background(), deb, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := os.ReadFile(a.ModulesCpio)
	cb, _ := os.ReadFile(b.ModulesCpio)
	if a.ID != b.ID || !bytes.Equal(ca, cb) {
		t.Fatal("same package gave different artifacts")
	}
}

func TestImportDebCompressedModules(t *testing.T) {
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		t.Run(ext, func(t *testing.T) {
			deb, _ := buildKernelDeb(t, t.TempDir(), kernelDebOpts{compressKo: ext})
			a, err := ImportDeb(context.Background(), deb, t.TempDir(), nil)
			if err != nil {
				t.Fatal(err)
			}
			data, _ := os.ReadFile(a.ModulesCpio)
			_, files, _ := readCpio(t, data)
			p := "lib/modules/" + testVersion + "/kernel/drivers/virtio/virtio_mmio.ko"
			if _, err := parseModinfo(files[p]); err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			if !strings.Contains(string(files["lib/modules/banger.list"]), "/virtio_mmio.ko\n") {
				t.Error("banger.list names compressed files")
			}
			if _, err := os.Stat(filepath.Join(a.ModulesDir, testVersion, "kernel/fs/fat/vfat.ko")); err != nil {
				t.Errorf("tree not decompressed: %v", err)
			}
		})
	}
}

func TestImportDebMissingModules(t *testing.T) {
	tests := []struct {
		name    string
		opts    kernelDebOpts
		wantErr string
		absent  string
	}{
		{"optional missing is fine", kernelDebOpts{omitModules: []string{"virtio_net", "failover", "net_failover"}}, "", "virtio_net"},
		{"required built in per config", kernelDebOpts{omitModules: []string{"virtio_mmio"}, config: "CONFIG_VIRTIO_MMIO=y\n"}, "", "virtio_mmio"},
		{"required without config is a warning", kernelDebOpts{omitModules: []string{"virtio_mmio"}}, "", "virtio_mmio"},
		{"required missing per config", kernelDebOpts{omitModules: []string{"virtio_blk"}, config: "CONFIG_VIRTIO_BLK=m\n"}, "virtio_blk is neither built in nor shipped (CONFIG_VIRTIO_BLK=m)", ""},
		{"required not set", kernelDebOpts{omitModules: []string{"virtio_console"}, config: "# CONFIG_VIRTIO_CONSOLE is not set\n"}, "CONFIG_VIRTIO_CONSOLE=not set", ""},
		{"dependency missing", kernelDebOpts{omitModules: []string{"virtio_ring"}}, "depends on virtio_ring, which is not in the package", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			deb, _ := buildKernelDeb(t, t.TempDir(), tt.opts)
			kdir := t.TempDir()
			a, err := ImportDeb(context.Background(), deb, kdir, nil)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				assertEmptyDir(t, kdir)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range a.Manifest.BootModules {
				if m == tt.absent {
					t.Errorf("%s in boot modules", m)
				}
			}
		})
	}
}

func TestImportDebBadInput(t *testing.T) {
	src := t.TempDir()
	good, _ := buildKernelDeb(t, src, kernelDebOpts{dataComp: ".gz"})
	goodBytes, _ := os.ReadFile(good)
	control := gzipBytes(t, tarBytes(t, tarEntry{name: "./control", data: []byte("Package: linux-image-x\n")}))
	hostile := func(name string) []byte {
		return arBytes(arFile{"debian-binary", []byte("2.0\n")}, arFile{"control.tar.gz", control},
			arFile{"data.tar", tarBytes(t, tarEntry{name: "./boot/", typ: '5'}, tarEntry{name: name, data: []byte("pwned")})})
	}
	tests := []struct {
		name    string
		data    []byte
		wantErr string
	}{
		{"empty", nil, "not an ar archive"},
		{"text", []byte("hello, I am not a package\n"), "not an ar archive"},
		{"truncated", goodBytes[:len(goodBytes)/2], "truncated ar archive"},
		{"truncated header", goodBytes[:8+30], "truncated ar archive"},
		{"bad header", append([]byte("!<arch>\n"), bytes.Repeat([]byte("x"), 60)...), "corrupt ar archive"},
		{"no debian-binary", arBytes(arFile{"foo", []byte("x")}), "first member is not debian-binary"},
		{"no data", arBytes(arFile{"debian-binary", []byte("2.0\n")}, arFile{"control.tar.gz", control}), "no data.tar"},
		{"no control", arBytes(arFile{"debian-binary", []byte("2.0\n")}), "no control.tar"},
		{"bad format version", arBytes(arFile{"debian-binary", []byte("3.0\n")}), "unsupported Debian package format"},
		{"not a kernel", arBytes(arFile{"debian-binary", []byte("2.0\n")},
			arFile{"control.tar.gz", gzipBytes(t, tarBytes(t, tarEntry{name: "./control", data: []byte("Package: bash\n")}))},
			arFile{"data.tar", tarBytes(t)}), `package "bash" is not a kernel image`},
		{"corrupt control", arBytes(arFile{"debian-binary", []byte("2.0\n")}, arFile{"control.tar.gz", []byte("garbage!")}, arFile{"data.tar", nil}), "control.tar.gz"},
		{"meta package", arBytes(arFile{"debian-binary", []byte("2.0\n")}, arFile{"control.tar.gz", control}, arFile{"data.tar", tarBytes(t)}), "no boot/vmlinuz"},
		{"corrupt data", arBytes(arFile{"debian-binary", []byte("2.0\n")}, arFile{"control.tar.gz", control}, arFile{"data.tar.xz", []byte("not xz at all")}), "data.tar.xz"},
		{"absolute path", hostile("/lib/modules/x/evil.ko"), "unsafe absolute path"},
		{"dotdot path", hostile("./lib/modules/../../../evil"), "unsafe path"},
		{"bad vmlinuz", arBytes(arFile{"debian-binary", []byte("2.0\n")}, arFile{"control.tar.gz", control},
			arFile{"data.tar", tarBytes(t, tarEntry{name: "./boot/vmlinuz-x", data: []byte("MZ not really")})}), "extract vmlinux"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "x.deb")
			if err := os.WriteFile(p, tt.data, 0o644); err != nil {
				t.Fatal(err)
			}
			kdir := filepath.Join(t.TempDir(), "kernels")
			_, err := ImportDeb(context.Background(), p, kdir, nil)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if !strings.HasPrefix(err.Error(), `import deb "`+p+`": `) {
				t.Errorf("error does not name the file: %v", err)
			}
			assertEmptyDir(t, kdir)
		})
	}
	if _, err := ImportDeb(context.Background(), filepath.Join(src, "missing.deb"), t.TempDir(), nil); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestImportDebCancelled(t *testing.T) {
	deb, _ := buildKernelDeb(t, t.TempDir(), kernelDebOpts{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	kdir := t.TempDir()
	if _, err := ImportDeb(ctx, deb, kdir, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	assertEmptyDir(t, kdir)
}

func TestImportFiles(t *testing.T) {
	src := t.TempDir()
	vm := fakeVmlinux("6.6.6-custom")
	elfPath := filepath.Join(src, "vmlinux")
	bzPath := filepath.Join(src, "bzImage")
	initrd := filepath.Join(src, "initrd.img")
	mustWrite(t, elfPath, vm, 0o644)
	mustWrite(t, bzPath, makeBzImage(sizeTrailer(zstdBytes(t, vm), len(vm)), 0x1b), 0o644)
	mustWrite(t, initrd, []byte("initrd-bytes"), 0o644)
	kdir := t.TempDir()

	a, err := ImportFiles(context.Background(), elfPath, "", kdir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.Version != "6.6.6-custom" || a.Manifest.Source != SourceFiles || a.Manifest.SourceName != "vmlinux" || a.Initrd != "" || a.ModulesCpio != "" || a.ModulesDir != "" {
		t.Errorf("artifact %+v", a)
	}
	b, err := ImportFiles(context.Background(), bzPath, "", kdir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b.ID != a.ID {
		t.Error("bzImage and its ELF gave different IDs")
	}
	c, err := ImportFiles(context.Background(), bzPath, initrd, kdir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.ID == a.ID || !c.Manifest.HasInitrd || c.Initrd == "" {
		t.Fatalf("with initrd: %+v", c)
	}
	if got, _ := os.ReadFile(c.Initrd); string(got) != "initrd-bytes" {
		t.Errorf("initrd = %q", got)
	}

	if _, err := ImportFiles(context.Background(), initrd, "", kdir, nil); err == nil || !strings.Contains(err.Error(), "not a bzImage") {
		t.Errorf("bad kernel: %v", err)
	}
	if _, err := ImportFiles(context.Background(), elfPath, filepath.Join(src, "nope"), kdir, nil); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing initrd: %v", err)
	}
	entries, _ := os.ReadDir(kdir)
	if len(entries) != 2 {
		t.Errorf("kernelsDir has %d entries, want 2", len(entries))
	}

	if err := Remove(kdir, c.ID); err != nil {
		t.Fatal(err)
	}
	if err := Remove(kdir, c.ID); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	if _, err := Load(kdir, c.ID); err == nil {
		t.Fatal("Load after Remove succeeded")
	}
	for _, bad := range []string{"", "../x", strings.Repeat("A", 64), strings.Repeat("a", 63)} {
		if _, err := Load(kdir, bad); err == nil {
			t.Errorf("Load(%q) succeeded", bad)
		}
		if err := Remove(kdir, bad); err == nil {
			t.Errorf("Remove(%q) succeeded", bad)
		}
	}
}

func TestAgentCpio(t *testing.T) {
	var b bytes.Buffer
	if err := AgentCpio(&b, []byte("#!agent")); err != nil {
		t.Fatal(err)
	}
	names, files, modes := readCpio(t, b.Bytes())
	if !reflect.DeepEqual(names, []string{"init", ".banger-initramfs"}) {
		t.Fatalf("names %v", names)
	}
	if string(files["init"]) != "#!agent" || modes["init"] != cpio.TypeReg|0o755 || modes[".banger-initramfs"] != cpio.TypeReg|0o644 || len(files[".banger-initramfs"]) != 0 {
		t.Errorf("files %q modes %v", files, modes)
	}
	if b.Len()%4 != 0 {
		t.Errorf("archive length %d not 4-aligned", b.Len())
	}
}

func TestBootInitrd(t *testing.T) {
	src := t.TempDir()
	kdir := t.TempDir()
	cache := filepath.Join(t.TempDir(), "cache")
	agent := filepath.Join(src, "agent")
	mustWrite(t, agent, []byte("agent-v1"), 0o755)
	var agentCpio bytes.Buffer
	if err := AgentCpio(&agentCpio, []byte("agent-v1")); err != nil {
		t.Fatal(err)
	}

	vmPath := filepath.Join(src, "vmlinux")
	mustWrite(t, vmPath, fakeVmlinux("6.6.6"), 0o644)
	initrd := filepath.Join(src, "initrd")
	mustWrite(t, initrd, []byte("odd"), 0o644) // 3 bytes: needs padding
	deb, _ := buildKernelDeb(t, src, kernelDebOpts{})

	bare, err := ImportFiles(context.Background(), vmPath, "", kdir, nil)
	if err != nil {
		t.Fatal(err)
	}
	withInitrd, err := ImportFiles(context.Background(), vmPath, initrd, kdir, nil)
	if err != nil {
		t.Fatal(err)
	}
	withMods, err := ImportDeb(context.Background(), deb, kdir, nil)
	if err != nil {
		t.Fatal(err)
	}
	mods, _ := os.ReadFile(withMods.ModulesCpio)

	tests := []struct {
		name string
		a    *Artifact
		want []byte
	}{
		{"agent only", bare, agentCpio.Bytes()},
		{"user initrd padded", withInitrd, append([]byte("odd\x00"), agentCpio.Bytes()...)},
		{"modules", withMods, append(append([]byte(nil), mods...), agentCpio.Bytes()...)},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := BootInitrd(tt.a, agent, cache)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(p)
			if !bytes.Equal(got, tt.want) {
				t.Fatalf("content differs (%d vs %d bytes)", len(got), len(tt.want))
			}
			if seen[p] {
				t.Error("two artifacts share an initrd path")
			}
			seen[p] = true
			again, err := BootInitrd(tt.a, agent, cache)
			if err != nil || again != p {
				t.Fatalf("second call = %s, %v", again, err)
			}
		})
	}
	// The modules image unpacks as one stream with the agent's /init last.
	p, _ := BootInitrd(withMods, agent, cache)
	data, _ := os.ReadFile(p)
	first, _, _ := readCpio(t, data)
	second, files, _ := readCpio(t, data[len(mods):])
	if len(first) == 0 || !reflect.DeepEqual(second, []string{"init", ".banger-initramfs"}) || string(files["init"]) != "agent-v1" {
		t.Errorf("concatenation: %v / %v", first, second)
	}

	// A new agent gives a new image; no temp files are left behind.
	mustWrite(t, agent, []byte("agent-v2"), 0o755)
	p2, err := BootInitrd(bare, agent, cache)
	if err != nil || seen[p2] {
		t.Fatalf("new agent: %s %v", p2, err)
	}
	entries, _ := os.ReadDir(cache)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".tmp") {
			t.Errorf("temp file left: %s", e.Name())
		}
	}
	if _, err := BootInitrd(bare, filepath.Join(src, "no-agent"), cache); err == nil {
		t.Error("missing agent accepted")
	}
}

func TestCleanStale(t *testing.T) {
	kdir := t.TempDir()
	for _, d := range []string{filepath.Join(kdir, ".tmp-import-123", "modules"), filepath.Join(kdir, strings.Repeat("a", 64))} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := CleanStale(kdir); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(kdir)
	if len(entries) != 1 || entries[0].Name() != strings.Repeat("a", 64) {
		t.Fatalf("entries %v", entries)
	}
	if err := CleanStale(filepath.Join(kdir, "missing")); err != nil {
		t.Fatal(err)
	}
}

func mustWrite(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
}
