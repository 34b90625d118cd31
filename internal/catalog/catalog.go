// Package catalog owns the short names banger resolves to registry
// references ("debian-bookworm" -> "registry/repo@sha256:..."). Every
// entry is pinned by digest, so a short name always means the same bytes.
// banger embeds a default catalog; `catalog` in the config replaces it.
package catalog

import (
	_ "embed"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
)

// Entry is one short name.
type Entry struct {
	Ref         string `toml:"ref"`
	Kernel      string `toml:"kernel,omitempty"` // images: the catalog kernel to boot them with
	Description string `toml:"description,omitempty"`
}

// Catalog maps short names to pinned references.
type Catalog struct {
	Images  map[string]Entry `toml:"images"`
	Kernels map[string]Entry `toml:"kernels"`
}

//go:embed default.toml
var defaultTOML string

var (
	pinnedRe = regexp.MustCompile(`^[a-z0-9][a-z0-9.:/_-]*@sha256:[0-9a-f]{64}$`)
	shortRe  = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{0,62}$`)
)

// Parse reads a catalog and checks every entry: a short name, and a
// reference pinned by sha256 digest.
func Parse(name, text string) (*Catalog, error) {
	var c Catalog
	md, err := toml.Decode(text, &c)
	if err != nil {
		return nil, fmt.Errorf("parse catalog %s: %w", name, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		sort.Strings(keys)
		return nil, fmt.Errorf("parse catalog %s: unknown key(s): %s", name, strings.Join(keys, ", "))
	}
	for kind, m := range map[string]map[string]Entry{"images": c.Images, "kernels": c.Kernels} {
		for short, e := range m {
			if !shortRe.MatchString(short) {
				return nil, fmt.Errorf("catalog %s: %s.%s: want a short name of [a-z0-9.-]", name, kind, short)
			}
			if !pinnedRe.MatchString(e.Ref) {
				return nil, fmt.Errorf("catalog %s: %s.%s: ref %q must be pinned by digest (name@sha256:<64 hex>)", name, kind, short, e.Ref)
			}
			if e.Kernel != "" && c.Kernels[e.Kernel].Ref == "" {
				return nil, fmt.Errorf("catalog %s: images.%s: kernel %q is not in the catalog", name, short, e.Kernel)
			}
		}
	}
	return &c, nil
}

// Load reads the catalog at path, or the embedded one when path is "".
func Load(path string) (*Catalog, error) {
	if path == "" {
		return Parse("(embedded)", defaultTOML)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read catalog: %w", err)
	}
	return Parse(path, string(data))
}

// Image resolves a short image name; ok is false when ref is not one
// (a full reference is used as it is).
func (c *Catalog) Image(ref string) (Entry, bool) {
	e, ok := c.Images[ref]
	return e, ok
}

// Kernel resolves a short kernel name.
func (c *Catalog) Kernel(ref string) (Entry, bool) {
	e, ok := c.Kernels[ref]
	return e, ok
}
