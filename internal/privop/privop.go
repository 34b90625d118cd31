// Package privop is the seam for every privileged step banger takes. The
// daemon runs as the owner and holds no privilege; anything that needs root
// is one of the typed operations here, each with Validate(), executed by a
// Host. Until the root helper exists, the only Host is the in-process one,
// which refuses unless the daemon itself runs as root.
package privop

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Op is one privileged operation.
type Op interface {
	// Name identifies the op on the wire and in logs.
	Name() string
	// Validate checks every field; a Host never acts on an invalid op.
	Validate() error
}

// Host executes privileged operations.
type Host interface {
	Do(ctx context.Context, op Op, progress func(string)) error
}

// BuildDebootstrapImage builds a Debian image with debootstrap, which must
// run as root (it chroots and creates device nodes).
type BuildDebootstrapImage struct {
	Suite   string
	Mirror  string
	Out     string // absolute path of the ext4 to write
	WorkDir string // absolute staging root
}

var suiteRe = regexp.MustCompile(`^[a-z][a-z0-9-]{1,31}$`)

// Name implements Op.
func (BuildDebootstrapImage) Name() string { return "build_debootstrap_image" }

// Validate implements Op.
func (o BuildDebootstrapImage) Validate() error {
	if !suiteRe.MatchString(o.Suite) {
		return fmt.Errorf("suite %q: want a Debian suite name such as bookworm", o.Suite)
	}
	if o.Mirror != "" && !strings.HasPrefix(o.Mirror, "http://") && !strings.HasPrefix(o.Mirror, "https://") {
		return fmt.Errorf("mirror %q: want an http(s) URL", o.Mirror)
	}
	for _, p := range []string{o.Out, o.WorkDir} {
		if !filepath.IsAbs(p) || filepath.Clean(p) != p {
			return fmt.Errorf("path %q: want a clean absolute path", p)
		}
	}
	return nil
}

// Builder does the actual work of an op in-process.
type Builder func(ctx context.Context, op Op, progress func(string)) error

// InProcess is the Host used until the root helper exists: it validates
// and runs ops in bangerd itself, which only works when bangerd is root.
type InProcess struct {
	Run Builder
}

// Do implements Host.
func (h InProcess) Do(ctx context.Context, op Op, progress func(string)) error {
	if err := op.Validate(); err != nil {
		return fmt.Errorf("%s: %w", op.Name(), err)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%s needs root: run it as root until banger's root helper is installed", op.Name())
	}
	return h.Run(ctx, op, progress)
}
