// Package firecracker is the Firecracker driver. Each VM's firecracker runs
// under firecracker-jailer, as a uid of the VM's own, in a chroot the root
// helper stages from files bangerd opens and passes as fds. Nothing of the
// jail is reachable by the owner: bangerd gets connections to the VM's API
// and vsock sockets from the helper, configures and boots the VM through
// the API (configure.go), reaches the guest agent over hybrid vsock, and
// has the helper signal the process.
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

// Names of the files inside the jail.
const (
	jailKernel  = "vmlinux"
	jailInitrd  = "initrd"
	jailLog     = "/fc.log"
	jailMetrics = "/fc.metrics"
)

// apiWait bounds how long firecracker may take to create its API socket.
const apiWait = 10 * time.Second

// Helper is the root helper's part: launch, reach and clean up a jail.
type Helper interface {
	LaunchFirecracker(ctx context.Context, op privop.LaunchFirecracker, files []*os.File) (privop.LaunchFirecrackerResult, error)
	DialJail(ctx context.Context, vmID, socket string, wait time.Duration) (net.Conn, error)
	SignalVMM(ctx context.Context, vmID, signal string) error
	CleanupJail(ctx context.Context, vmID string) error
}

// Driver launches firecracker through the jailer.
type Driver struct {
	// FirecrackerBin and JailerBin are the binaries the install pinned,
	// as the helper reports them (the helper runs no others); Off is the
	// helper's reason they cannot run, empty when they can.
	FirecrackerBin string
	JailerBin      string
	Off            string
	Helper         Helper
	// KVM reports whether /dev/kvm can really run guests (the QEMU
	// driver's probe knows); nil means unknown.
	KVM func(ctx context.Context) (bool, string)
}

var _ vmm.Driver = (*Driver)(nil)

// Name implements vmm.Driver.
func (d *Driver) Name() string { return Name }

// Probe implements vmm.Driver: there must be a helper to run the jailer,
// and the binaries it pinned must be usable.
func (d *Driver) Probe(ctx context.Context) vmm.Probe {
	if d.Helper == nil {
		return vmm.Probe{Reason: "firecracker runs under the jailer, which needs banger's root helper (banger system run or install)"}
	}
	if d.Off != "" {
		return vmm.Probe{Reason: "firecracker cannot run: " + d.Off}
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
	if spec.Net != nil {
		op.Tap = spec.Net.TapName
	}
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
	op, files, err := jailFiles(spec)
	if err != nil {
		return nil, fmt.Errorf("start firecracker: %w", err)
	}
	res, err := d.Helper.LaunchFirecracker(ctx, op, files)
	closeAll(files)
	if err != nil {
		return nil, fmt.Errorf("start firecracker: %w", err)
	}
	proc, err := d.process(vmm.Handle{
		VMM: Name, PID: res.PID, PIDStart: res.PIDStart, Accel: "kvm", JailID: spec.ID,
		AgentPort: agentproto.VsockPort,
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
		}
	}()
	dial := func(ctx context.Context) (net.Conn, error) {
		return d.Helper.DialJail(ctx, spec.ID, privop.SocketAPI, apiWait)
	}
	if err := waitAPI(ctx, dial, proc); err != nil {
		return nil, fmt.Errorf("start firecracker: %w", err)
	}
	if err := Configure(ctx, spec, dial); err != nil {
		return nil, err
	}
	return proc, nil
}

// process wraps a running firecracker, reached through the helper.
func (d *Driver) process(h vmm.Handle) (*vmm.Process, error) {
	p, err := vmm.NewProcess(h)
	if err != nil {
		return nil, err
	}
	p.ReachThrough(reacher{h: d.Helper, id: h.JailID})
	return p, nil
}

// reacher signals a VM's firecracker and dials its vsock socket through
// the root helper: firecracker runs as a uid of its own, in a jail the
// owner cannot enter.
type reacher struct {
	h  Helper
	id string
}

// errNoHelper: bangerd found no helper at start-up, and only the helper
// reaches a running firecracker.
var errNoHelper = errors.New("the root helper did not answer when bangerd started, and only it can reach a firecracker VM; restart bangerd once it runs")

// Signal implements vmm.Reacher; only SIGTERM and SIGKILL are sent.
func (r reacher) Signal(ctx context.Context, sig syscall.Signal) error {
	if r.h == nil {
		return errNoHelper
	}
	switch sig {
	case syscall.SIGTERM:
		return r.h.SignalVMM(ctx, r.id, privop.SignalTerm)
	case syscall.SIGKILL:
		return r.h.SignalVMM(ctx, r.id, privop.SignalKill)
	}
	return fmt.Errorf("signal firecracker: %v is not sent to a VMM", sig)
}

// DialAgent implements vmm.Reacher.
func (r reacher) DialAgent(ctx context.Context) (net.Conn, error) {
	if r.h == nil {
		return nil, errNoHelper
	}
	return r.h.DialJail(ctx, r.id, privop.SocketVsock, 2*time.Second)
}

// waitAPI asks firecracker's API for / until it answers, firecracker
// exits, or apiWait passes.
func waitAPI(ctx context.Context, dial Dialer, proc *vmm.Process) error {
	ctx, cancel := context.WithTimeout(ctx, apiWait)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return dial(ctx)
	}}, Timeout: apiWait}
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
	return d.process(h)
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
// (inside its jail, as the VM's uid, to which the helper hands the tap).
func (d *Driver) OpensTapByName() bool { return true }

// Release implements the cleanup after the VMM has exited: the jail goes
// (through the helper), and so do the socket links older versions made.
func (d *Driver) Release(ctx context.Context, h vmm.Handle, runDir string) error {
	for _, l := range []string{"fc.sock", "v.sock"} {
		_ = os.Remove(filepath.Join(runDir, l))
	}
	if h.JailID == "" || d.Helper == nil {
		return nil
	}
	return d.Helper.CleanupJail(ctx, h.JailID)
}
