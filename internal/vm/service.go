// Package vm is bangerd's orchestration layer: VM lifecycle (create, start,
// stop, delete, adopt after a restart), images and kernels, all on top of the
// state store, a VMM driver and the guest agent. It is the only package that
// decides what happens to a VM; the daemon package only maps HTTP to it.
package vm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"

	"banger/internal/agentclient"
	"banger/internal/catalog"
	"banger/internal/config"
	"banger/internal/image"
	"banger/internal/oci"
	"banger/internal/paths"
	"banger/internal/privop"
	"banger/internal/store"
	"banger/internal/vmm"
)

// Progress receives human-readable progress lines of long operations.
type Progress func(string)

func (p Progress) say(format string, a ...any) {
	if p != nil {
		p(fmt.Sprintf(format, a...))
	}
}

// Options wires a Service.
type Options struct {
	Log    *slog.Logger
	Store  *store.Store
	Layout paths.Layout
	Config config.Config
	Host   config.Host
	Driver vmm.Driver
	// OtherDrivers are the drivers not chosen: VMs they started (before a
	// change of vmm) are still adopted and released through them.
	OtherDrivers []vmm.Driver
	// DriverNote says why Driver was chosen (shown by doctor).
	DriverNote string
	// Firecracker reports on the Firecracker setup for doctor, whichever
	// driver is in use; nil when unknown.
	Firecracker interface {
		Doctor(ctx context.Context) (status, detail string)
	}
	// OCI is the registry blob cache for image pulls (nil: pulls refused).
	OCI *oci.Cache
	// Storage makes root disks (dm, reflink, overlay or copy; "" = copy), and
	// StorageNote says why it was chosen.
	Storage     image.Storage
	StorageNote string
	// Snapshots makes dm snapshot root disks (the root helper); required
	// for storage dm and for booting VMs made with it. nil: none.
	Snapshots Snapshots
	// Catalog resolves short image and kernel names (nil: none).
	Catalog  *catalog.Catalog
	AgentBin string // static guest agent binary
	Priv     privop.Host
	Version  string
	// Network turns guest networking on; nil leaves guests without a NIC.
	Network *NetworkOptions
	// SSH turns on SSH material (host keys, known_hosts, ssh_config).
	SSH *SSHOptions
}

// Service owns every VM of one owner.
type Service struct {
	log      *slog.Logger
	st       *store.Store
	layout   paths.Layout
	cfg      config.Config
	defaults config.Defaults
	driver   vmm.Driver
	opts     Options
	agentBin string
	priv     privop.Host
	version  string
	net      *network
	ssh      *SSHOptions

	mu      sync.Mutex
	running map[string]*instance   // by VM id
	locks   map[string]*sync.Mutex // per-VM operation locks, by id
	initrds map[string]string      // boot initramfs path by kernel and agent version
	ctx     context.Context        // lives as long as the service
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	imageMu sync.Mutex // serialises image/kernel writes
}

// instance is a VM whose VMM process bangerd currently tracks.
type instance struct {
	id       string
	name     string
	proc     *vmm.Process
	console  *consoleLog
	stopping bool // set by stop/kill/delete so the watcher does not flag an error

	sessMu sync.Mutex
	sess   *agentclient.Session
}

// New builds a Service. Call Reconcile before serving requests.
func New(o Options) (*Service, error) {
	ctx, cancel := context.WithCancel(context.Background())
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	var nw *network
	if o.Network != nil {
		var err error
		if nw, err = newNetwork(*o.Network); err != nil {
			cancel()
			return nil, err
		}
	}
	return &Service{net: nw, ssh: o.SSH,
		log: o.Log, st: o.Store, layout: o.Layout, cfg: o.Config, defaults: o.Config.ResolveDefaults(o.Host),
		driver: o.Driver, opts: o, agentBin: o.AgentBin, priv: o.Priv, version: o.Version,
		running: map[string]*instance{}, locks: map[string]*sync.Mutex{}, initrds: map[string]string{},
		ctx: ctx, cancel: cancel,
	}, nil
}

// Close detaches from running VMs without stopping them: they keep running
// and the next bangerd adopts them.
func (s *Service) Close() {
	s.cancel()
	s.mu.Lock()
	idle := len(s.running) == 0
	for _, in := range s.running {
		in.sessMu.Lock()
		if in.sess != nil {
			in.sess.Close()
		}
		in.sessMu.Unlock()
		in.console.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	if idle && s.net != nil {
		// Nothing runs: leave no bridge or rules behind. Running VMs keep
		// theirs, for the next bangerd to adopt.
		s.net.teardown(s.log)
	}
}

// Defaults returns the resolved VM defaults.
func (s *Service) Defaults() config.Defaults { return s.defaults }

// lock takes the operation lock of one VM.
func (s *Service) lock(id string) func() {
	s.mu.Lock()
	l, ok := s.locks[id]
	if !ok {
		l = &sync.Mutex{}
		s.locks[id] = l
	}
	s.mu.Unlock()
	l.Lock()
	return l.Unlock
}

func (s *Service) instance(id string) *instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running[id]
}

// removeAll deletes paths, ignoring ones already gone.
func removeAll(paths ...string) error {
	var errs []error
	for _, p := range paths {
		if p == "" {
			continue
		}
		if err := os.RemoveAll(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
