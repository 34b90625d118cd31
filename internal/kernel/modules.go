package kernel

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cavaliergopher/cpio"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// maxModuleSize bounds a single decompressed module.
const maxModuleSize = 256 << 20

// bootModule is a module the agent needs to reach its devices. required
// ones make an import fail when the kernel has no way to provide them.
type bootModule struct {
	name     string
	config   string // Kconfig symbol that builds it in
	required bool
}

// bootModules are loaded by the agent in this order (after dependencies):
// the virtio-mmio transport first, since every other device sits on it.
var bootModules = []bootModule{
	{"virtio_mmio", "VIRTIO_MMIO", true},
	{"virtio_blk", "VIRTIO_BLK", true},
	{"virtio_net", "VIRTIO_NET", false},
	{"virtio_console", "VIRTIO_CONSOLE", true},
	{"virtio_rng", "HW_RANDOM_VIRTIO", false},
	{"vmw_vsock_virtio_transport", "VIRTIO_VSOCKETS", false},
	{"ext4", "EXT4_FS", false},
	// Loop devices and device-mapper snapshots, so that guests (and
	// banger's in-guest tests of its dm storage) have them at hand.
	{"loop", "BLK_DEV_LOOP", false},
	{"dm_snapshot", "DM_SNAPSHOT", false},
}

// moduleSuffixes are the file name endings of (possibly compressed) modules.
var moduleSuffixes = []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"}

// moduleFileBase strips a module suffix, reporting whether name is a module.
func moduleFileBase(name string) (string, bool) {
	for _, s := range moduleSuffixes {
		if strings.HasSuffix(name, s) {
			return strings.TrimSuffix(name, s), true
		}
	}
	return "", false
}

// normalizeModuleName maps a module file name or path ("kernel/x/virtio-blk.ko.xz")
// or a module name to the canonical form the kernel uses ("virtio_blk");
// the module loader treats '-' and '_' as the same character.
func normalizeModuleName(s string) string {
	s = path.Base(s)
	if b, ok := moduleFileBase(s); ok {
		s = b
	}
	return strings.ReplaceAll(s, "-", "_")
}

// decompressModule returns the plain ELF of a module file whose name may
// carry a compression suffix, and the name with that suffix reduced to .ko.
func decompressModule(name string, r io.Reader) ([]byte, string, error) {
	var zr io.Reader
	switch {
	case strings.HasSuffix(name, ".ko.xz"):
		x, err := xz.NewReader(r)
		if err != nil {
			return nil, "", err
		}
		zr = x
	case strings.HasSuffix(name, ".ko.zst"):
		d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, "", err
		}
		defer d.Close()
		zr = d
	case strings.HasSuffix(name, ".ko.gz"):
		g, err := gzip.NewReader(r)
		if err != nil {
			return nil, "", err
		}
		zr = g
	default:
		data, err := readLimited(r, maxModuleSize)
		return data, name, err
	}
	data, err := readLimited(zr, maxModuleSize)
	if err != nil {
		return nil, "", err
	}
	b, _ := moduleFileBase(name)
	return data, b + ".ko", nil
}

// modinfo is the subset of a module's .modinfo section that matters here.
type modinfo struct {
	Name       string
	Depends    []string
	SoftdepPre []string
}

// parseModinfo reads the .modinfo section: NUL-separated key=value strings.
func parseModinfo(ko []byte) (modinfo, error) {
	var mi modinfo
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return mi, fmt.Errorf("not an ELF module: %w", err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return mi, errors.New("no .modinfo section")
	}
	data, err := sec.Data()
	if err != nil {
		return mi, fmt.Errorf("read .modinfo: %w", err)
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		switch k {
		case "name":
			mi.Name = normalizeModuleName(v)
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d = strings.TrimSpace(d); d != "" {
					mi.Depends = append(mi.Depends, normalizeModuleName(d))
				}
			}
		case "softdep":
			// "pre: a b post: c": only pre-dependencies must be loaded first.
			inPre := false
			for _, tok := range strings.Fields(v) {
				switch tok {
				case "pre:":
					inPre = true
				case "post:":
					inPre = false
				default:
					if inPre {
						mi.SoftdepPre = append(mi.SoftdepPre, normalizeModuleName(tok))
					}
				}
			}
		}
	}
	return mi, nil
}

// parseBuiltin reads modules.builtin (one module path per line).
func parseBuiltin(data []byte) map[string]bool {
	out := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			out[normalizeModuleName(line)] = true
		}
	}
	return out
}

// parseKernelConfig reads a Kconfig .config into symbol (without CONFIG_)
// -> value; "# CONFIG_X is not set" lines are left out.
func parseKernelConfig(data []byte) map[string]string {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "CONFIG_") {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "CONFIG_"), "=")
		if ok {
			out[k] = v
		}
	}
	return out
}

// orderModules returns roots plus their dependency closure, dependencies
// before dependents. Roots are visited in the given order and each module's
// dependencies in sorted order, so the result depends only on the input
// sets. Every reachable module must be a key of deps; a cycle is an error.
func orderModules(roots []string, deps map[string][]string) ([]string, error) {
	const (
		visiting = 1
		done     = 2
	)
	state := map[string]int{}
	var order []string
	var stack []string
	var visit func(string) error
	visit = func(m string) error {
		switch state[m] {
		case done:
			return nil
		case visiting:
			i := len(stack) - 1
			for i > 0 && stack[i] != m {
				i--
			}
			return fmt.Errorf("module dependency cycle: %s -> %s", strings.Join(stack[i:], " -> "), m)
		}
		ds, ok := deps[m]
		if !ok {
			if len(stack) > 0 {
				return fmt.Errorf("module %s (needed by %s) not found", m, stack[len(stack)-1])
			}
			return fmt.Errorf("module %s not found", m)
		}
		state[m] = visiting
		stack = append(stack, m)
		sorted := append([]string(nil), ds...)
		sort.Strings(sorted)
		for _, d := range sorted {
			if d == m {
				continue
			}
			if err := visit(d); err != nil {
				return err
			}
		}
		stack = stack[:len(stack)-1]
		state[m] = done
		order = append(order, m)
		return nil
	}
	for _, r := range roots {
		if err := visit(r); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// moduleTree is an extracted /lib/modules/<version> directory.
type moduleTree struct {
	root    string            // host path of the <version> directory
	paths   map[string]string // module name -> slash path relative to root
	builtin map[string]bool
}

// indexModuleTree maps module names to files. When two files provide one
// name, the lexically first path wins, so the choice is deterministic.
func indexModuleTree(root string) (*moduleTree, error) {
	t := &moduleTree{root: root, paths: map[string]string{}, builtin: map[string]bool{}}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		if _, ok := moduleFileBase(d.Name()); !ok {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		name := normalizeModuleName(rel)
		if old, ok := t.paths[name]; !ok || rel < old {
			t.paths[name] = rel
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if data, err := os.ReadFile(filepath.Join(root, "modules.builtin")); err == nil {
		t.builtin = parseBuiltin(data)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return t, nil
}

// bootSet is the resolved set of modules for the boot initramfs.
type bootSet struct {
	Order []string          // module names, load order
	Paths map[string]string // module name -> slash path relative to the tree root
}

// resolveBootModules computes the boot module closure from the modules'
// own .modinfo (a .deb ships no modules.dep; depmod runs at install time).
// config may be nil when the package carries no kernel config.
func resolveBootModules(t *moduleTree, config map[string]string, warn func(string)) (*bootSet, error) {
	deps := map[string][]string{}
	var roots []string
	for _, bm := range bootModules {
		if t.builtin[bm.name] {
			continue
		}
		if _, ok := t.paths[bm.name]; ok {
			roots = append(roots, bm.name)
			continue
		}
		switch {
		case config != nil && config[bm.config] == "y":
			// Built in, though modules.builtin is missing or incomplete.
		case config != nil && bm.required:
			return nil, fmt.Errorf("module %s is neither built in nor shipped (CONFIG_%s=%s)", bm.name, bm.config, configValue(config, bm.config))
		default:
			warn(fmt.Sprintf("module %s not found; the guest may lack that device", bm.name))
		}
	}
	queue := append([]string(nil), roots...)
	for len(queue) > 0 {
		m := queue[0]
		queue = queue[1:]
		if _, ok := deps[m]; ok {
			continue
		}
		rel := t.paths[m]
		data, err := os.ReadFile(filepath.Join(t.root, filepath.FromSlash(rel)))
		if err != nil {
			return nil, err
		}
		mi, err := parseModinfo(data)
		if err != nil {
			return nil, fmt.Errorf("module %s: %w", rel, err)
		}
		var ds []string
		for _, d := range mi.Depends {
			if t.builtin[d] {
				continue
			}
			if _, ok := t.paths[d]; !ok {
				return nil, fmt.Errorf("module %s depends on %s, which is not in the package", m, d)
			}
			ds = append(ds, d)
		}
		// Soft pre-dependencies (e.g. a crc32c provider for ext4) are loaded
		// when present, as modprobe would.
		for _, d := range mi.SoftdepPre {
			if _, ok := t.paths[d]; ok && !t.builtin[d] {
				ds = append(ds, d)
			}
		}
		deps[m] = ds
		queue = append(queue, ds...)
	}
	order, err := orderModules(roots, deps)
	if err != nil {
		return nil, err
	}
	bs := &bootSet{Order: order, Paths: map[string]string{}}
	for _, m := range order {
		bs.Paths[m] = t.paths[m]
	}
	return bs, nil
}

func configValue(config map[string]string, sym string) string {
	if v, ok := config[sym]; ok {
		return v
	}
	return "not set"
}

// bangerListPath is where the agent finds its module load list.
const bangerListPath = "lib/modules/banger.list"

// writeModulesCpio writes the boot modules (already decompressed in the
// tree) to a newc archive at /lib/modules/<version>/<rel>, plus
// /lib/modules/banger.list. Entries are sorted and timestamps zero so equal
// input gives equal bytes.
func writeModulesCpio(w io.Writer, t *moduleTree, version string, bs *bootSet) error {
	type entry struct {
		dir  bool
		host string
		data []byte
	}
	entries := map[string]entry{}
	addDirs := func(p string) {
		for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) {
			entries[d] = entry{dir: true}
		}
	}
	var list strings.Builder
	for _, m := range bs.Order {
		rel := bs.Paths[m]
		p := path.Join("lib/modules", version, rel)
		entries[p] = entry{host: filepath.Join(t.root, filepath.FromSlash(rel))}
		addDirs(p)
		list.WriteString("/" + p + "\n")
	}
	entries[bangerListPath] = entry{data: []byte(list.String())}
	addDirs(bangerListPath)

	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)
	cw := cpio.NewWriter(w)
	for _, n := range names {
		e := entries[n]
		if e.dir {
			if err := cw.WriteHeader(&cpio.Header{Name: n, Mode: cpio.TypeDir | 0o755, Links: 2}); err != nil {
				return err
			}
			continue
		}
		data := e.data
		if e.host != "" {
			var err error
			if data, err = os.ReadFile(e.host); err != nil {
				return err
			}
		}
		if err := cw.WriteHeader(&cpio.Header{Name: n, Mode: cpio.TypeReg | 0o644, Size: int64(len(data)), Links: 1}); err != nil {
			return err
		}
		if _, err := cw.Write(data); err != nil {
			return err
		}
	}
	return cw.Close()
}
