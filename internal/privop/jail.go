package privop

import (
	"fmt"
	"path/filepath"
	"regexp"
)

// Firecracker runs under firecracker-jailer, in a per-VM chroot the helper
// stages, as the owner's uid. These ops are the whole of that: stage and
// launch, hand the API socket to the owner, and tear the jail down. The
// files a VM needs travel as fds opened by bangerd (SCM_RIGHTS beside the
// request), so the helper never opens an owner-chosen path.

// Jail file roles.
const (
	JailConsole = "console" // the jailer's (and firecracker's) stdout and stderr
	JailKernel  = "kernel"  // hard-linked (or copied) into the chroot
	JailInitrd  = "initrd"  // hard-linked (or copied) into the chroot
	JailDrive   = "drive"   // bind-mounted into the chroot (read-only if asked)
)

// JailAPISocket is where firecracker creates its API socket, inside the
// chroot; JailVsock is the vsock unix socket banger configures.
const (
	JailAPISocket = "/run/firecracker.socket"
	JailVsock     = "/v.sock"
)

// JailFile describes one fd passed with LaunchFirecracker, in order.
type JailFile struct {
	Role     string `json:"role"`
	Name     string `json:"name,omitempty"` // chroot-relative file name; empty for the console
	ReadOnly bool   `json:"read_only,omitempty"`
}

// LaunchFirecracker stages the jail of one VM and starts firecracker in it
// through the jailer. The uid and gid are the helper's registered owner,
// never the request's. The binaries must be root-owned, not writable by
// group or others, and not symlinks, along their whole path.
type LaunchFirecracker struct {
	VMID           string     `json:"vm_id"`
	FirecrackerBin string     `json:"firecracker_bin"`
	JailerBin      string     `json:"jailer_bin"`
	Files          []JailFile `json:"files"`
}

// LaunchFirecrackerResult is LaunchFirecracker's answer. PID is both the
// jailer's and firecracker's (the jailer execs in place).
type LaunchFirecrackerResult struct {
	PID      int    `json:"pid"`
	PIDStart uint64 `json:"pid_start"`
	Chroot   string `json:"chroot"` // host path of the jail's root directory
}

// Name implements Op.
func (LaunchFirecracker) Name() string { return "launch_firecracker" }

var (
	vmIDRe     = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)
	jailNameRe = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,31}$`)
)

// reservedJailNames are paths the jailer or the helper create themselves.
var reservedJailNames = map[string]bool{
	"dev": true, "run": true, "usr": true, "lib": true, "lib64": true, "firecracker": true,
	"firecracker.pid": true, "v.sock": true,
}

// ValidVMID checks a VM id as the jailer's --id: ASCII letters, digits and
// '-', 1 to 64 characters (the jailer's own check accepts any Unicode
// alphanumeric).
func ValidVMID(id string) error {
	if !vmIDRe.MatchString(id) {
		return fmt.Errorf("vm id %q: want 1-64 of [A-Za-z0-9-]", truncate(id, 80))
	}
	return nil
}

// Validate implements Op.
func (o LaunchFirecracker) Validate() error {
	if err := ValidVMID(o.VMID); err != nil {
		return err
	}
	for _, p := range []string{o.FirecrackerBin, o.JailerBin} {
		if !filepath.IsAbs(p) || filepath.Clean(p) != p || len(p) > 512 {
			return fmt.Errorf("binary %q: want a clean absolute path", truncate(p, 80))
		}
	}
	count := map[string]int{}
	names := map[string]bool{}
	for i, f := range o.Files {
		count[f.Role]++
		switch f.Role {
		case JailConsole:
			if f.Name != "" || f.ReadOnly {
				return fmt.Errorf("file %d: the console takes no name or read_only", i)
			}
			continue
		case JailKernel, JailInitrd:
			if f.ReadOnly {
				return fmt.Errorf("file %d: read_only is for drives", i)
			}
		case JailDrive:
		default:
			return fmt.Errorf("file %d: unknown role %q", i, truncate(f.Role, 32))
		}
		if !jailNameRe.MatchString(f.Name) || reservedJailNames[f.Name] {
			return fmt.Errorf("file %d: name %q: want [a-z][a-z0-9_.-]{0,31}, not a reserved name", i, truncate(f.Name, 40))
		}
		if names[f.Name] {
			return fmt.Errorf("file %d: name %q given twice", i, f.Name)
		}
		names[f.Name] = true
	}
	if count[JailConsole] != 1 || count[JailKernel] != 1 {
		return fmt.Errorf("files: want exactly one console and one kernel")
	}
	if count[JailInitrd] > 1 || count[JailDrive] > 8 {
		return fmt.Errorf("files: at most one initrd and eight drives")
	}
	return nil
}

// ChownAPISocket waits (bounded) for firecracker's API socket in the VM's
// jail and gives it to the owner, by fd, never following a symlink.
type ChownAPISocket struct {
	VMID string `json:"vm_id"`
}

// Name implements Op.
func (ChownAPISocket) Name() string { return "chown_api_socket" }

// Validate implements Op.
func (o ChownAPISocket) Validate() error { return ValidVMID(o.VMID) }

// CleanupJail removes a VM's jail: its mounts, then its directory. It
// refuses while the VM's firecracker still runs, and a jail that is
// already gone is fine.
type CleanupJail struct {
	VMID string `json:"vm_id"`
}

// Name implements Op.
func (CleanupJail) Name() string { return "cleanup_jail" }

// Validate implements Op.
func (o CleanupJail) Validate() error { return ValidVMID(o.VMID) }
