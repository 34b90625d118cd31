package vm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"banger/internal/agentclient"
	"banger/internal/agentproto"
	"banger/internal/api"
	"banger/internal/errdefs"
	"banger/internal/execx"
	"banger/internal/image"
	"banger/internal/ipam"
	"banger/internal/kernel"
	"banger/internal/namegen"
	"banger/internal/paths"
	"banger/internal/sizes"
	"banger/internal/store"
	"banger/internal/vmm"
)

// Timeouts of the lifecycle; variables so tests can shorten them.
var (
	ReadyTimeout     = 120 * time.Second // boot to agent ready (TCG is slow)
	ShutdownTimeout  = 15 * time.Second  // agent shutdown to VMM exit
	TermTimeout      = 3 * time.Second   // SIGTERM to exit
	KillTimeout      = 3 * time.Second   // SIGKILL to exit
	handshakeAttempt = 5 * time.Second
)

const minMemoryMiB = 128

func newID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// View converts a record to its API form.
func (s *Service) View(v store.VM) api.VM {
	out := api.VM{
		ID: v.ID, Name: v.Name, State: v.State, Image: v.ImageName, ImageID: v.ImageID,
		Kernel: v.KernelName, KernelID: v.KernelID, VCPU: v.VCPU, MemoryMiB: v.MemoryMiB, DiskSize: v.DiskSize,
		VMM: v.Runtime.VMM, CreatedAt: v.CreatedAt, StartedAt: v.StartedAt, LastError: v.LastError,
		Dir: s.layout.VMDir(v.ID), ConsoleLog: filepath.Join(s.layout.VMDir(v.ID), paths.ConsoleLog),
		GuestIP: v.GuestIP, NAT: v.NAT, Workspace: v.Workspace.GuestDir,
		WorkspaceHost: v.Workspace.HostPath, WorkspaceBase: v.Workspace.Head,
	}
	if v.GuestIP != "" {
		out.DNSName = v.Name + ".vm"
	}
	out.RootDisk, _ = s.rootKind(v)
	if v.State == api.StateRunning || v.State == api.StateStarting {
		out.PID = v.Runtime.PID
	}
	return out
}

// List returns every VM.
func (s *Service) List(ctx context.Context) ([]api.VM, error) {
	vms, err := s.st.ListVMs(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.VM, 0, len(vms))
	for _, v := range vms {
		out = append(out, s.View(v))
	}
	return out, nil
}

// Get returns one VM.
func (s *Service) Get(ctx context.Context, ref string) (api.VM, error) {
	v, err := s.st.GetVM(ctx, ref)
	if err != nil {
		return api.VM{}, err
	}
	return s.View(v), nil
}

// Create validates req, makes the VM's disks and, unless NoStart, boots it.
// Nothing is left behind when it fails before the VM is recorded; a VM that
// fails to boot stays, in state error, for inspection.
func (s *Service) Create(ctx context.Context, req api.CreateVMRequest, progress Progress) (api.VM, error) {
	v, note, err := s.plan(ctx, req, progress)
	if err != nil {
		return api.VM{}, err
	}
	if err := s.makeDisks(ctx, &v, progress); err != nil {
		return api.VM{}, err
	}
	if note != "" {
		progress.say("%s", note)
	}
	if req.NoStart {
		return s.View(v), nil
	}
	return s.Start(ctx, v.Name, progress)
}

// plan validates a create request into a record without touching disk.
// It also returns a note for the user (e.g. a fallback image) to show
// once the VM is really created.
func (s *Service) plan(ctx context.Context, req api.CreateVMRequest, progress Progress) (store.VM, string, error) {
	v := store.VM{ID: newID(), State: api.StateCreated, CreatedAt: time.Now()}
	if req.Name != "" {
		if err := namegen.Validate(req.Name); err != nil {
			return v, "", errdefs.Invalid("invalid vm name: %v", err)
		}
		v.Name = req.Name
	}
	v.VCPU = s.defaults.VCPU.Value
	if req.VCPUSet || req.VCPU != 0 {
		if req.VCPU < 1 {
			return v, "", errdefs.Invalid("--vcpu %d: want at least 1", req.VCPU)
		}
		v.VCPU = req.VCPU
	}
	v.MemoryMiB = s.defaults.MemoryMiB.Value
	if req.MemorySet || req.MemoryMiB != 0 {
		if req.MemoryMiB < minMemoryMiB {
			return v, "", errdefs.Invalid("--memory %d: want at least %d MiB", req.MemoryMiB, minMemoryMiB)
		}
		v.MemoryMiB = req.MemoryMiB
	}
	if err := s.checkSize(v.VCPU, v.MemoryMiB, req.VCPUSet || req.VCPU != 0, req.MemorySet || req.MemoryMiB != 0); err != nil {
		return v, "", err
	}
	v.DiskSize = s.defaults.DiskSize.Value
	if req.DiskSize != "" {
		n, err := sizes.Parse(req.DiskSize)
		if err != nil {
			return v, "", errdefs.Invalid("--disk-size: %v", err)
		}
		if n < 16<<20 {
			return v, "", errdefs.Invalid("--disk-size %s: want at least 16M", req.DiskSize)
		}
		v.DiskSize = n
	}
	if req.NAT && s.net == nil {
		return v, "", errdefs.Invalid("--nat needs guest networking: run banger with its root helper (banger system run)")
	}
	v.NAT = req.NAT
	im, err := s.resolveImage(ctx, req.Image, progress)
	if err != nil {
		return v, "", err
	}
	v.ImageName, v.ImageID = im.Name, im.ID
	note := im.Note
	kname := req.Kernel
	if kname == "" {
		kname = im.Meta.Kernel // the image's own choice (image pull --kernel)
	}
	if kname == "" {
		kname = s.cfg.DefaultKernelName
	}
	k, err := s.st.GetKernel(ctx, kname)
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return v, "", errdefs.NotFound("kernel %q not found: import one with 'banger kernel import-deb linux-image-*.deb' (see README)", kname)
		}
		return v, "", err
	}
	if _, err := kernel.Load(s.layout.KernelsDir, k.ID); err != nil {
		return v, "", errdefs.NotFound("kernel %q: artifact %s is missing or damaged (%v); re-import it", kname, k.ID, err)
	}
	v.KernelName, v.KernelID = k.Name, k.ID
	if v.Name == "" {
		v.Name = namegen.Generate(func(n string) bool {
			_, err := s.st.GetVM(ctx, n)
			return err == nil
		})
	} else if _, err := s.st.GetVM(ctx, v.Name); err == nil {
		return v, "", errdefs.Exists("vm %q already exists", v.Name)
	}
	return v, note, nil
}

// makeDisks records the VM and creates its disks, rolling both back on error.
func (s *Service) makeDisks(ctx context.Context, v *store.VM, progress Progress) (err error) {
	// Record intent first: a bangerd that dies while the disks are made
	// finds a "creating" VM at start-up and rolls it back.
	v.State = api.StateCreating
	if err := s.record(ctx, v); err != nil {
		return err
	}
	dir := s.layout.VMDir(v.ID)
	defer func() {
		if err != nil {
			_ = removeAll(dir)
			_ = s.st.DeleteVM(context.Background(), v.ID)
		}
	}()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create vm dir: %w", err)
	}
	progress.say("creating disks for %s (image %s)", v.Name, v.ImageName)
	storage := s.opts.Storage
	if storage == "" {
		storage = image.StorageCopy
	}
	switch storage {
	case image.StorageDM:
		if err := s.makeRootCOW(*v); err != nil {
			return err
		}
	case image.StorageOverlay:
		if err := image.MakeOverlay(ctx, s.imagePath(v.ImageID), filepath.Join(dir, paths.RootOverlay)); err != nil {
			return fmt.Errorf("make root disk: %w", err)
		}
	default:
		if err := image.MakeRootDisk(storage, s.imagePath(v.ImageID), filepath.Join(dir, paths.RootDisk)); err != nil {
			return fmt.Errorf("copy root disk: %w", err)
		}
	}
	seed := s.workSeed(ctx, v.ImageID, progress)
	if err := image.MakeWorkDiskFromSeed(ctx, filepath.Join(dir, paths.WorkDisk), v.DiskSize, seed); err != nil {
		return fmt.Errorf("create work disk: %w", err)
	}
	if s.ssh != nil {
		if err := s.newHostKey(v); err != nil {
			return err
		}
	}
	v.State = api.StateCreated
	if err := s.st.UpdateVM(ctx, *v); err != nil {
		return err
	}
	s.refreshSSH(ctx)
	return nil
}

// record inserts v, first allocating its guest address when networking is
// on: allocation and insert happen under one lock so two creates never get
// the same address.
func (s *Service) record(ctx context.Context, v *store.VM) error {
	if s.net == nil {
		return s.st.CreateVM(ctx, *v)
	}
	s.net.mu.Lock()
	defer s.net.mu.Unlock()
	vms, err := s.st.ListVMs(ctx)
	if err != nil {
		return err
	}
	ip, err := s.net.allocate(vms)
	if err != nil {
		return err
	}
	v.GuestIP = ip.String()
	return s.st.CreateVM(ctx, *v)
}

// Start boots a created or stopped VM and waits until its agent answers.
func (s *Service) Start(ctx context.Context, ref string, progress Progress) (api.VM, error) {
	v, unlock, err := s.lockVM(ctx, ref)
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	switch v.State {
	case api.StateRunning, api.StateStarting:
		return s.View(v), errdefs.Conflict("vm %q is already %s", v.Name, v.State)
	case api.StateCreating:
		return s.View(v), errdefs.Conflict("vm %q is still being created", v.Name)
	}
	if err := s.boot(ctx, &v, progress); err != nil {
		return s.View(v), err
	}
	return s.View(v), nil
}

// lockVM finds ref, takes its operation lock and re-reads the record under
// the lock, since another operation may have changed it meanwhile.
func (s *Service) lockVM(ctx context.Context, ref string) (store.VM, func(), error) {
	v, err := s.st.GetVM(ctx, ref)
	if err != nil {
		return v, nil, err
	}
	unlock := s.lock(v.ID)
	if v, err = s.st.GetVM(ctx, v.ID); err != nil {
		unlock()
		return v, nil, err
	}
	return v, unlock, nil
}

func (s *Service) cmdline(v store.VM) string {
	parts := []string{
		"console=ttyS0", "root=/dev/vda", "rw", "rootfstype=ext4", "panic=-1",
		"quiet", "loglevel=3",
		"banger.work=/dev/vdb", "banger.hostname=" + v.Name,
	}
	if s.cfg.KernelArgs != "" {
		parts = append(parts, s.cfg.KernelArgs)
	}
	return strings.Join(parts, " ")
}

// boot launches the VMM for v (locked by the caller) and waits for ready.
func (s *Service) boot(ctx context.Context, v *store.VM, progress Progress) error {
	if err := s.checkBootSize(*v); err != nil {
		return err
	}
	art, err := kernel.Load(s.layout.KernelsDir, v.KernelID)
	if err != nil {
		return s.fail(v, errdefs.NotFound("kernel %q (%s) is missing: %v", v.KernelName, v.KernelID, err))
	}
	initrd, err := s.bootInitrd(art)
	if err != nil {
		return s.fail(v, fmt.Errorf("prepare initrd: %w", err))
	}
	dir := s.layout.VMDir(v.ID)
	root, err := s.rootDrive(ctx, *v)
	if err != nil {
		return s.fail(v, err)
	}
	// The VMM holds its own copy of a snapshot device once started; ours
	// must be closed before any failure releases the snapshot, or its
	// removal finds the device busy.
	closeRoot := func() {
		if root.File != nil {
			root.File.Close()
			root.File = nil
		}
	}
	defer closeRoot()
	spec := vmm.Spec{
		ID: v.ID, Name: v.Name, VCPU: v.VCPU, MemoryMiB: v.MemoryMiB,
		Kernel: art.Vmlinux, Initrd: initrd, Cmdline: s.cmdline(*v),
		Drives: []vmm.Drive{
			root,
			{ID: "work", Path: filepath.Join(dir, paths.WorkDisk)},
		},
		RunDir:     s.layout.VMRun(v.ID),
		LogPath:    filepath.Join(dir, "vmm.log"),
		ConsoleLog: filepath.Join(dir, paths.ConsoleLog),
	}
	tap := ""
	if ip, ok := s.guestIP(*v); ok {
		var f *os.File
		_, opensTap := s.driver.(interface{ OpensTapByName() bool })
		tap, f, err = s.net.setupTap(ctx, v.ID, ip, !opensTap)
		if err != nil {
			closeRoot()
			return s.fail(v, errdefs.Unavailable("set up network: %v", err))
		}
		if f != nil {
			defer f.Close() // the VMM holds its own copy once started
		}
		// The new tap sends nothing until the firewall lists it, and the
		// firewall must be in force before a guest can send anything.
		if err := s.refreshFirewall(ctx); err != nil {
			closeRoot()
			_ = s.net.deleteTap(context.WithoutCancel(ctx), tap)
			return s.fail(v, errdefs.Unavailable("set up network: %v", err))
		}
		spec.Net = &vmm.Net{Tap: f, TapName: tap, MAC: ipam.MAC(ip)}
		spec.Cmdline += " " + s.net.cmdline(ip)
		v.Runtime.Tap = tap
	}
	progress.say("booting %s (%d vcpu, %d MiB)", v.Name, v.VCPU, v.MemoryMiB)
	proc, err := s.driver.Start(ctx, spec)
	closeRoot()
	if err != nil {
		return s.fail(v, fmt.Errorf("start vmm: %w%s", err, vmmLogTail(spec.LogPath)))
	}
	// Record intent: the process exists now, so a crash from here on must
	// find it again through the persisted handle.
	v.State = api.StateStarting
	v.LastError = ""
	v.Runtime = runtimeOf(proc.Handle, spec.RunDir)
	v.Runtime.Tap = tap
	if err := s.st.UpdateVM(ctx, *v); err != nil {
		_ = proc.Signal(syscall.SIGKILL)
		return err
	}
	in := &instance{id: v.ID, name: v.Name, proc: proc}
	if err := s.attach(in, true); err != nil {
		_ = proc.Signal(syscall.SIGKILL)
		return s.fail(v, err)
	}
	if err := s.waitReady(ctx, in); err != nil {
		in.stopping = true
		_ = proc.Signal(syscall.SIGKILL)
		_ = proc.Wait(context.Background())
		return s.fail(v, fmt.Errorf("vm %q did not become ready: %w; see 'banger vm logs %s'", v.Name, err, v.Name))
	}
	v.State = api.StateRunning
	v.StartedAt = time.Now()
	if err := s.st.UpdateVM(context.Background(), *v); err != nil {
		return err
	}
	if err := s.pushSSH(ctx, *v); err != nil {
		s.log.Warn("push ssh keys", "vm", v.Name, "err", err)
	}
	s.applyFileSync(ctx, *v, progress)
	return s.netUp(ctx, *v)
}

// guestIP is the VM's address when networking is on.
func (s *Service) guestIP(v store.VM) (netip.Addr, bool) {
	if s.net == nil {
		return netip.Addr{}, false
	}
	ip, err := netip.ParseAddr(v.GuestIP)
	return ip, err == nil
}

// netUp publishes a running VM: its DNS name and, with NAT, its egress.
func (s *Service) netUp(ctx context.Context, v store.VM) error {
	ip, ok := s.guestIP(v)
	if !ok {
		return nil
	}
	if s.net.DNS != nil {
		if err := s.net.DNS.Set(v.Name, ip); err != nil {
			s.log.Warn("publish dns name", "vm", v.Name, "err", err)
		}
		s.grantDNS(v, true)
	}
	if v.NAT {
		return s.refreshFirewall(ctx)
	}
	return nil
}

// releaser is a driver that holds something per VM beyond the process
// (Firecracker's jail), to release once the VMM has exited.
type releaser interface {
	Release(ctx context.Context, h vmm.Handle, runDir string) error
}

// releaseRuntime releases what a stopped VM held: its VMM's jail, its root
// snapshot, its tap, DNS name and NAT rule. Errors are logged, not
// returned: a VM must always be able to stop.
func (s *Service) releaseRuntime(v store.VM) {
	released := true
	if r, ok := s.driverFor(v.Runtime.VMM).(releaser); ok {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := r.Release(ctx, handleOf(v.Runtime), v.Runtime.RunDir); err != nil {
			s.log.Warn("release vmm", "vm", v.Name, "err", err)
			released = false
		}
		cancel()
	}
	// Only after the jail: a device node of the snapshot in it must not
	// outlive the snapshot. A snapshot kept here goes at the next start
	// (made again) or delete.
	if !released {
		s.log.Warn("root snapshot kept until the vmm is released", "vm", v.Name)
	} else if err := s.releaseRoot(context.Background(), v); err != nil {
		s.log.Warn("release root snapshot", "vm", v.Name, "err", err)
	}
	if s.net == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if s.net.DNS != nil {
		s.net.DNS.Remove(v.Name)
		s.grantDNS(v, false)
	}
	if err := s.net.deleteTap(ctx, v.Runtime.Tap); err != nil {
		s.log.Warn("release tap", "vm", v.Name, "err", err)
	}
	if v.NAT {
		if err := s.refreshFirewall(ctx); err != nil {
			s.log.Warn("refresh firewall", "vm", v.Name, "err", err)
		}
	}
}

func (s *Service) refreshFirewall(ctx context.Context) error {
	vms, err := s.st.ListVMs(ctx)
	if err != nil {
		return err
	}
	return s.net.applyFirewall(ctx, vms)
}

// bootInitrd returns the kernel's boot initramfs with the current agent.
// Building it reads and hashes the agent and the modules archive (megabytes),
// so the path is remembered per kernel and agent file version instead of
// being recomputed on every start.
func (s *Service) bootInitrd(art *kernel.Artifact) (string, error) {
	st, err := os.Stat(s.agentBin)
	if err != nil {
		return "", fmt.Errorf("find guest agent: %w", err)
	}
	key := fmt.Sprintf("%s|%d|%d", art.ID, st.Size(), st.ModTime().UnixNano())
	s.mu.Lock()
	p, ok := s.initrds[key]
	s.mu.Unlock()
	if ok {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err = kernel.BootInitrd(art, s.agentBin, s.layout.InitrdDir)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	s.initrds[key] = p
	s.mu.Unlock()
	return p, nil
}

// vmmLogTail quotes the end of a VMM's log in an error. The log can hold
// what a guest made the VMM say, as much as it liked: only its tail is read.
func vmmLogTail(path string) string {
	b, err := readTail(path, 4<<10)
	if err != nil || len(b) == 0 {
		return ""
	}
	s := strings.TrimSpace(string(b))
	if len(s) > 500 {
		s = s[len(s)-500:]
	}
	return " (vmm: " + s + ")"
}

func runtimeOf(h vmm.Handle, runDir string) store.Runtime {
	return store.Runtime{VMM: h.VMM, PID: h.PID, PIDStart: h.PIDStart, RunDir: runDir,
		AgentSock: h.AgentSock, AgentPort: h.AgentPort, ConsoleSock: h.ConsoleSock, Accel: h.Accel, JailID: h.JailID}
}

func handleOf(rt store.Runtime) vmm.Handle {
	return vmm.Handle{VMM: rt.VMM, PID: rt.PID, PIDStart: rt.PIDStart, AgentSock: rt.AgentSock, AgentPort: rt.AgentPort,
		ConsoleSock: rt.ConsoleSock, Accel: rt.Accel, JailID: rt.JailID}
}

// fail records err on v (state error) and returns it.
func (s *Service) fail(v *store.VM, err error) error {
	v.State = api.StateError
	v.LastError = err.Error()
	s.releaseRuntime(*v)
	v.Runtime = store.Runtime{}
	if uerr := s.st.UpdateVM(context.Background(), *v); uerr != nil {
		s.log.Error("record vm failure", "vm", v.Name, "err", uerr)
	}
	_ = removeAll(s.layout.VMRun(v.ID))
	return err
}

// attach starts tracking a VMM process: console copy and exit watcher.
func (s *Service) attach(in *instance, fresh bool) error {
	logPath := filepath.Join(s.layout.VMDir(in.id), paths.ConsoleLog)
	if in.proc.Handle.ConsoleSock == "" {
		// The VMM writes the console log itself (Firecracker's serial
		// port is its stdout): only keep it bounded.
		in.console = boundConsoleLog(logPath)
	} else {
		ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
		defer cancel()
		conn, err := vmm.WaitForSocket(ctx, in.proc.Handle.ConsoleSock, in.proc.Exited())
		if err != nil {
			return fmt.Errorf("attach console: %w", err)
		}
		if fresh {
			_ = removeAll(logPath, logPath+".1")
		}
		if in.console, err = startConsoleLog(conn, logPath); err != nil {
			return fmt.Errorf("attach console: %w", err)
		}
	}
	s.mu.Lock()
	s.running[in.id] = in
	s.mu.Unlock()
	s.wg.Add(1)
	go s.watch(in)
	return nil
}

// watch notices a VMM exiting and records the VM as stopped.
func (s *Service) watch(in *instance) {
	defer s.wg.Done()
	select {
	case <-in.proc.Exited():
	case <-s.ctx.Done():
		return
	}
	in.console.Close()
	in.sessMu.Lock()
	if in.sess != nil {
		in.sess.Close()
	}
	in.sessMu.Unlock()
	s.mu.Lock()
	if s.running[in.id] == in {
		delete(s.running, in.id)
	}
	stopping := in.stopping
	s.mu.Unlock()
	if stopping {
		return
	}
	// Nobody asked for this exit (guest poweroff, crash, kill from outside).
	unlock := s.lock(in.id)
	defer unlock()
	v, err := s.st.GetVM(context.Background(), in.id)
	if err != nil || (v.State != api.StateRunning && v.State != api.StateStarting) {
		return
	}
	s.log.Info("vm exited on its own", "vm", v.Name, "pid", in.proc.Handle.PID)
	v.State = api.StateStopped
	s.releaseRuntime(v)
	v.Runtime = store.Runtime{}
	_ = s.st.UpdateVM(context.Background(), v)
	_ = removeAll(s.layout.VMRun(v.ID))
}

// waitReady dials the agent until it answers a ping.
func (s *Service) waitReady(ctx context.Context, in *instance) error {
	ctx, cancel := context.WithTimeout(ctx, ReadyTimeout)
	defer cancel()
	for {
		if !in.proc.Alive() {
			return errors.New("the VMM exited during boot")
		}
		// One connection for the whole boot: what the host writes before the
		// guest opens its port waits in the socket, so the first SYNC is
		// answered as soon as the agent starts; reconnecting would only
		// throw that away.
		sess, err := s.dialAgentFor(ctx, in, ReadyTimeout)
		if err == nil {
			pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
			_, err = sess.Ping(pctx)
			pcancel()
			if err == nil {
				in.sessMu.Lock()
				in.sess = sess
				in.sessMu.Unlock()
				return nil
			}
			sess.Close()
		}
		if ctx.Err() != nil {
			return fmt.Errorf("no answer from the guest agent within %s", ReadyTimeout)
		}
		select {
		case <-ctx.Done():
		case <-in.proc.Exited():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *Service) dialAgent(ctx context.Context, in *instance) (*agentclient.Session, error) {
	return s.dialAgentFor(ctx, in, handshakeAttempt)
}

func (s *Service) dialAgentFor(ctx context.Context, in *instance, limit time.Duration) (*agentclient.Session, error) {
	actx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	conn, err := in.proc.DialAgent(actx)
	if err != nil {
		return nil, err
	}
	return agentclient.Handshake(actx, conn)
}

// session returns a live agent session for a running VM, reconnecting if
// the previous one ended (e.g. after a bangerd restart).
func (s *Service) session(ctx context.Context, ref string) (*agentclient.Session, store.VM, error) {
	v, err := s.st.GetVM(ctx, ref)
	if err != nil {
		return nil, v, err
	}
	if v.State != api.StateRunning {
		return nil, v, errdefs.Conflict("vm %q is %s, not running", v.Name, v.State)
	}
	in := s.instance(v.ID)
	if in == nil {
		return nil, v, errdefs.Unavailable("vm %q is running but bangerd has no handle on it", v.Name)
	}
	in.sessMu.Lock()
	defer in.sessMu.Unlock()
	if in.sess != nil && !in.sess.Closed() {
		return in.sess, v, nil
	}
	sess, err := s.dialAgent(ctx, in)
	if err != nil {
		return nil, v, errdefs.Unavailable("connect to the agent of %q: %v", v.Name, err)
	}
	in.sess = sess
	return sess, v, nil
}

// SetWorkspace records the work tree the CLI copied into a VM; exec then
// runs there by default.
func (s *Service) SetWorkspace(ctx context.Context, ref string, req api.WorkspaceRequest) (api.VM, error) {
	if !strings.HasPrefix(req.GuestDir, "/root/") || strings.Contains(req.GuestDir, "..") {
		return api.VM{}, errdefs.Invalid("workspace guest dir %q: must be under /root/", req.GuestDir)
	}
	v, unlock, err := s.lockVM(ctx, ref)
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	v.Workspace = store.Workspace{HostPath: req.HostPath, GuestDir: req.GuestDir, Head: req.Head}
	if err := s.st.UpdateVM(ctx, v); err != nil {
		return api.VM{}, err
	}
	return s.View(v), nil
}

// Exec starts a command in a running VM and returns the exec frame stream.
// Without an explicit cwd it runs in the VM's workspace, if it has one.
func (s *Service) Exec(ctx context.Context, ref string, req api.ExecRequest) (net.Conn, error) {
	sess, v, err := s.session(ctx, ref)
	if err != nil {
		return nil, err
	}
	if req.Cwd == "" {
		req.Cwd = v.Workspace.GuestDir
	}
	st, err := sess.Exec(ctx, agentproto.Request{Argv: req.Argv, Env: req.Env, Cwd: req.Cwd, TTY: req.TTY, Rows: req.Rows, Cols: req.Cols})
	if err != nil {
		if agentclient.IsGuestError(err) {
			return nil, errdefs.Invalid("exec in %s: %v", v.Name, err)
		}
		return nil, errdefs.Unavailable("exec in %s: %v", v.Name, err)
	}
	return st, nil
}

// Ports lists the guest's listening sockets.
func (s *Service) Ports(ctx context.Context, ref string) ([]api.Port, error) {
	sess, v, err := s.session(ctx, ref)
	if err != nil {
		return nil, err
	}
	ps, err := sess.Ports(ctx)
	if err != nil {
		return nil, errdefs.Unavailable("list ports in %s: %v", v.Name, err)
	}
	out := make([]api.Port, 0, len(ps))
	for _, p := range ps {
		out = append(out, api.Port{Proto: p.Proto, Addr: p.Addr, Port: p.Port, PID: p.PID, Process: p.Process,
			Endpoint: fmt.Sprintf("%s.vm:%d", v.Name, p.Port)})
	}
	return out, nil
}

// Connect opens a TCP connection to addr inside a running VM.
func (s *Service) Connect(ctx context.Context, ref, addr string) (net.Conn, error) {
	sess, v, err := s.session(ctx, ref)
	if err != nil {
		return nil, err
	}
	c, err := sess.Connect(ctx, addr)
	if err != nil {
		if agentclient.IsGuestError(err) {
			return nil, errdefs.Unavailable("connect to %s in %s: %v", addr, v.Name, err)
		}
		return nil, errdefs.Unavailable("connect in %s: %v", v.Name, err)
	}
	return c, nil
}

// Stop shuts a VM down: agent shutdown, then SIGTERM, then SIGKILL.
func (s *Service) Stop(ctx context.Context, ref string) (api.VM, error) {
	return s.halt(ctx, ref, false)
}

// Kill stops a VM at once with SIGKILL.
func (s *Service) Kill(ctx context.Context, ref string) (api.VM, error) {
	return s.halt(ctx, ref, true)
}

func (s *Service) halt(ctx context.Context, ref string, force bool) (api.VM, error) {
	v, unlock, err := s.lockVM(ctx, ref)
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	if err := s.haltLocked(ctx, &v, force); err != nil {
		return s.View(v), err
	}
	return s.View(v), nil
}

func (s *Service) haltLocked(ctx context.Context, v *store.VM, force bool) error {
	if in := s.instance(v.ID); in != nil {
		s.mu.Lock()
		in.stopping = true
		s.mu.Unlock()
		if !force {
			v.State = api.StateStopping
			_ = s.st.UpdateVM(ctx, *v)
			s.shutdownGuest(ctx, in)
		}
		if err := terminate(in.proc, force); err != nil {
			return fmt.Errorf("stop %s: %w", v.Name, err)
		}
	}
	v.State = api.StateStopped
	s.releaseRuntime(*v)
	v.Runtime = store.Runtime{}
	if err := s.st.UpdateVM(context.Background(), *v); err != nil {
		return err
	}
	return removeAll(s.layout.VMRun(v.ID))
}

func (s *Service) shutdownGuest(ctx context.Context, in *instance) {
	in.sessMu.Lock()
	sess := in.sess
	in.sessMu.Unlock()
	if sess == nil || sess.Closed() {
		var err error
		if sess, err = s.dialAgent(ctx, in); err != nil {
			return
		}
		defer sess.Close()
	}
	sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	err := s.askGuestToStop(sctx, sess, in)
	cancel()
	if err != nil {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, ShutdownTimeout)
	defer cancel()
	_ = in.proc.Wait(wctx)
}

// terminate ends proc: SIGTERM then SIGKILL (or SIGKILL at once).
func terminate(proc *vmm.Process, force bool) error {
	if !proc.Alive() {
		return nil
	}
	if !force {
		_ = proc.Signal(syscall.SIGTERM)
		ctx, cancel := context.WithTimeout(context.Background(), TermTimeout)
		err := proc.Wait(ctx)
		cancel()
		if err == nil {
			return nil
		}
	}
	_ = proc.Signal(syscall.SIGKILL)
	ctx, cancel := context.WithTimeout(context.Background(), KillTimeout)
	defer cancel()
	if err := proc.Wait(ctx); err != nil {
		return fmt.Errorf("vmm pid %d did not exit after SIGKILL", proc.Handle.PID)
	}
	return nil
}

// Restart stops and starts a VM.
func (s *Service) Restart(ctx context.Context, ref string, progress Progress) (api.VM, error) {
	if _, err := s.Stop(ctx, ref); err != nil {
		return api.VM{}, err
	}
	return s.Start(ctx, ref, progress)
}

// Delete kills a VM if it runs and removes its disks and record. Deleting a
// VM that is already gone is not an error for the disks, but an unknown name
// is reported as not found.
func (s *Service) Delete(ctx context.Context, ref string) error {
	v, err := s.st.GetVM(ctx, ref)
	if err != nil {
		return err
	}
	unlock := s.lock(v.ID)
	defer unlock()
	if err := s.haltLocked(ctx, &v, true); err != nil {
		return err
	}
	// A snapshot the stop could not remove (busy) would outlive its COW
	// file: refuse until it is gone.
	if err := s.releaseRoot(ctx, v); err != nil {
		return fmt.Errorf("delete %s: %w", v.Name, err)
	}
	if err := removeAll(s.layout.VMDir(v.ID), s.layout.VMRun(v.ID)); err != nil {
		return fmt.Errorf("delete %s: %w", v.Name, err)
	}
	if err := s.st.DeleteVM(ctx, v.ID); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.locks, v.ID)
	s.mu.Unlock()
	s.refreshSSH(ctx)
	return nil
}

// Prune deletes every VM that is not running.
func (s *Service) Prune(ctx context.Context) ([]string, error) {
	vms, err := s.st.ListVMs(ctx)
	if err != nil {
		return nil, err
	}
	var deleted []string
	var errs []error
	for _, v := range vms {
		switch v.State {
		case api.StateStopped, api.StateCreated, api.StateError:
			if err := s.Delete(ctx, v.ID); err != nil {
				errs = append(errs, err)
				continue
			}
			deleted = append(deleted, v.Name)
		}
	}
	return deleted, errors.Join(errs...)
}

// Set changes a stopped VM's vcpu, memory or (growing only) work disk size.
func (s *Service) Set(ctx context.Context, ref string, req api.SetVMRequest) (api.VM, error) {
	v, unlock, err := s.lockVM(ctx, ref)
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	if v.State == api.StateRunning || v.State == api.StateStarting || v.State == api.StateStopping {
		return s.View(v), errdefs.Conflict("vm %q is %s: stop it before changing its resources", v.Name, v.State)
	}
	if req.VCPU == nil && req.MemoryMiB == nil && req.DiskSize == nil {
		return s.View(v), errdefs.Invalid("nothing to change: give --vcpu, --memory or --disk-size")
	}
	if req.VCPU != nil && *req.VCPU < 1 {
		return s.View(v), errdefs.Invalid("--vcpu %d: want at least 1", *req.VCPU)
	}
	if req.MemoryMiB != nil && *req.MemoryMiB < minMemoryMiB {
		return s.View(v), errdefs.Invalid("--memory %d: want at least %d MiB", *req.MemoryMiB, minMemoryMiB)
	}
	if req.VCPU != nil || req.MemoryMiB != nil {
		vcpu, mem := v.VCPU, v.MemoryMiB
		if req.VCPU != nil {
			vcpu = *req.VCPU
		}
		if req.MemoryMiB != nil {
			mem = *req.MemoryMiB
		}
		// The size kept from before is named as the flag too: it is
		// what the user changes to get past the limit.
		if err := s.checkSize(vcpu, mem, true, true); err != nil {
			return s.View(v), err
		}
	}
	var newSize int64
	if req.DiskSize != nil {
		n, err := sizes.Parse(*req.DiskSize)
		if err != nil {
			return s.View(v), errdefs.Invalid("--disk-size: %v", err)
		}
		if n < v.DiskSize {
			return s.View(v), errdefs.Invalid("--disk-size %s: the work disk can only grow (now %s)", *req.DiskSize, sizes.Format(v.DiskSize))
		}
		newSize = n
	}
	if newSize > v.DiskSize {
		if err := growWorkDisk(ctx, filepath.Join(s.layout.VMDir(v.ID), paths.WorkDisk), newSize); err != nil {
			return s.View(v), err
		}
		v.DiskSize = newSize
	}
	if req.VCPU != nil {
		v.VCPU = *req.VCPU
	}
	if req.MemoryMiB != nil {
		v.MemoryMiB = *req.MemoryMiB
	}
	if err := s.st.UpdateVM(ctx, v); err != nil {
		return s.View(v), err
	}
	return s.View(v), nil
}

func growWorkDisk(ctx context.Context, path string, size int64) error {
	if err := os.Truncate(path, size); err != nil {
		return fmt.Errorf("grow work disk: %w", err)
	}
	resize, err := execx.LookPath("resize2fs")
	if err != nil {
		return fmt.Errorf("grow work disk: %w", err)
	}
	e2fsck, err := execx.LookPath("e2fsck")
	if err != nil {
		return fmt.Errorf("grow work disk: %w", err)
	}
	// resize2fs insists on a freshly checked filesystem.
	if _, err := execx.Default.Run(ctx, e2fsck, "-f", "-p", path); err != nil && execx.ExitCode(err) > 1 {
		return fmt.Errorf("grow work disk: %w", err)
	}
	if _, err := execx.Default.Run(ctx, resize, path); err != nil {
		return fmt.Errorf("grow work disk: %w", err)
	}
	return nil
}

// ConsolePath returns the console log of a VM.
func (s *Service) ConsolePath(ctx context.Context, ref string) (string, error) {
	v, err := s.st.GetVM(ctx, ref)
	if err != nil {
		return "", err
	}
	return filepath.Join(s.layout.VMDir(v.ID), paths.ConsoleLog), nil
}

// ReadConsole returns the retained console output of a VM.
func (s *Service) ReadConsole(ctx context.Context, ref string) ([]byte, error) {
	p, err := s.ConsolePath(ctx, ref)
	if err != nil {
		return nil, err
	}
	return readConsole(p)
}

// Reconcile runs at start-up: VMs recorded as running are adopted if their
// exact VMM process still runs, and otherwise marked stopped with what they
// held torn down.
func (s *Service) Reconcile(ctx context.Context) error {
	vms, err := s.st.ListVMs(ctx)
	if err != nil {
		return err
	}
	for _, v := range vms {
		switch v.State {
		case api.StateRunning, api.StateStarting, api.StateStopping:
		case api.StateCreating:
			s.log.Info("rolling back a vm whose creation was interrupted", "vm", v.Name)
			if err := removeAll(s.layout.VMDir(v.ID)); err != nil {
				return err
			}
			if err := s.st.DeleteVM(ctx, v.ID); err != nil {
				return err
			}
			continue
		default:
			continue
		}
		proc, err := s.adopt(v)
		if err != nil {
			s.log.Info("vm is gone, marking stopped", "vm", v.Name, "pid", v.Runtime.PID, "reason", err)
			v.State = api.StateStopped
			s.releaseRuntime(v)
			v.Runtime = store.Runtime{}
			if uerr := s.st.UpdateVM(ctx, v); uerr != nil {
				return uerr
			}
			_ = removeAll(s.layout.VMRun(v.ID))
			continue
		}
		in := &instance{id: v.ID, name: v.Name, proc: proc}
		if err := s.attach(in, false); err != nil {
			s.log.Warn("adopted vm without console", "vm", v.Name, "err", err)
		}
		if v.State != api.StateRunning {
			// It was mid-boot or mid-stop when bangerd died: finish by
			// checking the agent, in the background.
			s.wg.Add(1)
			go func(v store.VM) {
				defer s.wg.Done()
				unlock := s.lock(v.ID)
				defer unlock()
				if err := s.waitReady(s.ctx, in); err != nil {
					_ = s.haltLocked(s.ctx, &v, true)
					return
				}
				v.State = api.StateRunning
				_ = s.st.UpdateVM(s.ctx, v)
			}(v)
		}
		if v.State == api.StateRunning {
			if err := s.netUp(ctx, v); err != nil {
				s.log.Warn("restore vm network", "vm", v.Name, "err", err)
			}
		}
		s.log.Info("adopted running vm", "vm", v.Name, "pid", v.Runtime.PID)
	}
	s.removeOrphanTaps(ctx)
	return nil
}

func (s *Service) adopt(v store.VM) (*vmm.Process, error) {
	if v.Runtime.PID == 0 {
		return nil, errors.New("no pid recorded")
	}
	d := s.driverFor(v.Runtime.VMM)
	if d == nil {
		return nil, fmt.Errorf("recorded vmm %q is not one this bangerd knows", v.Runtime.VMM)
	}
	return d.Adopt(handleOf(v.Runtime))
}

// driverFor returns the driver named name: the active one, or another one
// bangerd knows, so VMs started before a change of vmm stay managed.
func (s *Service) driverFor(name string) vmm.Driver {
	if s.driver.Name() == name {
		return s.driver
	}
	for _, d := range s.opts.OtherDrivers {
		if d.Name() == name {
			return d
		}
	}
	return nil
}
