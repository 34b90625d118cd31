package privop

import (
	"fmt"
	"regexp"
)

// Firecracker runs under firecracker-jailer, in a per-VM chroot the helper
// stages, as a uid of its own that no account and no other VM has (from
// the install's VMM uid range). These ops are the whole of that: stage and
// launch, connect bangerd to the VM's API or vsock socket, signal the VM's
// firecracker, and tear the jail down. The files a VM needs travel as fds
// opened by bangerd (SCM_RIGHTS beside the request), so the helper never
// opens an owner-chosen path; the binaries are the install's (install
// metadata), never a request's.

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
// through the jailer, as a uid and gid the helper picks for this VM alone.
// The binaries are the ones pinned in the install metadata. Tap, when set,
// is a tap the helper created; it is handed to the VM's uid so firecracker
// can open it by name.
type LaunchFirecracker struct {
	VMID  string     `json:"vm_id"`
	Tap   string     `json:"tap,omitempty"`
	Files []JailFile `json:"files"`
}

// LaunchFirecrackerResult is LaunchFirecracker's answer. PID is both the
// jailer's and firecracker's (the jailer execs in place).
type LaunchFirecrackerResult struct {
	PID      int    `json:"pid"`
	PIDStart uint64 `json:"pid_start"`
	UID      int    `json:"uid"`    // the VM's own uid (and gid)
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
	if o.Tap != "" {
		if err := ValidTapName(o.Tap); err != nil {
			return err
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

// Sockets of a jail that DialJail connects to.
const (
	SocketAPI   = "api"   // firecracker's API socket
	SocketVsock = "vsock" // the hybrid vsock unix socket
)

// DialJail connects to one of a running VM's jail sockets and answers
// with the connected socket (SCM_RIGHTS). The jail is the VM's uid's alone
// (the jailer makes its root 0700), so bangerd reaches the sockets only
// this way. Wait bounds (in milliseconds, at most 10 s) how long to wait
// for the socket to appear; the connection is refused unless the peer is
// the VM's recorded firecracker.
type DialJail struct {
	VMID   string `json:"vm_id"`
	Socket string `json:"socket"`
	WaitMS int    `json:"wait_ms,omitempty"`
}

// MaxDialWaitMS bounds DialJail's WaitMS.
const MaxDialWaitMS = 10000

// Name implements Op.
func (DialJail) Name() string { return "dial_jail" }

// Validate implements Op.
func (o DialJail) Validate() error {
	if err := ValidVMID(o.VMID); err != nil {
		return err
	}
	if o.Socket != SocketAPI && o.Socket != SocketVsock {
		return fmt.Errorf("socket %q: want %q or %q", truncate(o.Socket, 32), SocketAPI, SocketVsock)
	}
	if o.WaitMS < 0 || o.WaitMS > MaxDialWaitMS {
		return fmt.Errorf("wait_ms %d: want 0 to %d", o.WaitMS, MaxDialWaitMS)
	}
	return nil
}

// Signals SignalVMM sends.
const (
	SignalTerm = "term"
	SignalKill = "kill"
)

// SignalVMM signals a VM's running firecracker (bangerd cannot: it runs as
// another uid). Only the recorded process, by pid and start time, is
// signalled, through a pidfd.
type SignalVMM struct {
	VMID   string `json:"vm_id"`
	Signal string `json:"signal"`
}

// Name implements Op.
func (SignalVMM) Name() string { return "signal_vmm" }

// Validate implements Op.
func (o SignalVMM) Validate() error {
	if err := ValidVMID(o.VMID); err != nil {
		return err
	}
	if o.Signal != SignalTerm && o.Signal != SignalKill {
		return fmt.Errorf("signal %q: want %q or %q", truncate(o.Signal, 32), SignalTerm, SignalKill)
	}
	return nil
}

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
