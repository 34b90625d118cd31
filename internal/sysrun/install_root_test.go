package sysrun_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"banger/internal/installmeta"
	"banger/internal/netdev"
	"banger/internal/sysrun"
	"banger/internal/sysunit"
	"banger/internal/testutil"
)

// fakeSystemctl keeps the units' enabled and active state and the
// commands it was given, one line each.
type fakeSystemctl struct {
	log     []string
	enabled map[string]bool
	active  map[string]bool
}

func newFakeSystemctl() *fakeSystemctl {
	return &fakeSystemctl{enabled: map[string]bool{}, active: map[string]bool{}}
}

func (f *fakeSystemctl) Run(_ context.Context, args ...string) ([]byte, error) {
	f.log = append(f.log, strings.Join(args, " "))
	switch args[0] {
	case "enable":
		for _, u := range args[1:] {
			f.enabled[u] = true
		}
	case "restart", "start":
		for _, u := range args[1:] {
			f.active[u] = true
		}
	case "disable":
		for _, u := range args[1:] {
			if u != "--now" {
				f.enabled[u], f.active[u] = false, false
			}
		}
	case "is-active":
		if f.active[args[1]] {
			return []byte("active\n"), nil
		}
		return []byte("inactive\n"), errors.New("exit status 3")
	}
	return nil, nil
}

type fakeVMs struct {
	running []string
	stopped []string
}

func (f *fakeVMs) Running(context.Context) ([]string, error) { return f.running, nil }
func (f *fakeVMs) Stop(_ context.Context, names []string) error {
	f.stopped = append(f.stopped, names...)
	f.running = nil
	return nil
}

// TestInstallIsIdempotentAndUninstallLeavesHome installs into temporary
// system directories with a stateful fake systemctl, twice, then
// uninstalls: units, metadata, binaries and link appear exactly once and
// go again; running VMs are refused without --force; the owner's home is
// never touched.
func TestInstallIsIdempotentAndUninstallLeavesHome(t *testing.T) {
	testutil.RequireRoot(t)
	base := t.TempDir()
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(base, "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	owner := ensureOwner(t, home)
	if err := os.Chown(home, int(owner.UID), int(owner.GID)); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(base, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"banger", "bangerd", "banger-helper", "banger-agent"} {
		if err := os.WriteFile(filepath.Join(src, b), []byte("#!/bin/true\n"+b+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sc := newFakeSystemctl()
	o := sysrun.InstallOptions{
		Owner: testOwner, SrcDir: src, BinDir: filepath.Join(base, "lib", "banger"), LinkPath: filepath.Join(base, "bin", "banger"),
		UnitDir: filepath.Join(base, "units"), InstallMeta: filepath.Join(base, "etc", "install.toml"),
		HelperSocket: filepath.Join(base, "run", "banger-root", "helper.sock"), HelperStateDir: filepath.Join(base, "lib", "banger-root"),
		StateDir: filepath.Join(base, "state"), CacheDir: filepath.Join(base, "cache"), RuntimeDir: filepath.Join(base, "run", "banger"),
		Systemctl: sc, Ready: func(context.Context) error { return nil },
		Pins: sysrun.Pins{Subnet: "10.213.7.0/24"},
	}
	// A subnet the host already uses is refused before anything is
	// written.
	taken := o
	taken.Pins.Subnet = "10.213.0.0/16"
	taken.HostPrefixes = func(context.Context) ([]netdev.HostPrefix, error) {
		return []netdev.HostPrefix{{Prefix: netip.MustParsePrefix("10.213.9.1/24"), Dev: "lan0"}}, nil
	}
	if err := sysrun.Install(context.Background(), taken); err == nil || !strings.Contains(err.Error(), "address 10.213.9.1/24 on lan0") {
		t.Fatalf("install over a host address: %v", err)
	}
	if _, err := os.Stat(o.InstallMeta); !os.IsNotExist(err) {
		t.Fatalf("a refused install wrote the metadata: %v", err)
	}
	for i := 0; i < 2; i++ {
		if err := sysrun.Install(context.Background(), o); err != nil {
			t.Fatalf("install %d: %v", i+1, err)
		}
	}
	spec := o.UnitSpec(owner)
	for name, want := range map[string]string{sysunit.DaemonUnit: sysunit.Daemon(spec), sysunit.HelperUnit: sysunit.Helper(spec)} {
		got, err := os.ReadFile(filepath.Join(o.UnitDir, name))
		if err != nil || string(got) != want {
			t.Errorf("unit %s: %v\n%s", name, err, got)
		}
	}
	if ents, _ := os.ReadDir(o.UnitDir); len(ents) != 2 {
		t.Errorf("unit dir holds %d entries after two installs, want 2", len(ents))
	}
	if got, _ := os.ReadFile(filepath.Join(o.BinDir, "bangerd")); !strings.Contains(string(got), "bangerd") {
		t.Errorf("bangerd not installed: %q", got)
	}
	if target, err := os.Readlink(o.LinkPath); err != nil || target != filepath.Join(o.BinDir, "banger") {
		t.Errorf("link %s -> %q, %v", o.LinkPath, target, err)
	}
	meta, err := installmeta.Read(o.InstallMeta)
	if err != nil || meta.Mode != installmeta.ModeSystemd || meta.OwnerUID != int(owner.UID) || meta.Subnet != "10.213.7.0/24" {
		t.Fatalf("metadata %+v, %v", meta, err)
	}
	if fi, err := os.Stat(filepath.Join(home, ".config", "banger")); err != nil || !fi.IsDir() {
		t.Errorf("owner config dir not created: %v", err)
	}
	wantLog := []string{
		"daemon-reload", "enable bangerd-root.service bangerd.service", "restart bangerd-root.service", "restart bangerd.service",
	}
	if got := sc.log; !slices.Equal(got, append(slices.Clone(wantLog), wantLog...)) {
		t.Errorf("systemctl calls:\n%s", strings.Join(got, "\n"))
	}
	st, err := sysrun.GetStatus(context.Background(), o)
	if err != nil || st.Units[sysunit.DaemonUnit] != "active" || st.Meta.OwnerUser != testOwner {
		t.Errorf("status %+v, %v", st, err)
	}

	// The owner's own files and running VMs.
	keep := filepath.Join(home, ".config", "banger", "config.toml")
	if err := os.WriteFile(keep, []byte("vmm = \"qemu\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{o.StateDir, o.CacheDir, o.RuntimeDir, o.HelperStateDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	vms := &fakeVMs{running: []string{"dev", "web"}}
	err = sysrun.Uninstall(context.Background(), o, vms, true, false)
	if err == nil || !strings.Contains(err.Error(), "dev, web") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("uninstall with running VMs: %v", err)
	}
	if _, err := os.Stat(o.InstallMeta); err != nil {
		t.Fatalf("a refused uninstall removed the metadata: %v", err)
	}
	if err := sysrun.Uninstall(context.Background(), o, vms, true, true); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(vms.stopped, []string{"dev", "web"}) {
		t.Errorf("stopped %v", vms.stopped)
	}
	for _, p := range []string{o.InstallMeta, o.BinDir, o.LinkPath, o.StateDir, o.CacheDir, o.RuntimeDir, o.HelperStateDir,
		filepath.Join(o.UnitDir, sysunit.DaemonUnit), filepath.Join(o.UnitDir, sysunit.HelperUnit)} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s left after uninstall --purge (%v)", p, err)
		}
	}
	if got, err := os.ReadFile(keep); err != nil || string(got) != "vmm = \"qemu\"\n" {
		t.Errorf("uninstall touched the owner's home: %q, %v", got, err)
	}
	if sc.enabled[sysunit.DaemonUnit] || sc.active[sysunit.HelperUnit] {
		t.Errorf("units still enabled/active: %v %v", sc.enabled, sc.active)
	}
}
