package cli

import (
	"os"
	"strings"
	"testing"

	"banger/internal/installmeta"
	"banger/internal/paths"
	"banger/internal/sysrun"
)

// The CLI auto-starts bangerd only where no system runs one for this uid
// on the socket it dials; otherwise it says what runs banger and how to
// get it back.
func TestChooseDaemonNeverAutoStartsUnderASystem(t *testing.T) {
	const uid, bin, meta = 1000, "/opt/banger/bin/bangerd", "/etc/banger/install.toml"
	home, rt := "/home/dev", "/run/user/1000"
	sysRunLayout := paths.ForUser(home, uid, map[string]string{"XDG_RUNTIME_DIR": rt})
	private := paths.ForUser(home, uid, map[string]string{"XDG_RUNTIME_DIR": "/tmp/t/run", "XDG_STATE_HOME": "/tmp/t/state"})
	runMeta := installmeta.Meta{OwnerUser: "dev", OwnerUID: uid, OwnerGID: uid, OwnerHome: home}
	systemdMeta := runMeta
	systemdMeta.Mode = installmeta.ModeSystemd
	tests := []struct {
		name       string
		m          installmeta.Meta
		metaErr    error
		own        paths.Layout
		wantSocket string
		wantStart  bool
		wantHint   string
	}{
		{name: "no install", metaErr: os.ErrNotExist, own: sysRunLayout, wantSocket: sysRunLayout.SocketPath, wantStart: true},
		{name: "another owner's system run", m: installmeta.Meta{OwnerUser: "x", OwnerUID: uid + 1, OwnerHome: "/home/x"}, own: sysRunLayout, wantSocket: sysRunLayout.SocketPath, wantStart: true},
		{name: "system run, its socket", m: runMeta, own: sysRunLayout, wantSocket: sysRunLayout.SocketPath, wantHint: "'sudo banger system run --owner dev'"},
		{name: "system run, a private layout", m: runMeta, own: private, wantSocket: private.SocketPath, wantStart: true},
		{name: "systemd install", m: systemdMeta, own: private, wantSocket: sysrun.SystemLayout(home).SocketPath, wantHint: "systemctl status bangerd"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := chooseDaemon(tc.m, tc.metaErr, uid, tc.own, bin, meta, rt)
			if got.layout.SocketPath != tc.wantSocket {
				t.Errorf("socket %s, want %s", got.layout.SocketPath, tc.wantSocket)
			}
			if started := got.bangerd != ""; started != tc.wantStart {
				t.Errorf("auto-start %v (bangerd %q), want %v", started, got.bangerd, tc.wantStart)
			}
			if tc.wantStart != (got.hint == "") || !strings.Contains(got.hint, tc.wantHint) {
				t.Errorf("hint %q, want one with %q", got.hint, tc.wantHint)
			}
		})
	}
}
