package kernel

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Artifact file names inside kernelsDir/<id>/.
const (
	vmlinuxName     = "vmlinux"
	modulesCpioName = "modules.cpio"
	initrdName      = "initrd.img"
	modulesDirName  = "modules"
	manifestName    = "manifest.json"
)

// Source kinds recorded in the manifest.
const (
	SourceDeb   = "deb"
	SourceFiles = "files"
)

// Manifest is the manifest.json stored with every artifact.
type Manifest struct {
	ID             string    `json:"id"`
	Version        string    `json:"version"`
	Source         string    `json:"source"`
	SourceName     string    `json:"source_name"`
	PackageVersion string    `json:"package_version,omitempty"`
	Created        time.Time `json:"created"`
	VmlinuxSHA256  string    `json:"vmlinux_sha256"`
	BootModules    []string  `json:"boot_modules"`
	HasInitrd      bool      `json:"has_initrd"`
}

// Artifact is an imported kernel on disk. Optional parts have empty paths
// when absent. ModulesDir holds <version>/... (the layout of /lib/modules).
type Artifact struct {
	ID          string
	Dir         string
	Version     string
	Vmlinux     string
	ModulesCpio string
	Initrd      string
	ModulesDir  string
	Manifest    Manifest
}

// artifactID derives the content address of an artifact:
//
//	hex(sha256("banger-kernel-v1\x00" || sha256(vmlinux) || sha256(modules.cpio) || sha256(initrd.img)))
//
// where an absent part contributes sha256 of the empty string. Hashing the
// per-part digests in fixed slots keeps the encoding unambiguous (a deb's
// modules.cpio and a user's identical initrd give different IDs). The full
// modules/ tree is not hashed: it comes from the same package as the
// modules.cpio, and hashing thousands of files would slow every import.
func artifactID(vmlinuxSum, modulesCpioSum, initrdSum []byte) string {
	empty := sha256.Sum256(nil)
	h := sha256.New()
	_, _ = io.WriteString(h, "banger-kernel-v1\x00") // hashes never fail to write
	for _, s := range [][]byte{vmlinuxSum, modulesCpioSum, initrdSum} {
		if s == nil {
			s = empty[:]
		}
		h.Write(s)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func validID(id string) bool {
	if len(id) != sha256.Size*2 {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Load opens the artifact id in kernelsDir.
func Load(kernelsDir, id string) (*Artifact, error) {
	if !validID(id) {
		return nil, fmt.Errorf("load kernel: invalid artifact id %q", id)
	}
	dir := filepath.Join(kernelsDir, id)
	data, err := os.ReadFile(filepath.Join(dir, manifestName))
	if err != nil {
		return nil, fmt.Errorf("load kernel %s: %w", id, err)
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("load kernel %s: parse manifest: %w", id, err)
	}
	if m.ID != id {
		return nil, fmt.Errorf("load kernel %s: manifest names id %q", id, m.ID)
	}
	a := &Artifact{ID: id, Dir: dir, Version: m.Version, Manifest: m}
	exists := func(name string) string {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
		return ""
	}
	if a.Vmlinux = exists(vmlinuxName); a.Vmlinux == "" {
		return nil, fmt.Errorf("load kernel %s: vmlinux missing", id)
	}
	a.ModulesCpio = exists(modulesCpioName)
	a.Initrd = exists(initrdName)
	a.ModulesDir = exists(modulesDirName)
	if m.HasInitrd && a.Initrd == "" {
		return nil, fmt.Errorf("load kernel %s: initrd.img missing", id)
	}
	return a, nil
}

// Remove deletes the artifact id; removing an absent artifact succeeds. The
// directory is renamed away first so a concurrent Load never sees a
// half-deleted artifact.
func Remove(kernelsDir, id string) error {
	if !validID(id) {
		return fmt.Errorf("remove kernel: invalid artifact id %q", id)
	}
	dir := filepath.Join(kernelsDir, id)
	trash := filepath.Join(kernelsDir, ".tmp-rm-"+id+"-"+randSuffix())
	if err := os.Rename(dir, trash); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("remove kernel %s: %w", id, err)
	}
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("remove kernel %s: %w", id, err)
	}
	return nil
}

func randSuffix() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// newTempDir creates the staging directory for an import inside kernelsDir,
// so the final rename stays on one filesystem.
func newTempDir(kernelsDir string) (string, error) {
	if err := os.MkdirAll(kernelsDir, 0o755); err != nil {
		return "", err
	}
	return os.MkdirTemp(kernelsDir, ".tmp-import-")
}

// commit publishes a fully written staging directory as kernelsDir/<id>.
// An existing artifact with the same ID has the same content, so the
// staging copy is discarded and the existing one returned.
func commit(kernelsDir, tmp string, m Manifest) (*Artifact, error) {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := writeFileSync(filepath.Join(tmp, manifestName), append(data, '\n')); err != nil {
		return nil, err
	}
	if err := syncDir(tmp); err != nil {
		return nil, err
	}
	final := filepath.Join(kernelsDir, m.ID)
	if _, err := os.Stat(filepath.Join(final, manifestName)); err == nil {
		os.RemoveAll(tmp)
		return Load(kernelsDir, m.ID)
	}
	if err := os.Rename(tmp, final); err != nil {
		// A concurrent import of the same kernel may have won the race.
		if _, serr := os.Stat(filepath.Join(final, manifestName)); serr == nil {
			os.RemoveAll(tmp)
			return Load(kernelsDir, m.ID)
		}
		return nil, err
	}
	if err := syncDir(kernelsDir); err != nil {
		return nil, err
	}
	return Load(kernelsDir, m.ID)
}

func writeFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// syncTree fsyncs every file and directory below root, so that the rename
// in commit publishes durable content.
func syncTree(root string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && !d.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		return f.Sync()
	})
}

func progressf(progress func(string), format string, args ...any) {
	if progress != nil {
		progress(fmt.Sprintf(format, args...))
	}
}

// CleanStale removes staging directories (.tmp-*) left in kernelsDir by an
// import or removal that was interrupted. It must only run while no import
// is in progress, e.g. at daemon start.
func CleanStale(kernelsDir string) error {
	entries, err := os.ReadDir(kernelsDir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("clean kernels dir: %w", err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".tmp-") {
			if err := os.RemoveAll(filepath.Join(kernelsDir, e.Name())); err != nil {
				return fmt.Errorf("clean kernels dir: %w", err)
			}
		}
	}
	return nil
}
