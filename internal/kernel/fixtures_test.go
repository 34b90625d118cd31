package kernel

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"
)

// fakeELF builds a minimal ELF64 little-endian file with the given type and
// machine, optional named sections, and filler bytes so payloads are not
// trivially small.
func fakeELF(typ elf.Type, machine elf.Machine, sections map[string][]byte, filler int) []byte {
	names := make([]string, 0, len(sections))
	for n := range sections {
		names = append(names, n)
	}
	// deterministic order
	for i := range names {
		for j := i + 1; j < len(names); j++ {
			if names[j] < names[i] {
				names[i], names[j] = names[j], names[i]
			}
		}
	}
	var body bytes.Buffer
	body.Write(make([]byte, 64)) // header placeholder
	for i := 0; i < filler; i++ {
		body.WriteByte(byte(i % 7))
	}
	type sh struct {
		name      uint32
		typ       uint32
		off, size uint64
	}
	shstr := []byte{0}
	var shs []sh
	shs = append(shs, sh{})
	for _, n := range names {
		nameOff := uint32(len(shstr))
		shstr = append(shstr, n...)
		shstr = append(shstr, 0)
		shs = append(shs, sh{name: nameOff, typ: uint32(elf.SHT_PROGBITS), off: uint64(body.Len()), size: uint64(len(sections[n]))})
		body.Write(sections[n])
	}
	shstrName := uint32(len(shstr))
	shstr = append(shstr, ".shstrtab"...)
	shstr = append(shstr, 0)
	shs = append(shs, sh{name: shstrName, typ: uint32(elf.SHT_STRTAB), off: uint64(body.Len()), size: uint64(len(shstr))})
	body.Write(shstr)
	for body.Len()%8 != 0 {
		body.WriteByte(0)
	}
	shoff := body.Len()
	for _, s := range shs {
		var b [64]byte
		binary.LittleEndian.PutUint32(b[0:], s.name)
		binary.LittleEndian.PutUint32(b[4:], s.typ)
		binary.LittleEndian.PutUint64(b[24:], s.off)
		binary.LittleEndian.PutUint64(b[32:], s.size)
		binary.LittleEndian.PutUint64(b[48:], 1)
		body.Write(b[:])
	}
	out := body.Bytes()
	h := out[:64]
	copy(h, []byte{0x7f, 'E', 'L', 'F', byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), 1})
	binary.LittleEndian.PutUint16(h[16:], uint16(typ))
	binary.LittleEndian.PutUint16(h[18:], uint16(machine))
	binary.LittleEndian.PutUint32(h[20:], 1)
	binary.LittleEndian.PutUint64(h[40:], uint64(shoff))
	binary.LittleEndian.PutUint16(h[52:], 64)
	binary.LittleEndian.PutUint16(h[58:], 64)
	binary.LittleEndian.PutUint16(h[60:], uint16(len(shs)))
	binary.LittleEndian.PutUint16(h[62:], uint16(len(shs)-1))
	return out
}

// fakeVmlinux is a tiny x86-64 executable ELF carrying a linux_banner.
func fakeVmlinux(version string) []byte {
	return fakeELF(elf.ET_EXEC, elf.EM_X86_64, map[string][]byte{
		".rodata": []byte("Linux version " + version + " (test@banger) #1 SMP\x00"),
	}, 4096)
}

// fakeModule is a relocatable ELF with the given .modinfo strings.
func fakeModule(info ...string) []byte {
	return fakeELF(elf.ET_REL, elf.EM_X86_64, map[string][]byte{
		".modinfo": []byte(strings.Join(info, "\x00") + "\x00"),
	}, 64)
}

// makeBzImage wraps an already-compressed payload the way the x86 boot
// image does; setupSects 0 exercises the "means 4" rule.
func makeBzImage(payload []byte, setupSects int) []byte {
	n := setupSects
	if n == 0 {
		n = 4
	}
	pm := (n + 1) * 512
	const payloadOff = 0x3c0
	img := make([]byte, pm+payloadOff)
	img[0x1f1] = byte(setupSects)
	binary.LittleEndian.PutUint16(img[0x1fe:], 0xaa55)
	copy(img[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(img[0x206:], 0x020f)
	binary.LittleEndian.PutUint32(img[0x248:], payloadOff)
	binary.LittleEndian.PutUint32(img[0x24c:], uint32(len(payload)))
	img = append(img, payload...)
	return append(img, make([]byte, 100)...) // trailing code/padding
}

// sizeTrailer appends the kernel build's 4-byte decompressed size.
func sizeTrailer(compressed []byte, size int) []byte {
	return binary.LittleEndian.AppendUint32(append([]byte(nil), compressed...), uint32(size))
}

func lz4Legacy(t testing.TB, data []byte) []byte {
	t.Helper()
	out := binary.LittleEndian.AppendUint32(nil, lz4LegacyMagic)
	for len(data) > 0 {
		n := min(len(data), lz4LegacyBlockSize)
		buf := make([]byte, lz4.CompressBlockBound(n))
		k, err := lz4.CompressBlock(data[:n], buf, nil)
		if err != nil {
			t.Fatal(err)
		}
		if k == 0 {
			t.Fatal("incompressible test block")
		}
		out = binary.LittleEndian.AppendUint32(out, uint32(k))
		out = append(out, buf[:k]...)
		data = data[n:]
	}
	return out
}

func gzipBytes(t testing.TB, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func xzBytes(t testing.TB, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := xz.NewWriter(&b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func zstdBytes(t testing.TB, data []byte) []byte {
	t.Helper()
	e, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	return e.EncodeAll(data, nil)
}

func lzmaBytes(t testing.TB, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := lzma.WriterConfig{SizeInHeader: false, EOSMarker: true}.NewWriter(&b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// xzBCJBytes builds a single-block xz stream with the [x86, LZMA2] filter
// chain that kernel builds use (the xz library cannot write it).
func xzBCJBytes(t testing.TB, data []byte) []byte {
	t.Helper()
	filtered := append([]byte(nil), data...)
	x86BCJ(filtered, 0, true)
	var lz bytes.Buffer
	w, err := lzma.Writer2Config{DictCap: 1 << 20}.NewWriter2(&lz)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(filtered); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	out.Write([]byte{0xfd, '7', 'z', 'X', 'Z', 0, 0, 0x01})
	out.Write(binary.LittleEndian.AppendUint32(nil, crc32.ChecksumIEEE([]byte{0, 1})))
	hdr := []byte{0, 0x01, 0x04, 0x00, 0x21, 0x01, 16} // 2 filters: x86, lzma2 (1 MiB dict)
	for (len(hdr)+4)%4 != 0 {
		hdr = append(hdr, 0)
	}
	hdr[0] = byte((len(hdr)+4)/4 - 1)
	hdr = binary.LittleEndian.AppendUint32(hdr, crc32.ChecksumIEEE(hdr))
	out.Write(hdr)
	out.Write(lz.Bytes())
	for out.Len()%4 != 0 {
		out.WriteByte(0)
	}
	out.Write(binary.LittleEndian.AppendUint32(nil, crc32.ChecksumIEEE(data)))
	out.WriteByte(0) // index indicator; the decoder stops here
	return out.Bytes()
}

// arWriter writes the common ar format used by .deb files.
func arBytes(members ...arFile) []byte {
	var b bytes.Buffer
	b.WriteString("!<arch>\n")
	for _, m := range members {
		fmt.Fprintf(&b, "%-16s%-12d%-6d%-6d%-8o%-10d`\n", m.name, 0, 0, 0, 0o100644, len(m.data))
		b.Write(m.data)
		if len(m.data)%2 == 1 {
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

type arFile struct {
	name string
	data []byte
}

type tarEntry struct {
	name     string
	typ      byte
	data     []byte
	linkname string
}

func tarBytes(t testing.TB, entries ...tarEntry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.data)), Linkname: e.linkname}
		if e.typ == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if h.Typeflag == tar.TypeDir {
			h.Mode = 0o755
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			if _, err := tw.Write(e.data); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

const testVersion = "6.1.0-99-test-amd64"

// kernelDebOpts shapes the synthetic kernel package.
type kernelDebOpts struct {
	pkg         string
	dataComp    string // "", ".gz", ".xz", ".zst"
	config      string
	omitModules []string
	extra       []tarEntry
	compressKo  string // "", ".xz", ".zst", ".gz"
}

// testModules mirrors the shape of the Debian cloud kernel's boot modules.
var testModules = []struct {
	rel  string
	info []string
}{
	{"kernel/drivers/virtio/virtio_ring.ko", []string{"license=GPL", "depends=", "name=virtio_ring"}},
	{"kernel/drivers/virtio/virtio.ko", []string{"depends=virtio_ring", "name=virtio"}},
	{"kernel/drivers/virtio/virtio_mmio.ko", []string{"depends=virtio,virtio_ring", "name=virtio_mmio"}},
	{"kernel/drivers/block/virtio_blk.ko", []string{"depends=virtio,virtio_ring", "name=virtio_blk"}},
	{"kernel/net/core/failover.ko", []string{"depends=", "name=failover"}},
	{"kernel/drivers/net/net_failover.ko", []string{"depends=failover", "name=net_failover"}},
	{"kernel/drivers/net/virtio_net.ko", []string{"depends=net_failover,virtio,virtio_ring", "name=virtio_net"}},
	{"kernel/drivers/char/virtio_console.ko", []string{"depends=virtio,virtio_ring", "name=virtio_console"}},
	{"kernel/net/vmw_vsock/vsock.ko", []string{"depends=", "name=vsock"}},
	{"kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko", []string{"depends=vsock", "name=vmw_vsock_virtio_transport_common"}},
	{"kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko", []string{"depends=vmw_vsock_virtio_transport_common,virtio,virtio_ring,vsock", "name=vmw_vsock_virtio_transport"}},
	{"kernel/fs/fat/vfat.ko", []string{"depends=fat", "name=vfat"}},
}

func compressAs(t testing.TB, ext string, data []byte) []byte {
	switch ext {
	case ".gz":
		return gzipBytes(t, data)
	case ".xz":
		return xzBytes(t, data)
	case ".zst":
		return zstdBytes(t, data)
	}
	return data
}

// buildKernelDeb writes a synthetic linux-image .deb to dir and returns its
// path and the vmlinux ELF inside its bzImage.
func buildKernelDeb(t testing.TB, dir string, o kernelDebOpts) (string, []byte) {
	t.Helper()
	if o.pkg == "" {
		o.pkg = "linux-image-" + testVersion
	}
	vmlinux := fakeVmlinux(testVersion)
	bz := makeBzImage(sizeTrailer(lz4Legacy(t, vmlinux), len(vmlinux)), 0x1b)
	entries := []tarEntry{
		{name: "./", typ: tar.TypeDir},
		{name: "./boot/", typ: tar.TypeDir},
		{name: "./boot/vmlinuz-" + testVersion, data: bz},
		{name: "./boot/System.map-" + testVersion, data: []byte("ffffffff81000000 T _text\n")},
	}
	if o.config != "" {
		entries = append(entries, tarEntry{name: "./boot/config-" + testVersion, data: []byte(o.config)})
	}
	mdir := "./lib/modules/" + testVersion + "/"
	entries = append(entries,
		tarEntry{name: "./lib/", typ: tar.TypeDir},
		tarEntry{name: "./lib/modules/", typ: tar.TypeDir},
		tarEntry{name: mdir, typ: tar.TypeDir},
		tarEntry{name: mdir + "build", typ: tar.TypeSymlink, linkname: "/usr/src/linux-headers-" + testVersion},
		tarEntry{name: mdir + "modules.builtin", data: []byte("kernel/fs/ext4/ext4.ko\nkernel/drivers/char/hw_random/rng-core.ko\n")},
	)
	omitted := map[string]bool{}
	for _, m := range o.omitModules {
		omitted[m] = true
	}
	for _, m := range testModules {
		if omitted[normalizeModuleName(m.rel)] {
			continue
		}
		entries = append(entries, tarEntry{name: mdir + m.rel + o.compressKo, data: compressAs(t, o.compressKo, fakeModule(m.info...))})
	}
	entries = append(entries, o.extra...)
	data := compressAs(t, o.dataComp, tarBytes(t, entries...))
	control := gzipBytes(t, tarBytes(t,
		tarEntry{name: "./", typ: tar.TypeDir},
		tarEntry{name: "./control", data: []byte("Package: " + o.pkg + "\nSource: linux-signed-amd64\nVersion: 6.1.999-1\nArchitecture: amd64\nDescription: test kernel\n multi-line\n")},
	))
	deb := arBytes(
		arFile{"debian-binary", []byte("2.0\n")},
		arFile{"control.tar.gz", control},
		arFile{"data.tar" + o.dataComp, data},
	)
	p := filepath.Join(dir, o.pkg+"_6.1.999-1_amd64.deb")
	if err := os.WriteFile(p, deb, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, vmlinux
}
