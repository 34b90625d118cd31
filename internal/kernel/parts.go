package kernel

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"banger/internal/oci"
)

// Bounds on a pulled modules tree: a distribution kernel's is a few
// hundred MiB in a few thousand files.
const (
	maxModulesTreeSize    = 8 << 30
	maxModulesTreeEntries = 1 << 18
)

// Parts are the files of a kernel artifact as it travels through a
// registry (docs/artifacts.md), with the manifest its config carries.
// Optional parts have empty paths when absent.
type Parts struct {
	Manifest    Manifest
	Vmlinux     string
	ModulesCpio string
	Initrd      string
	ModulesTar  string // the modules/ tree as a tar.gz
}

// ociConfig is the config blob of a kernel artifact: the stored manifest's
// fields, flattened, and the part list.
type ociConfig struct {
	Manifest
	Parts []oci.ConfigPart `json:"parts"`
}

// OCIParts prepares a for oci.PushArtifact with oci.KernelConfigType: the
// config and the parts in their fixed order (vmlinux, modules.cpio,
// initrd, modules tree). The modules tree is written into dir as a tar.gz
// whose bytes depend only on the tree, so pushing twice gives the same
// digest; the caller removes dir after the push. The parts are hashed
// first: an artifact whose files no longer match its ID is not published.
func (a *Artifact) OCIParts(dir string) ([]byte, []oci.Part, error) {
	config, parts, err := a.ociParts(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("prepare kernel %s for push: %w", a.ID, err)
	}
	return config, parts, nil
}

func (a *Artifact) ociParts(dir string) ([]byte, []oci.Part, error) {
	var (
		parts []oci.Part
		cps   []oci.ConfigPart
		sums  = map[string][]byte{}
	)
	add := func(mt, p, title string) error {
		if p == "" {
			return nil
		}
		sum, size, err := hashPath(p)
		if err != nil {
			return err
		}
		sums[mt] = sum
		parts = append(parts, oci.Part{MediaType: mt, Path: p, Title: title})
		cps = append(cps, oci.ConfigPart{MediaType: mt, SHA256: hex.EncodeToString(sum), Size: size})
		return nil
	}
	if err := add(oci.KernelVmlinuxType, a.Vmlinux, vmlinuxName); err != nil {
		return nil, nil, err
	}
	if err := add(oci.KernelModulesCpioType, a.ModulesCpio, modulesCpioName); err != nil {
		return nil, nil, err
	}
	if err := add(oci.KernelInitrdType, a.Initrd, initrdName); err != nil {
		return nil, nil, err
	}
	if id := artifactID(sums[oci.KernelVmlinuxType], sums[oci.KernelModulesCpioType], sums[oci.KernelInitrdType]); id != a.ID {
		return nil, nil, fmt.Errorf("content has id %s: the artifact was modified", id)
	}
	if a.ModulesDir != "" {
		tarPath, err := writeModulesTarFile(dir, a.ModulesDir)
		if err != nil {
			return nil, nil, fmt.Errorf("archive modules: %w", err)
		}
		if err := add(oci.KernelModulesTreeType, tarPath, "modules.tar.gz"); err != nil {
			return nil, nil, err
		}
	}
	config, err := json.Marshal(ociConfig{Manifest: a.Manifest, Parts: cps})
	if err != nil {
		return nil, nil, err
	}
	return config, parts, nil
}

func hashPath(p string) ([]byte, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return nil, 0, err
	}
	return h.Sum(nil), n, nil
}

func writeModulesTarFile(dir, modulesDir string) (string, error) {
	f, err := os.CreateTemp(dir, "modules-*.tar.gz")
	if err != nil {
		return "", err
	}
	err = writeModulesTar(f, modulesDir)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// writeModulesTar writes the tree under modulesDir as a tar.gz with names
// relative to it, in lexical walk order, with fixed modes, zero owners and
// times and no gzip name or time: identical trees give identical bytes.
func writeModulesTar(w io.Writer, modulesDir string) error {
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	err := filepath.WalkDir(modulesDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(modulesDir, p)
		if err != nil || rel == "." {
			return err
		}
		h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: time.Unix(0, 0)}
		switch {
		case d.IsDir():
			h.Typeflag, h.Name, h.Mode = tar.TypeDir, h.Name+"/", 0o755
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			h.Typeflag, h.Mode, h.Size = tar.TypeReg, 0o644, info.Size()
		case d.Type()&fs.ModeSymlink != 0:
			if h.Linkname, err = os.Readlink(p); err != nil {
				return err
			}
			h.Typeflag, h.Mode = tar.TypeSymlink, 0o777
		default:
			return fmt.Errorf("%s: not a file, directory or symlink", rel)
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if h.Typeflag != tar.TypeReg {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		// Exactly the size in the header: a file growing under us must
		// fail the write, not corrupt the archive.
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

// PartsFromOCI maps a pulled kernel artifact's layers to Parts by media
// type, after checking them against the config's part list (same order,
// types, digests and sizes).
func PartsFromOCI(a *oci.Artifact) (Parts, error) {
	p, err := partsFromOCI(a)
	if err != nil {
		return Parts{}, fmt.Errorf("read kernel artifact %s: %w", a.Ref, err)
	}
	return p, nil
}

func partsFromOCI(a *oci.Artifact) (Parts, error) {
	if a.ConfigType != oci.KernelConfigType {
		return Parts{}, fmt.Errorf("config type %q, want %q", a.ConfigType, oci.KernelConfigType)
	}
	var cfg ociConfig
	if err := json.Unmarshal(a.Config, &cfg); err != nil {
		return Parts{}, fmt.Errorf("parse config: %w", err)
	}
	if len(cfg.Parts) != len(a.Parts) {
		return Parts{}, fmt.Errorf("config lists %d parts, the manifest has %d", len(cfg.Parts), len(a.Parts))
	}
	p := Parts{Manifest: cfg.Manifest}
	for i, l := range a.Parts {
		cp := cfg.Parts[i]
		if cp.MediaType != l.MediaType || "sha256:"+cp.SHA256 != l.Digest || cp.Size != l.Size {
			return Parts{}, fmt.Errorf("part %d is %s %s (%d bytes), the config says %s sha256:%s (%d bytes)",
				i+1, l.MediaType, l.Digest, l.Size, cp.MediaType, cp.SHA256, cp.Size)
		}
		var slot *string
		switch l.MediaType {
		case oci.KernelVmlinuxType:
			slot = &p.Vmlinux
		case oci.KernelModulesCpioType:
			slot = &p.ModulesCpio
		case oci.KernelInitrdType:
			slot = &p.Initrd
		case oci.KernelModulesTreeType:
			slot = &p.ModulesTar
		default:
			return Parts{}, fmt.Errorf("part %d: unknown media type %q", i+1, l.MediaType)
		}
		if *slot != "" {
			return Parts{}, fmt.Errorf("part %d: a second %s", i+1, l.MediaType)
		}
		*slot = l.Path
	}
	if p.Vmlinux == "" {
		return Parts{}, errors.New("no vmlinux part")
	}
	return p, nil
}

// ImportParts stores a kernel artifact from its parts (see PartsFromOCI),
// reproducing the original's directory: the parts are copied (the sources,
// cache blobs, stay untouched), the ID is recomputed from their content and
// must be the one the manifest names, and the modules tree is unpacked
// with every entry checked to stay inside it. On error nothing is left in
// kernelsDir.
func ImportParts(ctx context.Context, kernelsDir string, p Parts, progress func(string)) (*Artifact, error) {
	a, err := importParts(ctx, kernelsDir, p, progress)
	if err != nil {
		return nil, fmt.Errorf("import kernel %s: %w", p.Manifest.ID, err)
	}
	return a, nil
}

func importParts(ctx context.Context, kernelsDir string, p Parts, progress func(string)) (*Artifact, error) {
	m := p.Manifest
	if !validID(m.ID) {
		return nil, fmt.Errorf("invalid artifact id %q", m.ID)
	}
	if m.HasInitrd != (p.Initrd != "") {
		return nil, fmt.Errorf("manifest says has_initrd=%v, the initrd part is %q", m.HasInitrd, p.Initrd)
	}
	vmlinux, err := readFileLimited(p.Vmlinux, maxVmlinuxSize)
	if err != nil {
		return nil, fmt.Errorf("read vmlinux: %w", err)
	}
	if err := checkVmlinuxELF(vmlinux); err != nil {
		return nil, fmt.Errorf("check vmlinux: %w", err)
	}
	vmSum := sha256.Sum256(vmlinux)
	if got := hex.EncodeToString(vmSum[:]); got != m.VmlinuxSHA256 {
		return nil, fmt.Errorf("vmlinux has sha256 %s, the manifest says %s", got, m.VmlinuxSHA256)
	}

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
	progressf(progress, "copying kernel %s", m.ID[:12])
	if err := writeFileSync(filepath.Join(tmp, vmlinuxName), vmlinux); err != nil {
		return nil, err
	}
	vmlinux = nil
	var cpioSum, initrdSum []byte
	if p.ModulesCpio != "" {
		if cpioSum, err = copyHashed(p.ModulesCpio, filepath.Join(tmp, modulesCpioName)); err != nil {
			return nil, fmt.Errorf("copy modules.cpio: %w", err)
		}
	}
	if p.Initrd != "" {
		if initrdSum, err = copyHashed(p.Initrd, filepath.Join(tmp, initrdName)); err != nil {
			return nil, fmt.Errorf("copy initrd: %w", err)
		}
	}
	if id := artifactID(vmSum[:], cpioSum, initrdSum); id != m.ID {
		return nil, fmt.Errorf("content has id %s, the manifest says %s", id, m.ID)
	}
	if p.ModulesTar != "" {
		progressf(progress, "unpacking modules")
		modRoot := filepath.Join(tmp, modulesDirName)
		if err := extractModulesTar(ctx, p.ModulesTar, modRoot); err != nil {
			return nil, fmt.Errorf("unpack modules: %w", err)
		}
		if err := syncTree(modRoot); err != nil {
			return nil, err
		}
	}
	if m.BootModules == nil {
		m.BootModules = []string{}
	}
	progressf(progress, "storing kernel %s", m.ID[:12])
	a, err := commit(kernelsDir, tmp, m)
	if err != nil {
		return nil, fmt.Errorf("store artifact: %w", err)
	}
	committed = true
	return a, nil
}

// extractModulesTar unpacks the tar.gz at src into the new directory dst.
// Only directories, regular files and symlinks are accepted, every name
// must stay below dst, and no entry may sit under a symlink. Symlinks are
// created last, once all names are known, and each target must resolve
// inside dst without passing through another symlink: then resolving it
// lexically is what the kernel's path walk does. All writes go through an
// os.Root as well, so an escape the checks missed still fails.
func extractModulesTar(ctx context.Context, src, dst string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return err
	}
	if err := os.Mkdir(dst, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(dst)
	if err != nil {
		return err
	}
	defer root.Close()

	seen := map[string]bool{}
	links := map[string]string{} // name -> target
	var total int64
	tr := tar.NewReader(gz)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		name, err := safeTarPath(h.Name)
		if err != nil {
			return err
		}
		if name == "" {
			if h.Typeflag == tar.TypeDir {
				continue
			}
			return fmt.Errorf("entry %q: not a directory", h.Name)
		}
		if seen[name] {
			return fmt.Errorf("entry %q appears twice", h.Name)
		}
		seen[name] = true
		if len(seen) > maxModulesTreeEntries {
			return fmt.Errorf("more than %d entries", maxModulesTreeEntries)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if h.Size > maxModuleSize {
				return fmt.Errorf("entry %q: %d bytes, the limit is %d", h.Name, h.Size, maxModuleSize)
			}
			if total += h.Size; total > maxModulesTreeSize {
				return fmt.Errorf("more than %d bytes", int64(maxModulesTreeSize))
			}
			if err := writeRootFile(root, name, tr); err != nil {
				return err
			}
		case tar.TypeSymlink:
			links[name] = h.Linkname
		default:
			return fmt.Errorf("entry %q: type %q is not a directory, regular file or symlink", h.Name, h.Typeflag)
		}
	}
	for name := range seen {
		for d := path.Dir(name); d != "."; d = path.Dir(d) {
			if _, ok := links[d]; ok {
				return fmt.Errorf("entry %q is under the symlink %q", name, d)
			}
		}
	}
	names := make([]string, 0, len(links))
	for name := range links {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := checkLinkTarget(name, links[name], links); err != nil {
			return err
		}
		if d := path.Dir(name); d != "." {
			if err := root.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		if err := root.Symlink(links[name], name); err != nil {
			return err
		}
	}
	return nil
}

func writeRootFile(root *os.Root, name string, r io.Reader) error {
	if d := path.Dir(name); d != "." {
		if err := root.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	// Synced with the whole tree before commit.
	return f.Close()
}

// checkLinkTarget walks target from the link's directory: it must be
// relative, never climb above the root, and only its last component may
// be a symlink (itself checked the same way).
func checkLinkTarget(name, target string, links map[string]string) error {
	if target == "" || path.IsAbs(target) {
		return fmt.Errorf("symlink %q -> %q: target must be relative", name, target)
	}
	var cur []string
	if d := path.Dir(name); d != "." {
		cur = strings.Split(d, "/")
	}
	comps := strings.Split(target, "/")
	for i, c := range comps {
		switch c {
		case "", ".":
			continue
		case "..":
			if len(cur) == 0 {
				return fmt.Errorf("symlink %q -> %q points outside the modules tree", name, target)
			}
			cur = cur[:len(cur)-1]
		default:
			cur = append(cur, c)
			if _, ok := links[strings.Join(cur, "/")]; ok && i < len(comps)-1 {
				return fmt.Errorf("symlink %q -> %q passes through another symlink", name, target)
			}
		}
	}
	return nil
}
