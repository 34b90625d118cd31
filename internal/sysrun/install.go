package sysrun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"banger/internal/api/client"
	"banger/internal/atomicfile"
	"banger/internal/errdefs"
	"banger/internal/execx"
	"banger/internal/installmeta"
	"banger/internal/paths"
	"banger/internal/sysunit"
)

// System install layout.
const (
	DefaultInstallBinDir = "/usr/local/lib/banger"
	DefaultLinkPath      = "/usr/local/bin/banger"
	DefaultUnitDir       = "/etc/systemd/system"
)

// Binaries installed together.
var installedBins = []string{"banger", BangerdBin, HelperBin, "banger-agent"}

// Systemctl runs systemctl with args (argv, never a shell).
type Systemctl interface {
	Run(ctx context.Context, args ...string) ([]byte, error)
}

// InstallOptions configure install, status, restart and uninstall.
type InstallOptions struct {
	Owner          string // user name; uninstall/status read it from the metadata
	SrcDir         string // where the binaries to install are ("" = next to this executable)
	BinDir         string // default DefaultInstallBinDir
	LinkPath       string // default DefaultLinkPath ("-" = none)
	UnitDir        string // default DefaultUnitDir
	InstallMeta    string // default installmeta.DefaultPath
	HelperSocket   string // default DefaultHelperSocket
	HelperStateDir string // default DefaultHelperStateDir
	// StateDir, CacheDir and RuntimeDir are bangerd's under systemd; they
	// are created by systemd and named here for uninstall and status.
	StateDir, CacheDir, RuntimeDir string
	Wait                           time.Duration // how long to wait for both sockets (default 30s)
	// Pins are the Firecracker binaries, VMM uids and bridge subnet root
	// pins for the helper (install metadata).
	Pins Pins
	// HostPrefixes lists the host's addresses and routes for the subnet
	// check (nil: the host's own).
	HostPrefixes HostPrefixes
	Out          io.Writer
	Systemctl    Systemctl
	// Ready waits until both services answer (nil: dial their sockets).
	Ready func(ctx context.Context) error
}

func (o *InstallOptions) setDefaults() {
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&o.BinDir, DefaultInstallBinDir)
	def(&o.LinkPath, DefaultLinkPath)
	def(&o.UnitDir, DefaultUnitDir)
	def(&o.InstallMeta, installmeta.DefaultPath)
	def(&o.HelperSocket, DefaultHelperSocket)
	def(&o.HelperStateDir, DefaultHelperStateDir)
	def(&o.StateDir, sysunit.StateDir)
	def(&o.CacheDir, sysunit.CacheDir)
	def(&o.RuntimeDir, sysunit.RuntimeDir)
	if o.Wait == 0 {
		o.Wait = 30 * time.Second
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
}

// UnitSpec is the spec of the two units for owner.
func (o InstallOptions) UnitSpec(owner Owner) sysunit.Spec {
	o.setDefaults()
	return sysunit.Spec{
		BinDir: o.BinDir, Owner: owner.User, OwnerUID: int(owner.UID), OwnerGID: int(owner.GID), Home: owner.Home,
		HelperSocket: o.HelperSocket, HelperStateDir: o.HelperStateDir, InstallMeta: o.InstallMeta,
	}
}

// PrintUnits writes both units as install would write them.
func PrintUnits(w io.Writer, o InstallOptions) error {
	owner, err := LookupOwner(o.Owner)
	if err != nil {
		return err
	}
	spec := o.UnitSpec(owner)
	if err := spec.Validate(); err != nil {
		return errdefs.Invalid("%v", err)
	}
	_, err = fmt.Fprintf(w, "# %s\n%s\n# %s\n%s", sysunit.HelperUnit, sysunit.Helper(spec), sysunit.DaemonUnit, sysunit.Daemon(spec))
	return err
}

// Install installs banger as two systemd services for owner and returns
// once both sockets answer. Re-running it refreshes binaries, metadata and
// units, and restarts the services.
func Install(ctx context.Context, o InstallOptions) error {
	o.setDefaults()
	if err := checkRoot(os.Geteuid()); err != nil {
		return err
	}
	owner, err := LookupOwner(o.Owner)
	if err != nil {
		return err
	}
	if err := checkHome(owner); err != nil {
		return err
	}
	spec := o.UnitSpec(owner)
	if err := spec.Validate(); err != nil {
		return errdefs.Invalid("%v", err)
	}
	if err := o.Pins.Check(SystemAccounts); err != nil {
		return err
	}
	if o.HostPrefixes == nil {
		o.HostPrefixes = hostPrefixesIn("")
	}
	if err := o.Pins.CheckSubnetFree(ctx, o.HostPrefixes, o.HelperStateDir); err != nil {
		return err
	}
	say := func(format string, a ...any) { fmt.Fprintf(o.Out, "banger system install: "+format+"\n", a...) }
	if o.SrcDir == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find own executable: %w", err)
		}
		if exe, err = filepath.EvalSymlinks(exe); err != nil {
			return fmt.Errorf("find own executable: %w", err)
		}
		o.SrcDir = filepath.Dir(exe)
	}
	if err := installBinaries(o.SrcDir, o.BinDir, o.LinkPath); err != nil {
		return err
	}
	say("binaries in %s", o.BinDir)
	meta := o.Pins.apply(Metadata(owner, time.Now()))
	meta.Mode = installmeta.ModeSystemd
	if err := installmeta.Write(o.InstallMeta, meta); err != nil {
		return err
	}
	// bangerd's configuration stays in the owner's home, which its unit
	// sees read-only except for this directory; it must exist.
	cfgDir := filepath.Join(owner.Home, ".config", "banger")
	if err := ensureOwnerDir(cfgDir, owner); err != nil {
		return err
	}
	for name, text := range map[string]string{sysunit.HelperUnit: sysunit.Helper(spec), sysunit.DaemonUnit: sysunit.Daemon(spec)} {
		if err := atomicfile.Write(filepath.Join(o.UnitDir, name), []byte(text), 0o644); err != nil {
			return fmt.Errorf("write unit: %w", err)
		}
	}
	say("units %s and %s in %s", sysunit.HelperUnit, sysunit.DaemonUnit, o.UnitDir)
	for _, args := range [][]string{
		{"daemon-reload"},
		{"enable", sysunit.HelperUnit, sysunit.DaemonUnit},
		// restart, not start: a re-install must run the new binaries
		// and units. KillMode=process keeps the VMs.
		{"restart", sysunit.HelperUnit},
		{"restart", sysunit.DaemonUnit},
	} {
		if _, err := o.Systemctl.Run(ctx, args...); err != nil {
			return fmt.Errorf("systemctl %s: %w", strings.Join(args, " "), err)
		}
	}
	if err := o.waitSockets(ctx); err != nil {
		return err
	}
	say("up: %s and %s answer; as %s run: banger vm run", o.HelperSocket, filepath.Join(o.RuntimeDir, "bangerd.sock"), owner.User)
	return nil
}

// waitSockets waits (bounded) until the helper and bangerd answer.
func (o InstallOptions) waitSockets(ctx context.Context) error {
	if o.Ready != nil {
		return o.Ready(ctx)
	}
	ctx, cancel := context.WithTimeout(ctx, o.Wait)
	defer cancel()
	daemon := client.New(filepath.Join(o.RuntimeDir, "bangerd.sock"), "", "")
	// bangerd runs as the owner the metadata names, not as root.
	if meta, err := installmeta.Read(o.InstallMeta); err == nil {
		daemon.PeerUID = meta.OwnerUID
	}
	var herr, derr error
	for {
		herr = nil
		if !dialable(ctx, o.HelperSocket) {
			herr = errors.New("socket does not accept connections")
		}
		_, derr = daemon.Ping(ctx)
		if herr == nil && derr == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			var parts []string
			if herr != nil {
				parts = append(parts, fmt.Sprintf("%s: %v (journalctl -u %s)", sysunit.HelperUnit, herr, sysunit.HelperUnit))
			}
			if derr != nil {
				parts = append(parts, fmt.Sprintf("%s: %v (journalctl -u %s)", sysunit.DaemonUnit, derr, sysunit.DaemonUnit))
			}
			return errdefs.Unavailable("not answering after %s: %s", o.Wait, strings.Join(parts, "; "))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// installBinaries copies each binary into binDir (write, then rename, so
// a running service keeps its old file) and links the CLI onto PATH.
func installBinaries(src, binDir, link string) error {
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return fmt.Errorf("install binaries: %w", err)
	}
	for _, b := range installedBins {
		from := filepath.Join(src, b)
		data, err := os.ReadFile(from)
		if err != nil {
			return errdefs.Invalid("install binaries: %v (install all banger binaries together)", err)
		}
		if filepath.Clean(src) == filepath.Clean(binDir) {
			continue // registering the binaries in place
		}
		if err := atomicfile.Write(filepath.Join(binDir, b), data, 0o755); err != nil {
			return fmt.Errorf("install binaries: %w", err)
		}
	}
	if link == "-" {
		return nil
	}
	target := filepath.Join(binDir, "banger")
	if cur, err := os.Readlink(link); err == nil && cur == target {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return fmt.Errorf("link banger: %w", err)
	}
	tmp := link + ".banger-new"
	_ = os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("link banger: %w", err)
	}
	if err := os.Rename(tmp, link); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("link banger: %w", err)
	}
	return nil
}

// ensureOwnerDir creates dir (and missing parents below the home) owned
// by the owner.
func ensureOwnerDir(dir string, owner Owner) error {
	rel, err := filepath.Rel(owner.Home, dir)
	if err != nil || strings.HasPrefix(rel, "..") {
		return fmt.Errorf("%s is not inside %s", dir, owner.Home)
	}
	p := owner.Home
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		p = filepath.Join(p, part)
		fi, err := os.Lstat(p)
		switch {
		case err == nil && fi.Mode()&os.ModeSymlink != 0:
			return fmt.Errorf("%s is a symlink: refusing to create the owner's config dir through it", p)
		case err == nil:
			continue
		case !errors.Is(err, os.ErrNotExist):
			return err
		}
		if err := os.Mkdir(p, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", p, err)
		}
		if err := os.Lchown(p, int(owner.UID), int(owner.GID)); err != nil {
			return fmt.Errorf("create %s: %w", p, err)
		}
	}
	return nil
}

// Status describes an install.
type Status struct {
	Meta           installmeta.Meta
	Units          map[string]string // unit -> active state
	HelperVersion  string
	HelperOps      []string
	DaemonVersion  string
	HelperSocket   string
	DaemonSocket   string
	HelperAnswers  bool
	DaemonAnswers  bool
	HelperErr      string
	DaemonErr      string
	UnitsInstalled bool
}

// GetStatus gathers the install's status; it changes nothing.
func GetStatus(ctx context.Context, o InstallOptions) (Status, error) {
	o.setDefaults()
	var st Status
	meta, err := installmeta.Read(o.InstallMeta)
	if err != nil {
		return st, errdefs.NotFound("banger is not installed here (%v): sudo banger system install --owner USER", err)
	}
	st.Meta = meta
	st.Units = map[string]string{}
	for _, u := range []string{sysunit.HelperUnit, sysunit.DaemonUnit} {
		out, _ := o.Systemctl.Run(ctx, "is-active", u)
		st.Units[u] = strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(o.UnitDir, u)); err == nil {
			st.UnitsInstalled = true
		}
	}
	st.HelperSocket = o.HelperSocket
	st.DaemonSocket = filepath.Join(o.RuntimeDir, "bangerd.sock")
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	st.HelperAnswers = dialable(pctx, o.HelperSocket)
	if !st.HelperAnswers {
		st.HelperErr = "socket does not accept connections"
	}
	// The installed helper describes itself: its version and the closed
	// list of operations it serves.
	if out, err := execx.Default.Run(pctx, filepath.Join(o.BinDir, HelperBin), "--describe"); err == nil {
		var d struct {
			Version string   `json:"version"`
			Ops     []string `json:"ops"`
		}
		if json.Unmarshal(out, &d) == nil {
			st.HelperVersion, st.HelperOps = d.Version, d.Ops
		}
	}
	daemon := client.New(st.DaemonSocket, "", "")
	daemon.PeerUID = st.Meta.OwnerUID
	if p, err := daemon.Ping(pctx); err == nil {
		st.DaemonAnswers, st.DaemonVersion = true, p.Version
	} else {
		st.DaemonErr = err.Error()
	}
	return st, nil
}

// Restart restarts both services (helper first) and waits for them.
func Restart(ctx context.Context, o InstallOptions) error {
	o.setDefaults()
	if err := checkRoot(os.Geteuid()); err != nil {
		return err
	}
	for _, u := range []string{sysunit.HelperUnit, sysunit.DaemonUnit} {
		if _, err := o.Systemctl.Run(ctx, "restart", u); err != nil {
			return fmt.Errorf("systemctl restart %s: %w", u, err)
		}
	}
	return o.waitSockets(ctx)
}

// VMs is what uninstall needs of the daemon: the running VMs, and a way
// to stop them.
type VMs interface {
	Running(ctx context.Context) ([]string, error)
	Stop(ctx context.Context, names []string) error
}

// Uninstall stops both services and removes the units, metadata, sockets,
// binaries and system dirs; purge also removes state and cache. Running
// VMs are refused (named) unless force is set, which stops them first. It
// never touches the owner's home.
func Uninstall(ctx context.Context, o InstallOptions, vms VMs, purge, force bool) error {
	o.setDefaults()
	if err := checkRoot(os.Geteuid()); err != nil {
		return err
	}
	say := func(format string, a ...any) { fmt.Fprintf(o.Out, "banger system uninstall: "+format+"\n", a...) }
	if vms != nil {
		running, err := vms.Running(ctx)
		if err != nil {
			return fmt.Errorf("list running VMs (is %s up? start it, or pass --force to stop them anyway): %w", sysunit.DaemonUnit, err)
		}
		if len(running) > 0 && !force {
			return errdefs.Conflict("VMs still running: %s; stop them, or pass --force", strings.Join(running, ", "))
		}
		if len(running) > 0 {
			if err := vms.Stop(ctx, running); err != nil {
				return fmt.Errorf("stop VMs: %w", err)
			}
			say("stopped %s", strings.Join(running, ", "))
		}
	}
	// bangerd first: with no VM left it takes the bridge, taps and
	// firewall down through the helper as it stops.
	for _, args := range [][]string{
		{"disable", "--now", sysunit.DaemonUnit},
		{"disable", "--now", sysunit.HelperUnit},
	} {
		if _, err := o.Systemctl.Run(ctx, args...); err != nil {
			say("systemctl %s: %v (continuing)", strings.Join(args, " "), err)
		}
	}
	removed := []string{
		filepath.Join(o.UnitDir, sysunit.DaemonUnit), filepath.Join(o.UnitDir, sysunit.HelperUnit),
		o.InstallMeta, o.RuntimeDir, filepath.Dir(o.HelperSocket), o.BinDir,
	}
	if o.LinkPath != "-" {
		if cur, err := os.Readlink(o.LinkPath); err == nil && cur == filepath.Join(o.BinDir, "banger") {
			removed = append(removed, o.LinkPath)
		}
	}
	if purge {
		removed = append(removed, o.StateDir, o.CacheDir, o.HelperStateDir)
	}
	var errs []error
	for _, p := range removed {
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := o.Systemctl.Run(ctx, "daemon-reload"); err != nil {
		errs = append(errs, fmt.Errorf("systemctl daemon-reload: %w", err))
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	say("removed units, metadata, sockets and binaries%s", map[bool]string{true: ", state and cache", false: ""}[purge])
	return nil
}

// SystemLayout is bangerd's layout under systemd for the owner: state,
// cache and runtime in the system dirs, configuration in the home.
func SystemLayout(home string) paths.Layout {
	return paths.New(filepath.Join(home, ".config", "banger"), sysunit.StateDir, sysunit.CacheDir, sysunit.RuntimeDir)
}
