// Command banger-helper is banger's root helper: it runs as root, listens
// on a unix socket in a root-owned directory and performs the closed list
// of typed privileged ops in internal/privop (bridge, taps, tap fds,
// firewall, host DNS routing of .vm, Debian image builds with debootstrap)
// for root and the owner registered in the install metadata. With --netns, host DNS routing is off: it would
// act on the host's namespace, not the one banger's bridge lives in.
//
//	banger-helper [--socket PATH] [--install-meta PATH] [--state-dir DIR] [--netns PATH]
//
// It refuses to start unless its effective uid is 0. It logs to stderr
// (slog text) and stops on SIGTERM or SIGINT once the requests in progress
// are answered.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"banger/internal/dmsnap"
	"banger/internal/helper"
	"banger/internal/image"
	"banger/internal/installmeta"
	"banger/internal/netdev"
	"banger/internal/privop"
	"banger/internal/resolved"
	"banger/internal/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "banger-helper:", err)
		os.Exit(1)
	}
}

// run serves until ctx is done.
func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("banger-helper", flag.ContinueOnError)
	socket := fs.String("socket", helper.DefaultSocket, "unix socket to serve on (its directory is made root-owned 0711)")
	metaPath := fs.String("install-meta", installmeta.DefaultPath, "install metadata naming the owner")
	stateDir := fs.String("state-dir", helper.DefaultStateDir, "root-owned directory for the helper's ledger and image builds")
	netnsPath := fs.String("netns", "", "run every network op inside this network namespace (e.g. /run/netns/NAME)")
	jailBase := fs.String("jail-base", "", "root-owned directory for Firecracker jails, on a filesystem that allows device nodes (default: STATE-DIR/jail)")
	debug := fs.Bool("debug", false, "log debug messages")
	describe := fs.Bool("describe", false, "print this helper's version and operation allow-list as JSON, and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *describe {
		return json.NewEncoder(os.Stdout).Encode(helper.Description{Version: version.Version, Ops: privop.HelperOps()})
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if os.Geteuid() != 0 {
		return errors.New("must run as root (euid 0); start it with sudo or as a system service")
	}
	syscall.Umask(0o077)

	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	meta, err := installmeta.ReadTrusted(*metaPath)
	if err != nil {
		return err
	}
	if err := helper.PrepareStateDir(*stateDir); err != nil {
		return err
	}
	ledger, err := helper.OpenLedger(*stateDir)
	if err != nil {
		return err
	}

	host := netdev.New()
	if *netnsPath != "" {
		if host, err = netdev.NewInNetns(*netnsPath); err != nil {
			return err
		}
	}
	defer host.Close()

	fcBin, jailerBin := meta.Firecracker()
	cfg := helper.Config{
		Net: host, Ledger: ledger, OwnerUID: meta.OwnerUID, OwnerGID: meta.OwnerGID,
		FirecrackerBin: fcBin, JailerBin: jailerBin, VMMUIDBase: meta.VMMUIDs(), Subnet: meta.BridgeSubnet(),
		Version: version.Version, Log: log,
		StateDir: *stateDir, Images: image.Debootstrapper{}, JailBase: *jailBase,
	}
	if err := dmsnap.Probe(); err != nil {
		cfg.SnapshotsOff = err.Error()
	} else {
		m, err := dmsnap.Open(dmsnap.Config{StateDir: *stateDir, Backend: dmsnap.NewIoctlBackend()})
		if err != nil {
			return err
		}
		defer m.Close()
		cfg.Snapshots = m
	}
	if *netnsPath != "" {
		// systemd-resolved serves the host's namespace; a bridge of the
		// same name there would be someone else's.
		cfg.Resolver = resolved.Disabled{Reason: "the helper runs banger's network in " + *netnsPath +
			"; host DNS routing through systemd-resolved applies only to the host namespace; see docs/dns.md"}
	}
	srv, err := helper.NewServer(cfg)
	if err != nil {
		return err
	}
	ln, err := helper.Listen(*socket, meta.OwnerGID)
	if err != nil {
		return err
	}
	bridges, taps := ledger.Names()
	log.Info("banger-helper serving", "socket", *socket, "owner", meta.OwnerUser, "owner_uid", meta.OwnerUID,
		"version", version.Version, "bridges", bridges, "taps", taps, "netns", *netnsPath,
		"snapshots", cfg.Snapshots != nil, "snapshots_off", cfg.SnapshotsOff,
		"firecracker", fcBin, "jailer", jailerBin, "vmm_uids", cfg.VMMUIDBase, "subnet", cfg.Subnet)
	// Connections queue on the listener from here, so bangerd may start.
	if err := notifyReady(); err != nil {
		log.Warn("tell systemd the helper is ready", "err", err)
	}
	err = srv.Serve(ctx, ln)
	log.Info("banger-helper stopped")
	return err
}
