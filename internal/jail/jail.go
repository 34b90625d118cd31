// Package jail owns the host side of banger's Firecracker jails, as the
// root helper runs them: the jail's layout and the jailer's argv (pure
// builders), the checks on the jail base directory and on the binaries,
// staging one VM's chroot (directories, hard links or copies, bind mounts
// and device nodes, every one created through a directory fd without
// following a symlink and never outside the chroot), starting the jailer,
// connecting to the VM's sockets for bangerd, and tearing a jail down
// (unmount, then remove). Who may ask for any of it is decided elsewhere
// (internal/helper, with internal/privop's ops).
package jail

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"banger/internal/privop"
	"banger/internal/trustpath"
)

// Names inside a jail.
const (
	// RootDir is the chroot's name inside a VM's jail directory; the jailer
	// expects <base>/<exec-name>/<vm-id>/root.
	RootDir = "root"
	// LogFile and MetricsFile are created empty, owned by the VM's uid, for
	// firecracker's logger and metrics.
	LogFile     = "fc.log"
	MetricsFile = "fc.metrics"
)

// Errors wrapped by refusals, so callers can tell them from failures.
var (
	// ErrExists: the VM's jail directory is already there. It must be
	// fresh: reusing a directory someone prepared is how a jail is
	// subverted.
	ErrExists = errors.New("jail already exists")
	// ErrUnsafe: a path that is not root's alone (a symlink, a file or
	// directory another user owns or may write), or an fd that does not
	// grant the access it is used for.
	ErrUnsafe = trustpath.ErrUnsafe
	// ErrLeftBehind: a failed Stage could not undo all it did; the jail
	// directory is still there, for Remove.
	ErrLeftBehind = errors.New("jail left behind")
)

// Layout is where one VM's jail lives: <Base>/<ExecName>/<VMID>/root, the
// jailer's own layout for --chroot-base-dir Base.
type Layout struct {
	Base     string
	ExecName string
	VMID     string
}

// NewLayout checks its parts and returns the layout. Base must be a clean
// absolute path, execName a single path element, vmID a valid jailer id.
func NewLayout(base, execName, vmID string) (Layout, error) {
	if !filepath.IsAbs(base) || filepath.Clean(base) != base || base == "/" {
		return Layout{}, fmt.Errorf("jail base %q: want a clean absolute path other than /", base)
	}
	if err := validName(execName); err != nil {
		return Layout{}, fmt.Errorf("exec name: %w", err)
	}
	if err := privop.ValidVMID(vmID); err != nil {
		return Layout{}, err
	}
	return Layout{Base: base, ExecName: execName, VMID: vmID}, nil
}

// ExecDir is <base>/<exec-name>, shared by every VM of one binary name.
func (l Layout) ExecDir() string { return filepath.Join(l.Base, l.ExecName) }

// VMDir is <base>/<exec-name>/<vm-id>: everything of the VM's jail is below
// it, and removing it removes the jail.
func (l Layout) VMDir() string { return filepath.Join(l.Base, l.ExecName, l.VMID) }

// Chroot is the jail's root directory as the host sees it.
func (l Layout) Chroot() string { return filepath.Join(l.VMDir(), RootDir) }

// APISocket is firecracker's API socket as the host sees it.
func (l Layout) APISocket() string { return filepath.Join(l.Chroot(), privop.JailAPISocket) }

// ExecName is the name the jailer gives the firecracker binary (and its
// directory in the base): the base name of its path. The path must hold no
// symlink (CheckBinary), so this matches the jailer's canonicalized name.
func ExecName(firecrackerBin string) string { return filepath.Base(firecrackerBin) }

// ArgvSpec is what the jailer's argv is made of.
type ArgvSpec struct {
	JailerBin      string
	FirecrackerBin string
	VMID           string
	UID, GID       int
	Base           string
}

// JailerArgv returns the jailer's argv. There is no --daemonize and no
// --new-pid-ns: the jailer execs firecracker in place, so the pid the
// helper starts is firecracker's, which banger (and the SDK) rely on.
//
// There is no cgroup flag either, on any host. With its default cgroup
// version (1) and no --cgroup the jailer does no cgroup work at all, not
// even a look for a v1 hierarchy, so it runs on cgroup2-only hosts too.
// With --cgroup-version 2 it would move itself into
// <cgroup2 root>/<exec name> (or --parent-cgroup) whenever that cgroup
// exists: a cgroup banger neither made nor owns, and a write that fails
// under a unit with ProtectControlGroups or when that cgroup has domain
// controllers enabled.
func JailerArgv(s ArgvSpec) []string {
	return []string{
		s.JailerBin,
		"--id", s.VMID,
		"--exec-file", s.FirecrackerBin,
		"--uid", strconv.Itoa(s.UID),
		"--gid", strconv.Itoa(s.GID),
		"--chroot-base-dir", s.Base,
		"--", "--api-sock", privop.JailAPISocket,
	}
}

// validName accepts a single path element that names a new file.
func validName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("name %q: want a file name", name)
	case len(name) > 255:
		return fmt.Errorf("name %q...: longer than 255 bytes", name[:32])
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("name %q: want a single path element", name)
	}
	return nil
}
