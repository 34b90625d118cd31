package kernel

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Size limits for the small files read into memory from a package.
const (
	maxVmlinuzSize = 256 << 20
	maxConfigSize  = 16 << 20
	maxControlSize = 1 << 20
)

// arMember locates one member of an ar archive.
type arMember struct {
	name string
	off  int64
	size int64
}

// readArIndex lists the members of a System V/GNU ar archive (the .deb
// container), validating every header against the file size.
func readArIndex(r io.ReaderAt, size int64) ([]arMember, error) {
	var magic [8]byte
	if _, err := r.ReadAt(magic[:], 0); err != nil || string(magic[:]) != "!<arch>\n" {
		return nil, errors.New("not an ar archive")
	}
	var members []arMember
	off := int64(8)
	for off < size {
		if size-off == 1 {
			break // tolerate a final padding byte
		}
		var hdr [60]byte
		if size-off < 60 {
			return nil, fmt.Errorf("truncated ar archive (partial header at offset %d)", off)
		}
		if _, err := r.ReadAt(hdr[:], off); err != nil {
			return nil, fmt.Errorf("read ar header: %w", err)
		}
		if hdr[58] != '`' || hdr[59] != '\n' {
			return nil, fmt.Errorf("corrupt ar archive (bad header at offset %d)", off)
		}
		name := strings.TrimRight(string(hdr[0:16]), " ")
		name = strings.TrimSuffix(name, "/") // GNU ar terminates names with '/'
		n, err := strconv.ParseInt(strings.TrimSpace(string(hdr[48:58])), 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("corrupt ar archive (bad size for member %q)", name)
		}
		off += 60
		if n > size-off {
			return nil, fmt.Errorf("truncated ar archive (member %q needs %d bytes, %d left)", name, n, size-off)
		}
		members = append(members, arMember{name: name, off: off, size: n})
		off += n + n%2
	}
	return members, nil
}

// debContents is what ImportDeb needs from the package's control data.
type debContents struct {
	pkg, version string
	control      arMember
	data         arMember
}

func inspectDeb(f io.ReaderAt, size int64) (*debContents, error) {
	members, err := readArIndex(f, size)
	if err != nil {
		return nil, err
	}
	if len(members) == 0 || members[0].name != "debian-binary" {
		return nil, errors.New("not a Debian package (first member is not debian-binary)")
	}
	var ver [4]byte
	if members[0].size < 4 {
		return nil, errors.New("not a Debian package (short debian-binary)")
	}
	if _, err := f.ReadAt(ver[:], members[0].off); err != nil || string(ver[:2]) != "2." {
		return nil, fmt.Errorf("unsupported Debian package format %q", strings.TrimSpace(string(ver[:])))
	}
	dc := &debContents{}
	for _, m := range members[1:] {
		switch {
		case strings.HasPrefix(m.name, "control.tar") && dc.control.name == "":
			dc.control = m
		case strings.HasPrefix(m.name, "data.tar") && dc.data.name == "":
			dc.data = m
		}
	}
	if dc.control.name == "" {
		return nil, errors.New("not a Debian package (no control.tar member)")
	}
	if dc.data.name == "" {
		return nil, errors.New("not a Debian package (no data.tar member)")
	}
	control, err := readControl(f, dc.control)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", dc.control.name, err)
	}
	fields := parseControl(control)
	dc.pkg, dc.version = fields["Package"], fields["Version"]
	if dc.pkg == "" {
		return nil, errors.New("control file has no Package field")
	}
	if !strings.HasPrefix(dc.pkg, "linux-image-") {
		return nil, fmt.Errorf("package %q is not a kernel image (want linux-image-*)", dc.pkg)
	}
	return dc, nil
}

// openMember returns a decompressing reader for a control.tar.* or
// data.tar.* member, chosen by its name's extension.
func openMember(f io.ReaderAt, m arMember) (io.Reader, func(), error) {
	raw := io.NewSectionReader(f, m.off, m.size)
	noop := func() {}
	// Callers only pass members whose names start with "control.tar" or
	// "data.tar", so the extension follows the first ".tar".
	switch ext := m.name[strings.Index(m.name, ".tar")+len(".tar"):]; ext {
	case "":
		return raw, noop, nil
	case ".gz":
		g, err := gzip.NewReader(raw)
		if err != nil {
			return nil, nil, err
		}
		return g, noop, nil
	case ".xz":
		x, err := xz.NewReader(bufio.NewReaderSize(raw, 1<<20))
		if err != nil {
			return nil, nil, err
		}
		return x, noop, nil
	case ".zst":
		d, err := zstd.NewReader(raw)
		if err != nil {
			return nil, nil, err
		}
		return d, d.Close, nil
	case ".bz2":
		return bzip2.NewReader(raw), noop, nil
	default:
		return nil, nil, fmt.Errorf("unsupported compression %q", ext)
	}
}

func readControl(f io.ReaderAt, m arMember) ([]byte, error) {
	r, done, err := openMember(f, m)
	if err != nil {
		return nil, err
	}
	defer done()
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, errors.New("no control file")
		}
		if err != nil {
			return nil, err
		}
		if path.Clean(strings.TrimPrefix(h.Name, "./")) == "control" && h.Typeflag == tar.TypeReg {
			return readLimited(tr, maxControlSize)
		}
	}
}

// parseControl reads the first paragraph of a deb822 control file.
// Continuation lines are ignored: only single-line fields are needed.
func parseControl(data []byte) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.TrimSpace(line) == "" {
			if len(out) > 0 {
				break
			}
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			continue
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return out
}

// safeTarPath cleans a tar entry name to a relative slash path, rejecting
// absolute names and any ".." component. It returns "" for the root entry.
func safeTarPath(name string) (string, error) {
	n := strings.TrimPrefix(name, "./")
	if n == "" || n == "." || n == "./" {
		return "", nil
	}
	if strings.HasPrefix(n, "/") {
		return "", fmt.Errorf("unsafe absolute path %q", name)
	}
	for _, c := range strings.Split(n, "/") {
		if c == ".." {
			return "", fmt.Errorf("unsafe path %q", name)
		}
	}
	return path.Clean(n), nil
}

// dataContents is what the data.tar scan produced.
type dataContents struct {
	vmlinuz map[string][]byte // kernel version -> bzImage
	config  map[string][]byte // kernel version -> boot/config-<ver>
	modRoot string            // host dir holding <version>/ module trees
}

// modulesRel returns "<ver>/<rest>" for paths under lib/modules or
// usr/lib/modules, or "" otherwise.
func modulesRel(p string) string {
	for _, pre := range []string{"lib/modules/", "usr/lib/modules/"} {
		if strings.HasPrefix(p, pre) {
			return strings.TrimPrefix(p, pre)
		}
	}
	return ""
}

// scanData streams data.tar once: kernel images and configs go to memory,
// module trees (decompressed) to modRoot. Nothing is written outside modRoot.
func scanData(ctx context.Context, r io.Reader, modRoot string) (*dataContents, error) {
	dc := &dataContents{vmlinuz: map[string][]byte{}, config: map[string][]byte{}, modRoot: modRoot}
	written := map[string]string{} // tar path -> host path, for hard links
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read data.tar: %w", err)
		}
		p, err := safeTarPath(h.Name)
		if err != nil {
			return nil, fmt.Errorf("data.tar: %w", err)
		}
		if p == "" {
			continue
		}
		if strings.HasPrefix(p, "boot/") && h.Typeflag == tar.TypeReg {
			base := path.Base(p)
			switch {
			case strings.HasPrefix(base, "vmlinuz-") && path.Dir(p) == "boot":
				if dc.vmlinuz[base[len("vmlinuz-"):]], err = readLimited(tr, maxVmlinuzSize); err != nil {
					return nil, fmt.Errorf("read %s: %w", p, err)
				}
			case strings.HasPrefix(base, "config-") && path.Dir(p) == "boot":
				if dc.config[base[len("config-"):]], err = readLimited(tr, maxConfigSize); err != nil {
					return nil, fmt.Errorf("read %s: %w", p, err)
				}
			}
			continue
		}
		rel := modulesRel(p)
		if rel == "" {
			continue
		}
		host := filepath.Join(modRoot, filepath.FromSlash(rel))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(host, 0o755); err != nil {
				return nil, err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(host), 0o755); err != nil {
				return nil, err
			}
			data, name, err := decompressModule(path.Base(p), tr)
			if err != nil {
				return nil, fmt.Errorf("extract %s: %w", p, err)
			}
			host = filepath.Join(filepath.Dir(host), name)
			// Synced once for the whole tree before commit.
			if err := os.WriteFile(host, data, 0o644); err != nil {
				return nil, err
			}
			written[p] = host
		case tar.TypeLink:
			target, err := safeTarPath(h.Linkname)
			if err != nil {
				return nil, fmt.Errorf("data.tar: hard link: %w", err)
			}
			src, ok := written[target]
			if !ok {
				continue
			}
			data, err := os.ReadFile(src)
			if err != nil {
				return nil, err
			}
			if err := os.MkdirAll(filepath.Dir(host), 0o755); err != nil {
				return nil, err
			}
			host = filepath.Join(filepath.Dir(host), filepath.Base(src))
			if err := os.WriteFile(host, data, 0o644); err != nil {
				return nil, err
			}
			written[p] = host
		default:
			// Symlinks (build/, source/) point into the host's kernel
			// headers and are meaningless in an artifact; skip them.
		}
	}
	return dc, nil
}

// pickVersion chooses the kernel release the package installs. A package
// normally ships exactly one vmlinuz; otherwise the one named after the
// package wins.
func pickVersion(pkg string, images map[string][]byte) (string, error) {
	if len(images) == 0 {
		return "", fmt.Errorf("package %s has no boot/vmlinuz-* (a meta-package? use the versioned linux-image-<release> package)", pkg)
	}
	if len(images) == 1 {
		for v := range images {
			return v, nil
		}
	}
	want := strings.TrimSuffix(strings.TrimPrefix(pkg, "linux-image-"), "-unsigned")
	if _, ok := images[want]; ok {
		return want, nil
	}
	var vs []string
	for v := range images {
		vs = append(vs, v)
	}
	sort.Strings(vs)
	return "", fmt.Errorf("package %s ships several kernels (%s)", pkg, strings.Join(vs, ", "))
}

// ImportDeb imports a Debian linux-image-* package: it extracts the ELF
// vmlinux from the package's bzImage, builds modules.cpio with the boot
// modules and their dependencies, and keeps the full (decompressed)
// modules tree. On error nothing is left in kernelsDir.
func ImportDeb(ctx context.Context, debPath, kernelsDir string, progress func(string)) (*Artifact, error) {
	a, err := importDeb(ctx, debPath, kernelsDir, progress)
	if err != nil {
		return nil, fmt.Errorf("import deb %q: %w", debPath, err)
	}
	return a, nil
}

func importDeb(ctx context.Context, debPath, kernelsDir string, progress func(string)) (*Artifact, error) {
	f, err := os.Open(debPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	deb, err := inspectDeb(f, st.Size())
	if err != nil {
		return nil, err
	}
	progressf(progress, "unpacking %s %s", deb.pkg, deb.version)

	tmp, err := newTempDir(kernelsDir)
	if err != nil {
		return nil, err
	}
	committed := false
	defer func() {
		if !committed {
			os.RemoveAll(tmp)
		}
	}()

	modRoot := filepath.Join(tmp, modulesDirName)
	if err := os.Mkdir(modRoot, 0o755); err != nil {
		return nil, err
	}
	r, done, err := openMember(f, deb.data)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", deb.data.name, err)
	}
	data, err := scanData(ctx, r, modRoot)
	done()
	if err != nil {
		return nil, err
	}
	version, err := pickVersion(deb.pkg, data.vmlinuz)
	if err != nil {
		return nil, err
	}
	// Keep only the chosen kernel's modules.
	entries, err := os.ReadDir(modRoot)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if e.Name() != version {
			if err := os.RemoveAll(filepath.Join(modRoot, e.Name())); err != nil {
				return nil, err
			}
		}
	}

	progressf(progress, "extracting vmlinux from vmlinuz-%s", version)
	vmlinux, err := ExtractVmlinux(ctx, data.vmlinuz[version])
	if err != nil {
		return nil, fmt.Errorf("extract vmlinux: %w", err)
	}
	data.vmlinuz = nil
	if err := writeFileSync(filepath.Join(tmp, vmlinuxName), vmlinux); err != nil {
		return nil, err
	}
	vmSum := sha256.Sum256(vmlinux)
	vmlinux = nil

	var config map[string]string
	if c, ok := data.config[version]; ok {
		config = parseKernelConfig(c)
	}

	var bootNames []string
	var cpioSum []byte
	treeRoot := filepath.Join(modRoot, version)
	if _, err := os.Stat(treeRoot); err == nil {
		progressf(progress, "resolving boot modules")
		tree, err := indexModuleTree(treeRoot)
		if err != nil {
			return nil, fmt.Errorf("index modules: %w", err)
		}
		bs, err := resolveBootModules(tree, config, func(msg string) { progressf(progress, "warning: %s", msg) })
		if err != nil {
			return nil, fmt.Errorf("resolve boot modules: %w", err)
		}
		bootNames = bs.Order
		var buf bytes.Buffer
		if err := writeModulesCpio(&buf, tree, version, bs); err != nil {
			return nil, fmt.Errorf("write modules.cpio: %w", err)
		}
		if err := writeFileSync(filepath.Join(tmp, modulesCpioName), buf.Bytes()); err != nil {
			return nil, err
		}
		s := sha256.Sum256(buf.Bytes())
		cpioSum = s[:]
		if err := syncTree(modRoot); err != nil {
			return nil, err
		}
	} else {
		// A kernel without modules (everything built in) needs no cpio.
		if err := checkBuiltinOnly(config); err != nil {
			return nil, err
		}
		if err := os.RemoveAll(modRoot); err != nil {
			return nil, err
		}
	}
	if bootNames == nil {
		bootNames = []string{}
	}
	m := Manifest{
		ID:             artifactID(vmSum[:], cpioSum, nil),
		Version:        version,
		Source:         SourceDeb,
		SourceName:     deb.pkg,
		PackageVersion: deb.version,
		Created:        time.Now().UTC().Truncate(time.Second),
		VmlinuxSHA256:  hex.EncodeToString(vmSum[:]),
		BootModules:    bootNames,
	}
	progressf(progress, "storing kernel %s", m.ID[:12])
	a, err := commit(kernelsDir, tmp, m)
	if err != nil {
		return nil, fmt.Errorf("store artifact: %w", err)
	}
	committed = true
	return a, nil
}

// checkBuiltinOnly verifies, for a package without a modules tree, that the
// required drivers are not expected as modules.
func checkBuiltinOnly(config map[string]string) error {
	if config == nil {
		return nil
	}
	for _, bm := range bootModules {
		if bm.required && config[bm.config] != "y" {
			return fmt.Errorf("package has no modules but CONFIG_%s=%s", bm.config, configValue(config, bm.config))
		}
	}
	return nil
}
