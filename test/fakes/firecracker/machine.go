package main

import (
	"fmt"
	"net"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// defaultBootArgs is Firecracker's kernel command line when boot_args is
// omitted (vmm_config/boot_source.rs).
const defaultBootArgs = "reboot=k panic=1 nomodule 8250.nr_uarts=0 i8042.noaux i8042.nomux i8042.dumbkbd swiotlb=noforce"

// maxCmdline is the x86_64 kernel command line capacity, NUL included.
const maxCmdline = 2048

// vmmBackend runs the guest. In the jail it is the fake jailer's sidecar;
// tests substitute their own.
type vmmBackend interface {
	Boot(spec bootSpec) error
	// Agent returns a fresh host connection to the guest agent, once the
	// guest has accepted it; closing it ends the guest's side too.
	Agent() (net.Conn, error)
	CtrlAltDel() error
	Pause() error
	Resume() error
}

// bootSpec is what InstanceStart hands the backend: files opened in the
// jail as the jailed uid, never paths.
type bootSpec struct {
	ID      string
	VCPU    int
	MemMiB  int
	Cmdline string
	Kernel  *os.File
	Initrd  *os.File // nil: none
	Drives  []bootDrive
	Tap     *os.File // nil: no network
	MAC     string
	Console *os.File // nil: firecracker's stdout
	Entropy bool
}

type bootDrive struct {
	File     *os.File
	ReadOnly bool
}

type drive struct {
	cfg  Drive
	file *os.File
}

type netIface struct {
	cfg NetworkInterface
	tap *os.File
}

type bootSource struct {
	cfg    BootSource
	kernel *os.File
	initrd *os.File
}

// machine is one Firecracker process's VM: its configuration, its phase
// and its devices. mu serializes API requests, as Firecracker's single API
// thread does.
type machine struct {
	mu sync.Mutex

	id         string
	enablePCI  bool
	maxPayload int
	devKVM     string // "/dev/kvm" in the jail
	devTun     string // "/dev/net/tun" in the jail
	allowNoKVM bool   // the no-KVM opt-in of this build (nokvm.go)
	backend    vmmBackend
	log        *fcLogger
	metrics    *metricsSink
	countMu    sync.Mutex // guards reqCounts, apart from mu so metrics can flush at any time
	reqCounts  map[string]uint64

	started bool
	paused  bool
	halted  bool // the guest powered itself off; Firecracker lives on

	boot       *bootSource
	drives     []*drive
	ifaces     []*netIface
	mc         MachineConfig
	vsock      *vsockDev
	loggerSet  bool
	mmds       []byte
	entropy    *EntropyDevice
	serial     *SerialDevice
	serialFile *os.File
	kvm        *os.File

	agent agentChannel
}

func newMachine(id string) *machine {
	f, t := false, false
	none := "None"
	return &machine{
		id:         id,
		maxPayload: 51200,
		devKVM:     "/dev/kvm",
		devTun:     "/dev/net/tun",
		allowNoKVM: noKVMBuild(),
		log:        &fcLogger{id: id, level: levelInfo, w: os.Stdout},
		reqCounts:  map[string]uint64{},
		mc:         MachineConfig{VcpuCount: 1, MemSizeMib: 128, Smt: &f, TrackDirtyPages: &t, HugePages: &none},
		agent:      agentChannel{nextPort: 1 << 30},
	}
}

func (m *machine) putBootSource(b BootSource) error {
	if m.started {
		return errPostBoot
	}
	if b.BootArgs != nil {
		if err := validCmdline(*b.BootArgs); err != nil {
			return badRequest("The kernel command line is invalid: %v", err)
		}
	}
	k, err := os.Open(b.KernelImagePath)
	if err != nil {
		return badRequest("The kernel file cannot be opened: %s: %s", b.KernelImagePath, osError(err))
	}
	bs := &bootSource{cfg: b, kernel: k}
	if b.InitrdPath != nil {
		f, err := os.Open(*b.InitrdPath)
		if err != nil {
			k.Close()
			return badRequest("The initrd file cannot be opened due to invalid path or invalid permissions: %s: %s", *b.InitrdPath, osError(err))
		}
		bs.initrd = f
	}
	if m.boot != nil {
		m.boot.close()
	}
	m.boot = bs
	return nil
}

func (b *bootSource) close() {
	b.kernel.Close()
	if b.initrd != nil {
		b.initrd.Close()
	}
}

func validCmdline(s string) error {
	if len(s) >= maxCmdline {
		return fmt.Errorf("command line of %d bytes exceeds the capacity of %d", len(s), maxCmdline-1)
	}
	for _, c := range []byte(s) {
		if c < 0x20 || c > 0x7e {
			return fmt.Errorf("string contains invalid character 0x%02x", c)
		}
	}
	return nil
}

func (m *machine) putDrive(id string, d Drive) error {
	if m.started {
		return errPostBoot
	}
	if d.DriveID != id {
		return badRequest("The id from the path does not match the id from the body!")
	}
	if d.CacheType != nil && *d.CacheType != "Unsafe" && *d.CacheType != "Writeback" {
		return deserializeError(fmt.Errorf("unknown variant `%s`, expected `Unsafe` or `Writeback`", *d.CacheType))
	}
	if d.IoEngine != nil && *d.IoEngine != "Sync" && *d.IoEngine != "Async" {
		return deserializeError(fmt.Errorf("unknown variant `%s`, expected `Sync` or `Async`", *d.IoEngine))
	}
	if d.Socket != nil {
		if d.PathOnHost != nil || d.IsReadOnly != nil || d.IoEngine != nil {
			return badRequest("Drive config error: vhost-user-block devices take a socket and neither path_on_host, is_read_only nor io_engine.")
		}
		return notEmulated("vhost-user-block")
	}
	if d.PathOnHost == nil {
		return badRequest("Drive config error: Unable to create the virtio block device: path_on_host is required.")
	}
	if d.IsRootDevice {
		for _, o := range m.drives {
			if o.cfg.IsRootDevice && o.cfg.DriveID != id {
				return badRequest("Drive config error: A root block device already exists!")
			}
		}
	}
	ro := d.IsReadOnly != nil && *d.IsReadOnly
	flags := os.O_RDWR
	if ro {
		flags = os.O_RDONLY
	}
	f, err := os.OpenFile(*d.PathOnHost, flags, 0)
	if err != nil {
		return badRequest("Drive config error: Unable to create the block device: BackingFile(%s, %q)", osError(err), *d.PathOnHost)
	}
	for i, o := range m.drives {
		if o.cfg.DriveID == id {
			o.file.Close()
			m.drives[i] = &drive{cfg: d, file: f}
			return nil
		}
	}
	m.drives = append(m.drives, &drive{cfg: d, file: f})
	return nil
}

func (m *machine) patchDrive(id string, d PartialDrive) error {
	if !m.started {
		return errPreBoot
	}
	if d.DriveID != id {
		return badRequest("The id from the path does not match the id from the body!")
	}
	var cur *drive
	for _, o := range m.drives {
		if o.cfg.DriveID == id {
			cur = o
		}
	}
	if cur == nil {
		return badRequest("Drive config error: Invalid block device ID: %s", id)
	}
	if d.PathOnHost != nil && *d.PathOnHost != *cur.cfg.PathOnHost {
		return notEmulated("swapping a drive's backing file")
	}
	return nil // rate limiters are accepted but not enforced
}

func (m *machine) putNetworkInterface(id string, n NetworkInterface) error {
	if m.started {
		return errPostBoot
	}
	if n.IfaceID != id {
		return badRequest("The id from the path does not match the id from the body!")
	}
	if n.GuestMAC != nil && !validMAC(*n.GuestMAC) {
		return deserializeError(fmt.Errorf("invalid MAC address: %q", *n.GuestMAC))
	}
	if n.MTU != nil && *n.MTU < 68 {
		return badRequest("Could not create the network device: invalid MTU %d: it must be between 68 and 65535", *n.MTU)
	}
	for _, o := range m.ifaces {
		if o.cfg.IfaceID == id {
			continue
		}
		if o.cfg.HostDevName == n.HostDevName {
			return badRequest("The host device name %s is already in use.", n.HostDevName)
		}
		if n.GuestMAC != nil && o.cfg.GuestMAC != nil && strings.EqualFold(*o.cfg.GuestMAC, *n.GuestMAC) {
			return badRequest("The MAC address is already in use: %s", *n.GuestMAC)
		}
	}
	tap, err := m.openTap(n.HostDevName)
	if err != nil {
		return badRequest("Could not create the network device: Open tap device failed: Error while creating ifreq structure: %v. Invalid TUN/TAP Backend provided by %s. Check our documentation on setting up the network devices.", err, n.HostDevName)
	}
	for i, o := range m.ifaces {
		if o.cfg.IfaceID == id {
			o.tap.Close()
			m.ifaces[i] = &netIface{cfg: n, tap: tap}
			return nil
		}
	}
	m.ifaces = append(m.ifaces, &netIface{cfg: n, tap: tap})
	return nil
}

// openTap attaches to an existing tap the way Firecracker does (tap.rs):
// open /dev/net/tun, then TUNSETIFF with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR.
func (m *machine) openTap(name string) (*os.File, error) {
	if len(name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("invalid interface name %q: longer than %d bytes", name, unix.IFNAMSIZ-1)
	}
	fd, err := unix.Open(m.devTun, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %s", m.devTun, osError(err))
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("invalid interface name %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF %s on %s: %s", name, m.devTun, osError(err))
	}
	return os.NewFile(uintptr(fd), "tap:"+name), nil
}

func validMAC(s string) bool {
	parts := strings.Split(s, ":")
	if len(parts) != 6 {
		return false
	}
	for _, p := range parts {
		if len(p) != 2 || !isHex(p[0]) || !isHex(p[1]) {
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func (m *machine) patchNetworkInterface(id string, n PartialNetworkInterface) error {
	if !m.started {
		return errPreBoot
	}
	if n.IfaceID != id {
		return badRequest("The id from the path does not match the id from the body!")
	}
	for _, o := range m.ifaces {
		if o.cfg.IfaceID == id {
			return nil // rate limiters are accepted but not enforced
		}
	}
	return badRequest("Network interface update error: Invalid interface ID - not found.")
}

func (m *machine) putMachineConfig(c MachineConfig) error {
	if m.started {
		return errPostBoot
	}
	if err := validateMachineConfig(c); err != nil {
		return err
	}
	f := false
	if c.Smt == nil {
		c.Smt = &f
	}
	if c.TrackDirtyPages == nil {
		c.TrackDirtyPages = &f
	}
	if c.HugePages == nil {
		none := "None"
		c.HugePages = &none
	}
	m.mc = c
	return nil
}

func (m *machine) patchMachineConfig(u MachineConfigUpdate) error {
	if m.started {
		return errPostBoot
	}
	c := m.mc
	if u.VcpuCount != nil {
		c.VcpuCount = *u.VcpuCount
	}
	if u.MemSizeMib != nil {
		c.MemSizeMib = *u.MemSizeMib
	}
	if u.Smt != nil {
		c.Smt = u.Smt
	}
	if u.CPUTemplate != nil {
		c.CPUTemplate = u.CPUTemplate
	}
	if u.TrackDirtyPages != nil {
		c.TrackDirtyPages = u.TrackDirtyPages
	}
	if u.HugePages != nil {
		c.HugePages = u.HugePages
	}
	if err := validateMachineConfig(c); err != nil {
		return err
	}
	m.mc = c
	return nil
}

func validateMachineConfig(c MachineConfig) error {
	smt := c.Smt != nil && *c.Smt
	if c.VcpuCount == 0 || c.VcpuCount > 32 || (smt && c.VcpuCount > 1 && c.VcpuCount%2 == 1) {
		return badRequest("The vCPU number is invalid: it should be either 1 or an even number when SMT is enabled.")
	}
	if c.MemSizeMib == 0 {
		return badRequest("The memory size (MiB) is invalid.")
	}
	if c.CPUTemplate != nil {
		switch *c.CPUTemplate {
		case "C3", "T2", "T2S", "T2CL", "T2A", "V1N1", "None":
		default:
			return deserializeError(fmt.Errorf("unknown variant `%s`, expected one of `C3`, `T2`, `T2S`, `T2CL`, `T2A`, `V1N1`, `None`", *c.CPUTemplate))
		}
	}
	if c.HugePages != nil {
		switch *c.HugePages {
		case "None":
		case "2M":
			if c.MemSizeMib%2 != 0 {
				return badRequest("The memory size (MiB) is invalid: it must be a multiple of the huge page size (2 MiB).")
			}
		default:
			return deserializeError(fmt.Errorf("unknown variant `%s`, expected `None` or `2M`", *c.HugePages))
		}
	}
	return nil
}

func (m *machine) putVsock(v Vsock) error {
	if m.started {
		return errPostBoot
	}
	if v.GuestCID < 3 {
		return badRequest("Vsock config error: guest_cid %d is invalid: it must be at least 3.", v.GuestCID)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: v.UDSPath, Net: "unix"})
	if err != nil {
		return badRequest("Vsock config error: Cannot create backend for vsock device: UnixBind(%s, %q)", osError(err), v.UDSPath)
	}
	// Firecracker leaves its socket files behind; removing the jail is the
	// caller's job.
	ln.SetUnlinkOnClose(false)
	if m.vsock != nil {
		m.vsock.ln.Close()
	}
	m.vsock = &vsockDev{cfg: v, ln: ln}
	go m.serveVsock(ln)
	return nil
}

func (m *machine) putLogger(l Logger) error {
	if m.started {
		return errPostBoot
	}
	if m.loggerSet {
		return badRequest("Logger error: The logger was already initialized.")
	}
	lvl := levelInfo
	if l.Level != nil {
		var ok bool
		if lvl, ok = parseLevel(*l.Level); !ok {
			return deserializeError(fmt.Errorf("unknown variant `%s`, expected one of `Error`, `Warning`, `Info`, `Debug`, `Trace`, `Off`", *l.Level))
		}
	}
	w := m.log.w
	if l.LogPath != nil {
		f, err := openSink(*l.LogPath)
		if err != nil {
			return badRequest("Logger error: Failed to open target file %s: %s", *l.LogPath, osError(err))
		}
		w = f
	}
	m.log.configure(w, lvl, l.ShowLevel != nil && *l.ShowLevel, l.ShowLogOrigin != nil && *l.ShowLogOrigin)
	m.loggerSet = true
	return nil
}

func (m *machine) putMetrics(mt Metrics) error {
	if m.started {
		return errPostBoot
	}
	if m.metrics != nil {
		return badRequest("Metrics error: Reinitialization of metrics not allowed.")
	}
	f, err := openSink(mt.MetricsPath)
	if err != nil {
		return badRequest("Metrics error: Cannot initialize the metrics system due to bad user input: %s: %s", mt.MetricsPath, osError(err))
	}
	m.metrics = newMetricsSink(f, m)
	return nil
}

func (m *machine) putMmdsConfig(c MmdsConfig) error {
	if m.started {
		return errPostBoot
	}
	if c.Version != nil && *c.Version != "V1" && *c.Version != "V2" {
		return deserializeError(fmt.Errorf("unknown variant `%s`, expected `V1` or `V2`", *c.Version))
	}
	if len(c.NetworkInterfaces) == 0 {
		return badRequest("The list of network interface IDs that allow forwarding MMDS requests is empty.")
	}
	for _, id := range c.NetworkInterfaces {
		found := false
		for _, o := range m.ifaces {
			found = found || o.cfg.IfaceID == id
		}
		if !found {
			return badRequest("The list of network interface IDs provided contains at least one ID that does not correspond to any existing network interface.")
		}
	}
	if c.IPv4Address != nil {
		ip := net.ParseIP(*c.IPv4Address).To4()
		if ip == nil || ip[0] != 169 || ip[1] != 254 || ip[2] == 0 || ip[2] == 255 {
			return badRequest("The MMDS IPv4 address is not link local.")
		}
	}
	return notEmulated("MMDS in the guest")
}

func (m *machine) putSerial(s SerialDevice) error {
	if m.started {
		return errPostBoot
	}
	if s.SerialOutPath != nil {
		f, err := os.OpenFile(*s.SerialOutPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return badRequest("Serial device error: cannot open %s: %s", *s.SerialOutPath, osError(err))
		}
		if m.serialFile != nil {
			m.serialFile.Close()
		}
		m.serialFile = f
	}
	m.serial = &s
	return nil
}

func (m *machine) patchVM(v VM) error {
	if v.State != "Paused" && v.State != "Resumed" {
		return deserializeError(fmt.Errorf("unknown variant `%s`, expected `Paused` or `Resumed`", v.State))
	}
	if !m.started {
		return errPreBoot
	}
	if v.State == "Paused" {
		if err := m.backend.Pause(); err != nil {
			return badRequest("Failed to pause the microVM: %v", err)
		}
		m.paused = true
		return nil
	}
	if err := m.backend.Resume(); err != nil {
		return badRequest("Failed to resume the microVM: %v", err)
	}
	m.paused = false
	return nil
}

// vmConfig is GET /vm/config.
func (m *machine) vmConfig() map[string]any {
	out := map[string]any{"machine-config": m.mc}
	if m.boot != nil {
		out["boot-source"] = m.boot.cfg
	}
	drives := []Drive{}
	for _, d := range m.drives {
		drives = append(drives, d.cfg)
	}
	out["drives"] = drives
	ifaces := []NetworkInterface{}
	for _, n := range m.ifaces {
		ifaces = append(ifaces, n.cfg)
	}
	out["network-interfaces"] = ifaces
	if m.vsock != nil {
		out["vsock"] = m.vsock.cfg
	}
	if m.entropy != nil {
		out["entropy"] = m.entropy
	}
	return out
}

// running reports whether a booted guest may still answer.
func (m *machine) running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.started && !m.halted && m.backend != nil
}

func (m *machine) setHalted() {
	m.mu.Lock()
	m.halted = true
	m.mu.Unlock()
}

func (m *machine) countRequest(method string) {
	m.countMu.Lock()
	m.reqCounts[strings.ToLower(method)+"_api_requests"]++
	m.countMu.Unlock()
}

func (m *machine) requestCounts() map[string]uint64 {
	m.countMu.Lock()
	defer m.countMu.Unlock()
	out := make(map[string]uint64, len(m.reqCounts))
	for k, v := range m.reqCounts {
		out[k] = v
	}
	return out
}
