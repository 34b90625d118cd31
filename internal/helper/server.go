// Package helper is banger's root helper: a unix-socket server, run as
// root, that performs a closed list of typed, validated privileged ops
// (internal/privop) for one registered owner.
//
// Every connection carries one request. The server reads the peer's kernel
// credentials (SO_PEERCRED) first and serves only uid 0 and the owner uid
// from the install metadata; anyone else gets a forbidden answer and no op
// runs. A request must arrive whole within ReadTimeout (per connection, so
// a stalled client delays no one else) and be at most privop.MaxRequest
// bytes; a larger declared length is refused before the body is read.
// Bridges and taps are acted on only if the helper's ledger says it created
// them. The network work itself is done by a Net (internal/netdev); routing
// of the host's ".vm" lookups by a Resolver (internal/resolved); Debian
// image builds by an ImageBuilder (internal/image, wired by the binary).
// An image build runs alone (a second one is refused as busy, other ops are
// still served), in a directory of the state dir that is gone before the
// answer, and has BuildTimeout instead of OpTimeout. Firecracker jails
// (internal/jail) live under JailBase and are recorded in a JailLedger;
// a launch_firecracker request carries its files as fds (see jail.go).
//
// Socket permissions (see Listen): the socket lives in a directory owned by
// root with mode 0711, so only root can create, replace or remove entries
// in it; the socket is mode 0660, owner root, group the owner's primary
// group. The peer-credential check is what authorizes; the file mode only
// narrows who can reach it.
package helper

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"banger/internal/dmsnap"
	"banger/internal/installmeta"
	"banger/internal/jail"
	"banger/internal/peercred"
	"banger/internal/privop"
	"banger/internal/resolved"

	"golang.org/x/sys/unix"
)

// Defaults.
const (
	DefaultSocket      = "/run/banger-root/helper.sock"
	DefaultStateDir    = "/var/lib/banger-root"
	DefaultReadTimeout = 5 * time.Second
	DefaultOpTimeout   = 60 * time.Second
	// DefaultMaxLoops: 256 VMs with two file drives each.
	DefaultMaxLoops = 512
	DefaultMaxConns = 128
	// DefaultBuildTimeout bounds one image build (debootstrap takes
	// minutes).
	DefaultBuildTimeout = 30 * time.Minute
)

// Config configures a Server.
type Config struct {
	Net    Net
	Ledger *Ledger
	// Resolver routes the host's ".vm" lookups to bangerd. Default: the
	// host's systemd-resolved (internal/resolved).
	Resolver Resolver
	// OwnerUID and OwnerGID are the registered owner (install metadata);
	// taps are created owned by them.
	OwnerUID int
	OwnerGID int
	// StateDir is the helper's root-owned state directory; image builds
	// happen in its BuildDir. Required when Images is set.
	StateDir string
	// Images builds root images for debootstrap_image; nil answers that
	// op with an internal "image building not configured".
	Images ImageBuilder
	// FirecrackerBin and JailerBin are the binaries the install pinned
	// (install metadata); the helper runs no other for Firecracker VMs.
	// Empty: Firecracker is off.
	FirecrackerBin, JailerBin string
	// Subnet is the bridge subnet root pinned (install metadata):
	// ensure_bridge gives a bridge only its first host as gateway, and
	// apply_firewall takes no other subnet. Default
	// installmeta.DefaultSubnet.
	Subnet netip.Prefix
	// VMMUIDBase is the first of VMMUIDCount uids (and gids) the helper
	// gives firecracker processes, one per running VM. Defaults: the
	// install metadata's.
	VMMUIDBase, VMMUIDCount int
	// ProcDir is where allocUID looks for processes already running as a
	// uid. Default /proc.
	ProcDir string
	// MaxLoops bounds the loop devices held for Firecracker drives, a
	// host-wide resource. Default DefaultMaxLoops.
	MaxLoops int
	// JailBase is the jailer's --chroot-base-dir, checked at each launch
	// (internal/jail.CheckBase). Default: <StateDir>/jail.
	JailBase string
	// Jails records the jails the helper staged. Default: the JailLedger
	// in StateDir. Without either, the jail ops answer internal "jails
	// not configured".
	Jails *JailLedger
	// Snapshots makes VM root disks as dm snapshots; nil answers those
	// ops not_found with SnapshotsOff as the reason. The binary opens it
	// on the state dir when the kernel has device-mapper.
	Snapshots    *dmsnap.Manager
	SnapshotsOff string
	// OpenSnapshot opens a new snapshot's device node (tests swap it for
	// the fake backend's devices). Default: the node, checked to be that
	// block device.
	OpenSnapshot func(path string, major, minor uint32, uuid string) (*os.File, error)
	Version      string
	Log          *slog.Logger
	// ReadTimeout bounds the time from accept to the last byte of the
	// request. Default DefaultReadTimeout.
	ReadTimeout time.Duration
	// OpTimeout bounds one op. Default DefaultOpTimeout.
	OpTimeout time.Duration
	// BuildTimeout bounds one image build, in place of OpTimeout. Default
	// DefaultBuildTimeout.
	BuildTimeout time.Duration
	// MaxConns bounds connections handled at once; past it, new ones get
	// an internal "busy" answer. Default DefaultMaxConns.
	MaxConns int
}

// Server serves the helper protocol.
type Server struct {
	cfg   Config
	log   *slog.Logger
	slots chan struct{}
	// opMu serializes ops that change state, so the ledger and the host
	// move together.
	opMu sync.Mutex
	// buildMu is held by the one image build in progress; a second build
	// does not wait for it but is refused as busy.
	buildMu sync.Mutex
	// jailMu serializes launches and cleanups of jails, apart from
	// opMu: staging a jail copies binaries and must not hold up the
	// network ops.
	jailMu sync.Mutex
	// holds are the loop devices of each running jail's drives (jailMu).
	holds map[string]jail.Holds
	wg    sync.WaitGroup
}

// Description is what `banger-helper --describe` prints: the version and
// the closed list of operations this helper serves.
type Description struct {
	Version string   `json:"version"`
	Ops     []string `json:"ops"`
}

// NewServer checks cfg and returns a Server.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Net == nil || cfg.Ledger == nil {
		return nil, errors.New("new helper server: Net and Ledger are required")
	}
	if cfg.OwnerUID <= 0 {
		return nil, fmt.Errorf("new helper server: owner uid %d: want a non-root uid", cfg.OwnerUID)
	}
	if cfg.Resolver == nil {
		cfg.Resolver = resolved.New()
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = DefaultOpTimeout
	}
	if cfg.BuildTimeout <= 0 {
		cfg.BuildTimeout = DefaultBuildTimeout
	}
	if cfg.Images != nil && (!filepath.IsAbs(cfg.StateDir) || filepath.Clean(cfg.StateDir) != cfg.StateDir) {
		return nil, fmt.Errorf("new helper server: state dir %q: want a clean absolute path to build images in", cfg.StateDir)
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if err := configureJails(&cfg); err != nil {
		return nil, fmt.Errorf("new helper server: %w", err)
	}
	if err := configureSubnet(&cfg); err != nil {
		return nil, fmt.Errorf("new helper server: %w", err)
	}
	if cfg.VMMUIDBase == 0 {
		cfg.VMMUIDBase = installmeta.DefaultVMMUIDBase
	}
	if cfg.VMMUIDCount <= 0 {
		cfg.VMMUIDCount = installmeta.VMMUIDCount
	}
	if cfg.ProcDir == "" {
		cfg.ProcDir = "/proc"
	}
	if cfg.MaxLoops <= 0 {
		cfg.MaxLoops = DefaultMaxLoops
	}
	return &Server{cfg: cfg, log: cfg.Log, slots: make(chan struct{}, cfg.MaxConns), holds: map[string]jail.Holds{}}, nil
}

// Serve accepts connections on ln until ctx is done, then closes ln and
// waits for the connections in progress (each bounded by ReadTimeout and
// OpTimeout). Ops already running are not cancelled by ctx: a half-made
// tap is worse than a slow shutdown. Image builds are the exception: ctx
// cancels them (their directory is removed either way), so a stop does not
// wait up to BuildTimeout.
func (s *Server) Serve(ctx context.Context, ln *net.UnixListener) error {
	s.reconcileJails()
	s.reconcileSnapshots(ctx)
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	opCtx := context.WithoutCancel(ctx)
	var err error
	for {
		conn, aerr := ln.AcceptUnix()
		if aerr != nil {
			if ctx.Err() == nil {
				err = fmt.Errorf("accept: %w", aerr)
			}
			break
		}
		select {
		case s.slots <- struct{}{}:
		default:
			s.log.Warn("refused connection: too many in progress", "max", s.cfg.MaxConns)
			s.reply(conn, nil, nil, privop.Errorf(privop.CodeInternal, "helper busy: %d connections in progress", s.cfg.MaxConns))
			conn.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.slots }()
			defer conn.Close()
			s.handle(opCtx, ctx, conn)
		}()
	}
	ln.Close()
	s.wg.Wait()
	return err
}

// handle serves one connection: check the peer, read one request, run it,
// answer. Ops run under ctx, image builds under buildCtx.
func (s *Server) handle(ctx, buildCtx context.Context, conn *net.UnixConn) {
	start := time.Now()
	cred, err := peercred.Get(conn)
	if err != nil {
		s.log.Error("dropped connection", "err", err)
		return
	}
	log := s.log.With("peer_uid", cred.UID, "peer_pid", cred.PID)
	if cred.UID != 0 && int64(cred.UID) != int64(s.cfg.OwnerUID) {
		log.Warn("refused connection: uid not served")
		s.reply(conn, nil, nil, privop.Errorf(privop.CodeForbidden, "uid %d may not use the banger helper (only root and banger's owner)", cred.UID))
		return
	}
	_ = conn.SetReadDeadline(start.Add(s.cfg.ReadTimeout))
	fr := &rightsReader{conn: conn}
	defer fr.closeFiles()
	body, err := privop.ReadFrame(fr, privop.MaxRequest)
	if fr.err != nil {
		err = fr.err
	}
	if err != nil {
		var ne net.Error
		switch {
		case errors.Is(err, privop.ErrFrameTooLarge), fr.err != nil:
			log.Warn("refused request", "err", err)
			s.reply(conn, nil, nil, privop.Errorf(privop.CodeBadRequest, "%v", err))
		case errors.As(err, &ne) && ne.Timeout():
			log.Warn("refused request: not received in time", "timeout", s.cfg.ReadTimeout)
			s.reply(conn, nil, nil, privop.Errorf(privop.CodeBadRequest, "request not received within %s", s.cfg.ReadTimeout))
		default:
			log.Warn("dropped connection", "err", err)
		}
		return
	}
	op, err := privop.DecodeRequest(body)
	if err != nil {
		log.Warn("refused request", "err", err)
		s.reply(conn, nil, nil, err)
		return
	}
	log = log.With("op", op.Name())
	if want := privop.RequestFiles(op); len(fr.files) != want {
		log.Warn("refused request: wrong number of fds", "fds", len(fr.files), "want", want)
		s.reply(conn, nil, nil, privop.Errorf(privop.CodeBadRequest, "%s: the request carries %d fds, want %d", op.Name(), len(fr.files), want))
		return
	}
	timeout := s.cfg.OpTimeout
	if _, ok := op.(privop.DebootstrapImage); ok {
		ctx, timeout = buildCtx, s.cfg.BuildTimeout
	}
	octx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	result, file, err := s.dispatch(octx, cred, op, fr.files)
	if file != nil {
		defer file.Close()
	}
	if err != nil {
		log.Warn("op failed", "err", err, "code", privop.CodeOf(err), "took", time.Since(start))
	} else {
		log.Info("op done", "took", time.Since(start))
	}
	s.reply(conn, result, file, err)
}

// errTooManyFiles: a request carried more than privop.MaxRequestFiles fds.
var errTooManyFiles = fmt.Errorf("more than %d fds with the request", privop.MaxRequestFiles)

// rightsReader reads a request from conn and keeps the fds passed with it
// (SCM_RIGHTS), at most privop.MaxRequestFiles; past that, every one is
// closed and err is set. The fds arrive close-on-exec (Go receives with
// MSG_CMSG_CLOEXEC), so no child inherits them.
type rightsReader struct {
	conn  *net.UnixConn
	files []*os.File
	err   error
}

func (r *rightsReader) Read(p []byte) (int, error) {
	oob := make([]byte, unix.CmsgSpace(4*privop.MaxRequestFiles))
	n, oobn, flags, _, err := r.conn.ReadMsgUnix(p, oob)
	if oobn > 0 {
		r.take(oob[:oobn])
	}
	if flags&unix.MSG_CTRUNC != 0 && r.err == nil {
		r.err = errTooManyFiles // the kernel dropped the fds that did not fit
	}
	if r.err != nil {
		r.closeFiles()
	}
	return n, err
}

// take keeps the fds of the control messages in oob.
func (r *rightsReader) take(oob []byte) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		r.err = fmt.Errorf("parse request fds: %w", err)
		return
	}
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_RIGHTS {
			continue
		}
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			r.err = fmt.Errorf("parse request fds: %w", err)
			continue
		}
		for _, fd := range fds {
			if r.err == nil && len(r.files) == privop.MaxRequestFiles {
				r.err = errTooManyFiles
			}
			if r.err != nil {
				unix.Close(fd)
				continue
			}
			r.files = append(r.files, os.NewFile(uintptr(fd), "request-fd"))
		}
	}
}

// closeFiles closes the request's fds: after the op (anything that must
// outlive it holds its own reference), or when the request is refused.
func (r *rightsReader) closeFiles() {
	for _, f := range r.files {
		f.Close()
	}
	r.files = nil
}

// reply writes one answer frame, with file's fd attached when not nil.
func (s *Server) reply(conn *net.UnixConn, result any, file *os.File, opErr error) {
	frame := privop.Frame(privop.EncodeAnswer(result, opErr))
	_ = conn.SetWriteDeadline(time.Now().Add(s.cfg.ReadTimeout))
	var err error
	if file != nil {
		var n int
		n, _, err = conn.WriteMsgUnix(frame, unix.UnixRights(int(file.Fd())), nil)
		if err == nil && n < len(frame) {
			_, err = conn.Write(frame[n:])
		}
	} else {
		_, err = conn.Write(frame)
	}
	if err != nil {
		s.log.Debug("answer not delivered", "err", err)
	}
}

// errNotOurs is the refusal for a device missing from the ledger.
func errNotOurs(kind, name string) error {
	return privop.Errorf(privop.CodeForbidden, "%s %s was not created by banger", kind, name)
}

// dispatch runs a validated op. Errors from Net are internal (not_found
// when they wrap fs.ErrNotExist).
func (s *Server) dispatch(ctx context.Context, cred peercred.Cred, op privop.Op, files []*os.File) (any, *os.File, error) {
	switch o := op.(type) {
	case privop.Ping:
		r := privop.PingResult{
			Version: s.cfg.Version, OwnerUID: s.cfg.OwnerUID, PeerUID: int(cred.UID), Ops: privop.HelperOps(),
			Snapshots: s.cfg.Snapshots != nil, SnapshotsOff: s.snapshotsOff(),
			Firecracker: s.cfg.FirecrackerBin, Jailer: s.cfg.JailerBin, FirecrackerOff: s.firecrackerOff(),
			Subnet: s.cfg.Subnet.String(),
		}
		r.SnapshotsActive, r.SnapshotsStuck = s.snapshotCounts()
		_, r.Taps = s.cfg.Ledger.Names()
		return r, nil, nil
	case privop.EnsureBridge:
		s.opMu.Lock()
		defer s.opMu.Unlock()
		return nil, nil, s.ensureBridge(ctx, o)
	case privop.DeleteBridge:
		s.opMu.Lock()
		defer s.opMu.Unlock()
		return nil, nil, s.deleteBridge(ctx, o)
	case privop.CreateTap:
		s.opMu.Lock()
		defer s.opMu.Unlock()
		return nil, nil, s.createTap(ctx, o)
	case privop.DeleteTap:
		s.opMu.Lock()
		defer s.opMu.Unlock()
		if _, ok := s.cfg.Ledger.Tap(o.Tap); !ok {
			return nil, nil, errNotOurs("tap", o.Tap)
		}
		if err := s.cfg.Net.DeleteTap(ctx, o.Tap); err != nil {
			return nil, nil, netErr("delete tap", err)
		}
		return nil, nil, s.cfg.Ledger.RemoveTap(o.Tap)
	case privop.OpenTap:
		s.opMu.Lock()
		defer s.opMu.Unlock()
		if _, ok := s.cfg.Ledger.Tap(o.Tap); !ok {
			return nil, nil, errNotOurs("tap", o.Tap)
		}
		f, err := s.cfg.Net.OpenTap(ctx, o.Tap)
		if err != nil {
			return nil, nil, netErr("open tap", err)
		}
		return privop.OpenTapResult(o), f, nil
	case privop.ApplyFirewall:
		spec, err := o.Parse()
		if err != nil {
			return nil, nil, privop.Errorf(privop.CodeBadRequest, "%v", err)
		}
		s.opMu.Lock()
		defer s.opMu.Unlock()
		if !s.cfg.Ledger.HasBridge(spec.Bridge) {
			return nil, nil, errNotOurs("bridge", spec.Bridge)
		}
		if err := s.checkPinnedSubnet(spec.Subnet, spec.Gateway); err != nil {
			return nil, nil, err
		}
		return nil, nil, netErr("apply firewall", s.cfg.Net.ApplyFirewall(ctx, s.firewallFor(spec)))
	case privop.ClearFirewall:
		s.opMu.Lock()
		defer s.opMu.Unlock()
		return nil, nil, netErr("clear firewall", s.cfg.Net.ClearFirewall(ctx))
	case privop.SyncResolverRouting:
		s.opMu.Lock()
		defer s.opMu.Unlock()
		r, err := s.syncResolverRouting(ctx, o)
		return r, nil, err
	case privop.ClearResolverRouting:
		s.opMu.Lock()
		defer s.opMu.Unlock()
		r, err := s.clearResolverRouting(ctx, o)
		return r, nil, err
	case privop.DebootstrapImage:
		// Not under opMu: a build takes minutes and touches neither the
		// ledger nor the network.
		r, f, err := s.buildDebootstrap(ctx, o)
		if err != nil {
			return nil, nil, err
		}
		return r, f, nil
	case privop.LaunchFirecracker:
		// Not under opMu: under jailMu.
		r, err := s.launchFirecracker(ctx, o, files)
		if err != nil {
			return nil, nil, err
		}
		return r, nil, nil
	case privop.DialJail:
		f, err := s.dialJail(ctx, o)
		if err != nil {
			return nil, nil, err
		}
		return nil, f, nil
	case privop.SignalVMM:
		return nil, nil, s.signalVMM(o)
	case privop.CleanupJail:
		return nil, nil, s.cleanupJail(o)
	case privop.CreateSnapshot:
		// Not under opMu: the manager serializes per VM and journals.
		r, f, err := s.createSnapshot(ctx, o, files)
		if err != nil {
			return nil, nil, err
		}
		return r, f, nil
	case privop.RemoveSnapshot:
		return nil, nil, s.removeSnapshot(ctx, o)
	default:
		return nil, nil, privop.Errorf(privop.CodeBadRequest, "op %s is not served by the helper", op.Name())
	}
}

// netErr wraps a Net failure with its code; nil stays nil.
func netErr(what string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return &privop.Error{Code: privop.CodeNotFound, Message: what + ": " + err.Error()}
	}
	return fmt.Errorf("%s: %w", what, err)
}
