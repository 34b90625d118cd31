// Package firecracker is the Firecracker driver. Each VM's firecracker runs
// under firecracker-jailer, as the owner's uid, in a chroot the root helper
// stages from files bangerd opens and passes as fds. bangerd then configures
// and boots it through its API socket (configure.go), and reaches
// the guest agent over the hybrid vsock unix socket. Paths inside the jail
// exceed AF_UNIX's 108 bytes easily, so bangerd dials both sockets through
// short symlinks in the VM's runtime dir.
package firecracker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/agentproto"
	"banger/internal/privop"
	"banger/internal/trustpath"
	"banger/internal/vmm"
)

// Name of this driver.
const Name = "firecracker"

// Names of the short symlinks in the VM's runtime dir.
const (
	apiLink   = "fc.sock"
	vsockLink = "v.sock"
)

// Names of the files inside the jail.
const (
	jailKernel  = "vmlinux"
	jailInitrd  = "initrd"
	jailLog     = "/fc.log"
	jailMetrics = "/fc.metrics"
)

// apiWait bounds how long firecracker may take to create its API socket.
const apiWait = 10 * time.Second

// Helper is the root helper's part of a launch.
type Helper interface {
	LaunchFirecracker(ctx context.Context, op privop.LaunchFirecracker, files []*os.File) (privop.LaunchFirecrackerResult, error)
	ChownAPISocket(ctx context.Context, vmID string) error
	CleanupJail(ctx context.Context, vmID string) error
}

// Driver launches firecracker through the jailer.
type Driver struct {
	FirecrackerBin string
	JailerBin      string
	Helper         Helper
	// KVM reports whether /dev/kvm can really run guests (the QEMU
	// driver's probe knows); nil means unknown.
	KVM func(ctx context.Context) (bool, string)
}

var _ vmm.Driver = (*Driver)(nil)

// Name implements vmm.Driver.
func (d *Driver) Name() string { return Name }

// Probe implements vmm.Driver: the binaries must be usable and there must
// be a helper to run the jailer.
func (d *Driver) Probe(ctx context.Context) vmm.Probe {
	for _, b := range []struct{ what, path string }{{"firecracker", d.FirecrackerBin}, {"jailer", d.JailerBin}} {
		if err := CheckBinary(b.path); err != nil {
			return vmm.Probe{Reason: fmt.Sprintf("%s: %v", b.what, err)}
		}
	}
	if d.Helper == nil {
		return vmm.Probe{Reason: "firecracker runs under the jailer, which needs banger's root helper (banger system run or install)"}
	}
	p := vmm.Probe{Available: true, Accel: "kvm"}
	if d.KVM != nil {
		if ok, why := d.KVM(ctx); !ok {
			p.Reason = "KVM unusable here (" + why + "): guests may not boot"
		}
	}
	return p
}

// CheckBinary applies the helper's own check (trustpath.Binary) ahead of
// time, so doctor and the VMM choice can say why firecracker cannot run.
func CheckBinary(path string) error {
	if path == "" {
		return errors.New("not configured")
	}
	return trustpath.Binary(path, 0)
}

// jailFiles opens what the jail needs, in the order the op lists them.
func jailFiles(spec vmm.Spec) (privop.LaunchFirecracker, []*os.File, error) {
	op := privop.LaunchFirecracker{VMID: spec.ID}
	for _, dr := range spec.Drives {
		if dr.Format != "" {
			return op, nil, fmt.Errorf("drive %s is a %s overlay, and firecracker takes raw disks only: start this VM with vmm = qemu, or commit it into an image", dr.ID, dr.Format)
		}
	}
	var files []*os.File
	add := func(f privop.JailFile, path string, flag int) error {
		fh, err := os.OpenFile(path, flag, 0o600)
		if err != nil {
			return err
		}
		op.Files = append(op.Files, f)
		files = append(files, fh)
		return nil
	}
	err := add(privop.JailFile{Role: privop.JailConsole}, spec.ConsoleLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND|os.O_TRUNC)
	if err == nil {
		err = add(privop.JailFile{Role: privop.JailKernel, Name: jailKernel}, spec.Kernel, os.O_RDONLY)
	}
	if err == nil && spec.Initrd != "" {
		err = add(privop.JailFile{Role: privop.JailInitrd, Name: jailInitrd}, spec.Initrd, os.O_RDONLY)
	}
	for _, dr := range spec.Drives {
		if err != nil {
			break
		}
		jf := privop.JailFile{Role: privop.JailDrive, Name: dr.ID, ReadOnly: dr.ReadOnly}
		if dr.File != nil {
			// Already open (a snapshot device): the helper gets a copy
			// and mknods a block device into the jail.
			var fh *os.File
			if fh, err = dupFile(dr.File); err == nil {
				op.Files = append(op.Files, jf)
				files = append(files, fh)
			}
			continue
		}
		flag := os.O_RDWR
		if dr.ReadOnly {
			flag = os.O_RDONLY
		}
		err = add(jf, dr.Path, flag)
	}
	if err != nil {
		closeAll(files)
		return op, nil, fmt.Errorf("open jail files: %w", err)
	}
	return op, files, nil
}

// dupFile returns a copy of f that closes independently.
func dupFile(f *os.File) (*os.File, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("duplicate %s: %w", f.Name(), err)
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// Start implements vmm.Driver.
func (d *Driver) Start(ctx context.Context, spec vmm.Spec) (_ *vmm.Process, err error) {
	if p := d.Probe(ctx); !p.Available {
		return nil, fmt.Errorf("start firecracker: %s", p.Reason)
	}
	if spec.ConsoleLog == "" {
		return nil, errors.New("start firecracker: no console log path")
	}
	if err := os.MkdirAll(spec.RunDir, 0o700); err != nil {
		return nil, fmt.Errorf("start firecracker: %w", err)
	}
	op, files, err := jailFiles(spec)
	if err != nil {
		return nil, fmt.Errorf("start firecracker: %w", err)
	}
	op.FirecrackerBin, op.JailerBin = d.FirecrackerBin, d.JailerBin
	res, err := d.Helper.LaunchFirecracker(ctx, op, files)
	closeAll(files)
	if err != nil {
		return nil, fmt.Errorf("start firecracker: %w", err)
	}
	proc, err := vmm.NewProcess(vmm.Handle{
		VMM: Name, PID: res.PID, PIDStart: res.PIDStart, Accel: "kvm", JailID: spec.ID,
		AgentSock: filepath.Join(spec.RunDir, vsockLink), AgentPort: agentproto.VsockPort,
	})
	if err != nil {
		_ = d.Helper.CleanupJail(context.WithoutCancel(ctx), spec.ID)
		return nil, fmt.Errorf("start firecracker: %w", err)
	}
	defer func() {
		if err != nil {
			_ = proc.Signal(syscall.SIGKILL)
			wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_ = proc.Wait(wctx)
			cancel()
			_ = d.Helper.CleanupJail(context.WithoutCancel(ctx), spec.ID)
			removeLinks(spec.RunDir)
		}
	}()
	apiSock := filepath.Join(spec.RunDir, apiLink)
	if err := relink(filepath.Join(res.Chroot, privop.JailAPISocket), apiSock); err != nil {
		return nil, fmt.Errorf("start firecracker: %w", err)
	}
	if err := relink(filepath.Join(res.Chroot, privop.JailVsock), proc.Handle.AgentSock); err != nil {
		return nil, fmt.Errorf("start firecracker: %w", err)
	}
	// firecracker creates its API socket as the owner already, but the
	// jailer's directories and umask are not ours to rely on: the helper
	// chowns the socket the moment it appears, while we wait for it.
	chowned := make(chan error, 1)
	go func() { chowned <- d.Helper.ChownAPISocket(ctx, spec.ID) }()
	waitErr := waitAPI(ctx, apiSock, proc)
	chownErr := <-chowned
	if waitErr != nil {
		return nil, fmt.Errorf("start firecracker: %w", waitErr)
	}
	if chownErr != nil {
		return nil, fmt.Errorf("start firecracker: hand the API socket over: %w", chownErr)
	}
	if err := Configure(ctx, spec, DialPath(apiSock)); err != nil {
		return nil, err
	}
	return proc, nil
}

// relink points link at target, replacing a stale link.
func relink(target, link string) error {
	if err := os.Remove(link); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return os.Symlink(target, link)
}

func removeLinks(runDir string) {
	for _, l := range []string{apiLink, vsockLink} {
		_ = os.Remove(filepath.Join(runDir, l))
	}
}

// waitAPI polls the API socket (through its short link) until firecracker
// answers, it exits, or apiWait passes.
func waitAPI(ctx context.Context, sock string, proc *vmm.Process) error {
	ctx, cancel := context.WithTimeout(ctx, apiWait)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}, Timeout: time.Second}
	defer hc.CloseIdleConnections()
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://localhost/", nil)
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET / answered %s", resp.Status)
		}
		last = err
		select {
		case <-proc.Exited():
			return errors.New("firecracker exited before its API came up (see the console log)")
		case <-ctx.Done():
			return fmt.Errorf("firecracker API not up within %s: %w", apiWait, last)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Adopt implements vmm.Driver: same pid and start time, and the process is
// firecracker running this VM's jail id. The jailer's pid file is never
// read: it lives where the owner can write.
func (d *Driver) Adopt(h vmm.Handle) (*vmm.Process, error) {
	if h.JailID == "" {
		return nil, vmm.ErrGone
	}
	argv, err := vmm.Cmdline(h.PID)
	if err != nil || !isOurs(argv, h.JailID) {
		return nil, vmm.ErrGone
	}
	return vmm.NewProcess(h)
}

func isOurs(argv []string, id string) bool {
	if len(argv) == 0 || !strings.Contains(filepath.Base(argv[0]), "firecracker") {
		return false
	}
	for i, a := range argv {
		if a == "--id="+id || (a == "--id" && i+1 < len(argv) && argv[i+1] == id) {
			return true
		}
	}
	return false
}

// OpensTapByName tells bangerd that firecracker opens the VM's tap itself
// (inside its jail, as the owner, who owns the tap).
func (d *Driver) OpensTapByName() bool { return true }

// Release implements the cleanup after the VMM has exited: the jail goes
// (through the helper), and so do the socket links.
func (d *Driver) Release(ctx context.Context, h vmm.Handle, runDir string) error {
	removeLinks(runDir)
	if h.JailID == "" || d.Helper == nil {
		return nil
	}
	return d.Helper.CleanupJail(ctx, h.JailID)
}
