package cli

import (
	"banger/internal/installmeta"
	"banger/internal/paths"
	"banger/internal/sysrun"
)

// daemonTarget is the bangerd the CLI talks to: the layout whose socket it
// dials, the binary it may auto-start ("" for none) and a hint for when
// nothing answers.
type daemonTarget struct {
	layout  paths.Layout
	bangerd string
	hint    string
}

// chooseDaemon applies the install metadata (m, or metaErr when there is
// none) to the caller's own layout. Where banger runs as a system for this
// uid, the CLI never starts a bangerd of its own on the system's socket:
// one would run without the root helper (no guest networking) and hold
// the owner's lock against the supervised one. A layout of its own (other
// XDG directories, as tests use) is a private bangerd and may still be
// started. runtimeDir is the owner's /run/user dir as system run finds it.
func chooseDaemon(m installmeta.Meta, metaErr error, uid int, own paths.Layout, bangerd, metaPath, runtimeDir string) daemonTarget {
	t := daemonTarget{layout: own, bangerd: bangerd}
	if metaErr != nil || m.OwnerUID != uid {
		return t
	}
	switch m.Mode {
	case installmeta.ModeSystemd:
		// bangerd.service keeps its state in the system directories,
		// whatever this shell's XDG variables say.
		t.layout, t.bangerd = sysrun.SystemLayout(m.OwnerHome), ""
		t.hint = "; banger runs as a system service here (bangerd.service): check 'banger system status' and 'systemctl status bangerd', and start it with 'sudo systemctl start bangerd.service'"
	case "":
		owner := sysrun.Owner{User: m.OwnerUser, UID: uint32(uid), GID: uint32(m.OwnerGID), Home: m.OwnerHome}
		sys := paths.ForUser(m.OwnerHome, uid, sysrun.OwnerEnv(owner, "", runtimeDir, ""))
		if own.SocketPath != sys.SocketPath {
			return t
		}
		t.bangerd = ""
		t.hint = "; banger runs under 'banger system run' here (" + metaPath + " names you as its owner), which keeps bangerd running and restarts it: check that the supervisor still runs, or start it again with 'sudo banger system run --owner " + m.OwnerUser + "'. Starting a bangerd from here would leave it without the root helper"
	}
	return t
}
