package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"banger/internal/catalog"
	"banger/internal/config"
	"banger/internal/image"
	"banger/internal/kernel"
	"banger/internal/oci"
	"banger/internal/paths"
	"banger/internal/privop"
	privclient "banger/internal/privop/client"
	"banger/internal/sshkeys"
	"banger/internal/store"
	"banger/internal/version"
	"banger/internal/vm"
	"banger/internal/vmdns"
	"banger/internal/vmm"
	"banger/internal/vmm/firecracker"
	"banger/internal/vmm/qemu"
)

// RunOptions configures Run.
type RunOptions struct {
	Layout   paths.Layout
	AgentBin string // "" = banger-agent next to this executable
	Stderr   *os.File
}

// ErrAlreadyRunning is returned when another bangerd holds the lock.
var ErrAlreadyRunning = errors.New("bangerd is already running")

// Run is bangerd's main: it takes the single-instance lock, opens the
// state, adopts running VMs, serves the socket until SIGTERM/SIGINT and then
// shuts down gracefully, leaving VMs running.
func Run(o RunOptions) error {
	l := o.Layout
	if err := l.EnsureDaemonDirs(); err != nil {
		return err
	}
	lock, err := os.OpenFile(l.LockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("open lock: %w", err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return ErrAlreadyRunning
	}

	cfg, err := config.Load(l.ConfigFile)
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(l.DaemonLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	defer logf.Close()
	level := slog.LevelInfo
	if v := os.Getenv("BANGER_LOG_LEVEL"); v != "" {
		cfg.LogLevel = v
	}
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	log := slog.New(slog.NewTextHandler(logf, &slog.HandlerOptions{Level: level}))
	log.Info("bangerd starting", "version", version.String(), "pid", os.Getpid())

	agentBin := o.AgentBin
	if agentBin == "" {
		agentBin = siblingBinary("banger-agent")
	}
	st, err := store.Open(l.DBPath)
	if err != nil {
		return err
	}
	defer st.Close()
	_ = kernel.CleanStale(l.KernelsDir)
	_ = cleanTmp(l.TmpDir)

	qd := &qemu.Driver{Bin: cfg.QEMUBin, ProbeCache: filepath.Join(l.CacheDir, "kvm-probe.json"), ProbeKernel: func() string {
		k, err := st.GetKernel(context.Background(), cfg.DefaultKernelName)
		if err != nil {
			return ""
		}
		a, err := kernel.Load(l.KernelsDir, k.ID)
		if err != nil {
			return ""
		}
		return a.Vmlinux
	}}
	helper := probeHelper(cfg)
	netOpts, dns, err := setupNetwork(cfg, helper, log)
	if err != nil {
		return err
	}
	fcHelper, fcOff := helper.firecracker()
	fc := &firecracker.Driver{
		FirecrackerBin: helper.ping.Firecracker, JailerBin: helper.ping.Jailer, Off: fcOff,
		Helper: fcHelper,
		KVM: func(ctx context.Context) (bool, string) {
			p := qd.Probe(ctx)
			return p.Accel == "kvm", p.Reason
		}}
	cat, err := catalog.Load(cfg.Catalog)
	if err != nil {
		return err
	}
	driver, driverNote := chooseDriver(context.Background(), cfg.VMM, qd, fc)
	log.Info("vmm chosen", "vmm", driver.Name(), "why", driverNote)
	snaps, snapsOff := helper.snapshots()
	storage, storageNote, err := chooseStorage(cfg, l.StateDir, snapsOff, overlayOff(driver))
	if err != nil {
		return err
	}
	if dns != nil {
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			_ = dns.Shutdown(ctx)
		}()
	}
	keyPath := cfg.SSHKeyPath
	if keyPath == "" {
		keyPath = l.SSHKey
	}
	ownerPub, err := sshkeys.EnsureOwnerKey(keyPath, "banger")
	if err != nil {
		return err
	}
	sshOpts := &vm.SSHOptions{
		OwnerKeyPath: keyPath,
		OwnerPubLine: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(ownerPub))),
		ProxyCommand: siblingBinary("banger") + " vm ssh-proxy %n",
	}
	svc, err := vm.New(vm.Options{
		SSH: sshOpts,
		Log: log, Store: st, Layout: l, Config: cfg, Host: config.ProbeHost(),
		Driver:       driver,
		DriverNote:   driverNote,
		OtherDrivers: otherDrivers(driver, qd, fc),
		Firecracker:  fc,
		OCI:          &oci.Cache{Dir: filepath.Join(l.CacheDir, "oci")},
		Catalog:      cat,
		Storage:      storage,
		StorageNote:  storageNote,
		Snapshots:    snaps,
		AgentBin:     agentBin,
		Priv:         privop.InProcess{Run: runPrivOp},
		Version:      version.Version,
		Network:      netOpts,
	})
	if err != nil {
		return err
	}
	defer svc.Close()
	if err := svc.Reconcile(context.Background()); err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}

	// We hold the lock, so a socket file left behind is stale.
	_ = os.Remove(l.SocketPath)
	ln, err := net.Listen("unix", l.SocketPath)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if err := os.Chmod(l.SocketPath, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("listen: %w", err)
	}
	srv := New(svc, log, version.Version)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("bangerd serving", "socket", l.SocketPath)
	select {
	case sig := <-sigs:
		log.Info("bangerd shutting down", "signal", sig.String())
	case <-srv.Stopping():
		log.Info("bangerd shutting down", "reason", "asked by banger daemon stop")
	case err := <-errc:
		if err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
	_ = os.Remove(l.SocketPath)
	log.Info("bangerd stopped; running VMs keep running")
	return nil
}

// setupNetwork turns guest networking on when the root helper answers (and
// is really root). network.enabled = false turns it off; true makes a
// missing helper an error instead of a quiet fallback to no network.
// chooseDriver picks the VMM: the configured one, or with "auto"
// Firecracker when it is installed, the helper can jail it and KVM really
// runs guests, QEMU otherwise. The note says why, for doctor.
func chooseDriver(ctx context.Context, want string, qd *qemu.Driver, fc *firecracker.Driver) (vmm.Driver, string) {
	switch want {
	case "qemu":
		return qd, "vmm = qemu in the config"
	case "firecracker":
		return fc, "vmm = firecracker in the config"
	}
	p := fc.Probe(ctx)
	switch {
	case !p.Available:
		return qd, "auto: qemu, since firecracker cannot be used: " + p.Reason
	case p.Reason != "":
		return qd, "auto: qemu, since " + p.Reason
	}
	return fc, "auto: firecracker and jailer installed, root helper present, KVM works"
}

// chooseStorage resolves the storage setting against the host; snapsOff
// is why the root helper cannot make dm snapshots and overlayOff why the
// VMM cannot boot qcow2 overlays ("" when they can).
func chooseStorage(cfg config.Config, stateDir, snapsOff, overlayOff string) (image.Storage, string, error) {
	want, err := image.ParseStorage(cfg.Storage)
	if err != nil {
		return "", "", err
	}
	p := image.StorageProbe{DM: snapsOff == "", DMWhy: snapsOff, Overlay: overlayOff == "", OverlayWhy: overlayOff}
	p.Reflink, p.ReflinkFS = image.ProbeReflink(stateDir)
	return image.ChooseStorage(want, p)
}

func otherDrivers(chosen vmm.Driver, all ...vmm.Driver) []vmm.Driver {
	var out []vmm.Driver
	for _, d := range all {
		if d.Name() != chosen.Name() {
			out = append(out, d)
		}
	}
	return out
}

func setupNetwork(cfg config.Config, helper helperProbe, log *slog.Logger) (*vm.NetworkOptions, *vmdns.Server, error) {
	n := cfg.Network
	if n.Enabled != nil && !*n.Enabled {
		return nil, nil, nil
	}
	socket, hc := helper.socket, helper.client
	if err := helper.err; err != nil {
		if n.Enabled != nil && *n.Enabled {
			return nil, nil, fmt.Errorf("network.enabled is set but the root helper at %s does not answer: %w", socket, err)
		}
		log.Info("guest networking off: no root helper", "socket", socket, "err", err)
		return nil, nil, nil
	}
	if helper.ping.OwnerUID != os.Getuid() {
		return nil, nil, fmt.Errorf("root helper at %s serves uid %d, not this bangerd's uid %d", socket, helper.ping.OwnerUID, os.Getuid())
	}
	// The helper gives the bridge no subnet but root's.
	var subnetNote string
	n.Subnet, subnetNote = vm.PinnedSubnet(n.Subnet, helper.ping.Subnet)
	if subnetNote != "" {
		log.Warn("network.subnet overridden", "why", subnetNote)
	}
	listen, err := netip.ParseAddrPort(n.DNSListen)
	if err != nil {
		return nil, nil, fmt.Errorf("network.dns_listen: %w", err)
	}
	subnet, err := netip.ParsePrefix(n.Subnet)
	if err != nil {
		return nil, nil, fmt.Errorf("network.subnet: %w", err)
	}
	// The gateway listener answers only guests; the host's own resolver
	// uses dns_listen.
	dns, err := vmdns.New(vmdns.Config{Listen: []string{n.DNSListen}, GuestSubnet: subnet, Upstreams: n.DNSUpstreams,
		Logf: func(f string, a ...any) { log.Debug(fmt.Sprintf(f, a...)) }})
	if err != nil {
		return nil, nil, err
	}
	if err := dns.Start(); err != nil {
		return nil, nil, fmt.Errorf("start dns: %w", err)
	}
	log.Info("guest networking on", "helper", socket, "bridge", n.BridgeName, "subnet", n.Subnet, "dns", n.DNSListen)
	return &vm.NetworkOptions{
		Helper: hc, DNS: dns, Bridge: n.BridgeName, Subnet: n.Subnet, MTU: n.MTU,
		VMToVM: *n.VMToVM, DNSPort: listen.Port(), AllowHost: n.AllowHost, Allow: n.Allow, Log: log,
	}, dns, nil
}

func runPrivOp(ctx context.Context, op privop.Op, progress func(string)) error {
	switch o := op.(type) {
	case privop.BuildDebootstrapImage:
		_, err := image.BuildDebootstrap(ctx, o.Suite, o.Out, image.BuildOptions{WorkDir: o.WorkDir, Mirror: o.Mirror, Progress: progress})
		return err
	default:
		return fmt.Errorf("unknown privileged op %s", op.Name())
	}
}

// siblingBinary finds name next to the running executable (./bin layout and
// installs), falling back to PATH-style lookup by the caller.
func siblingBinary(name string) string {
	exe, err := os.Executable()
	if err != nil {
		return name
	}
	return filepath.Join(filepath.Dir(exe), name)
}

// cleanTmp removes staging left by a crash.
func cleanTmp(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		_ = os.RemoveAll(filepath.Join(dir, e.Name()))
	}
	return nil
}

// helperProbe is the root helper as bangerd found it at start-up, asked
// once for networking, Firecracker and dm snapshots alike.
type helperProbe struct {
	socket string
	client *privclient.Client
	ping   privop.PingResult
	err    error // why it does not answer
}

// probeHelper pings the root helper. A helper that accepts but does not
// answer in time is busy starting (it reconciles its ledgers before
// serving, and may start with bangerd): asked again for up to 10 s. One
// that refuses the connection, or has no socket, does not run.
func probeHelper(cfg config.Config) helperProbe {
	p := helperProbe{socket: helperSocket(cfg)}
	p.client = privclient.New(p.socket)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		p.ping, p.err = p.client.Ping(ctx)
		cancel()
		if !errors.Is(p.err, context.DeadlineExceeded) || time.Now().After(deadline) {
			return p
		}
	}
}

// served reports whether the helper answers and serves this owner.
func (p helperProbe) served() bool { return p.err == nil && p.ping.OwnerUID == os.Getuid() }

// firecracker is the helper as the Firecracker driver needs it, and why
// new Firecracker VMs cannot start ("" when they can). Only the helper
// reaches a running firecracker, so it is kept even when it does not
// answer yet (both may be starting together, after a restart): adopted VMs
// reach it once it does. A helper serving another owner is no helper.
func (p helperProbe) firecracker() (firecracker.Helper, string) {
	switch {
	case p.err != nil:
		return p.client, "the root helper does not answer: " + p.err.Error()
	case p.ping.OwnerUID != os.Getuid():
		return nil, fmt.Sprintf("the root helper serves uid %d, not this owner", p.ping.OwnerUID)
	}
	return p.client, p.ping.FirecrackerOff
}

// overlayOff says why driver cannot boot qcow2 overlay root disks, or "".
func overlayOff(driver vmm.Driver) string {
	if driver.Name() != qemu.Name {
		return driver.Name() + " takes raw disks only"
	}
	if ok, why := image.ProbeOverlay(); !ok {
		return why
	}
	return ""
}

// snapshots is the helper as the maker of dm snapshot root disks, and why
// new VMs cannot use it ("" when they can); the helper probes the kernel.
// It is kept even when it does not answer: VMs made with dm storage need it
// to stop and start, and each call reports its own error. Only the choice
// of storage for new VMs rests on the probe.
func (p helperProbe) snapshots() (vm.Snapshots, string) {
	switch {
	case p.err != nil:
		return p.client, "the root helper does not answer: " + p.err.Error()
	case p.ping.OwnerUID != os.Getuid():
		return nil, fmt.Sprintf("the root helper serves uid %d, not this owner", p.ping.OwnerUID)
	case !p.ping.Snapshots:
		return nil, "the root helper cannot make snapshots: " + p.ping.SnapshotsOff
	}
	return p.client, ""
}

// helperSocket is where the root helper listens (BANGER_HELPER_SOCKET
// overrides the config, for tests and unusual installs).
func helperSocket(cfg config.Config) string {
	if v := os.Getenv("BANGER_HELPER_SOCKET"); v != "" {
		return v
	}
	return cfg.Network.HelperSocket
}
